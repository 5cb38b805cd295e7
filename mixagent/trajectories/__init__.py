"""Trajectory collection and the trajectory store (names imported lazily).

* :mod:`mixagent.trajectories.store`: the on-disk run format (``Run``, ``read_trajectory``, ``RunWriter``).
* :mod:`mixagent.rollout.tree`: branching collection trees (``CollectionTree``, run by the one runner) and
  their typed events.
* :mod:`mixagent.trajectories.collector`: the collect job (``CollectConfig``, ``collect``); it runs on the
  launchers of :mod:`mixagent.rollout.launchers`.

CLI: ``mixagent collect``, ``mixagent trajectories ls|stats|verify|pack``.
"""

from __future__ import annotations

from mixagent._lazy import lazy_exports

__all__ = ["SCHEMA_VERSION", "Run", "Trajectory", "list_runs", "read_trajectory", "RunWriter", "collect",
           "CollectConfig", "CollectSummary", "TreeConfig"]

__getattr__, __dir__ = lazy_exports(__name__, {
    "SCHEMA_VERSION": "store", "Run": "store", "Trajectory": "store", "list_runs": "store",
    "read_trajectory": "store", "RunWriter": "store", "collect": "collector", "CollectConfig": "collector",
    "CollectSummary": "collector", "TreeConfig": "collector"})
