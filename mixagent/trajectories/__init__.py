"""Trajectory collection and the trajectory store.

* :mod:`mixagent.trajectories.store`: the on-disk run format (``Run``, ``read_trajectory``, ``RunWriter``).
* :mod:`mixagent.trajectories.tree`: branching collection trees (``TreeRunner``).
* :mod:`mixagent.trajectories.launchers`: inline, local process pool and Ray launchers.
* :mod:`mixagent.trajectories.collect`: the collect job (``CollectConfig``, ``collect``).

CLI: ``python -m mixagent.trajectories collect|ls|stats|verify``.
"""

from mixagent.trajectories.store import SCHEMA_VERSION, Run, Trajectory, list_runs, read_trajectory

__all__ = ["SCHEMA_VERSION", "Run", "Trajectory", "list_runs", "read_trajectory"]
