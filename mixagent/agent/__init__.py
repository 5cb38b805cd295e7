"""The offline agent: trajectories -> d3rlpy dataset -> BC ("SFT") -> CQL ("RL") -> policy artifacts,
with offline (FQE) and online evaluation. d3rlpy is imported only here (names load lazily).

* ``config``: :class:`AgentConfig` and its sections; ``dataset``: trajectories -> transitions -> d3rlpy;
  ``algos``: the d3rlpy side; ``train``: :func:`train_agent` (stages, checkpoints, FQE); ``online``:
  rollouts of the agent and the baselines on held-out seeds.

CLI: ``python -m mixagent.agent train --config configs/agent/<name>.yaml [key=value ...] [--resume]``
(``python -m mixagent.train_agent`` is the same command).
"""

from __future__ import annotations

from mixagent._lazy import lazy_exports

__all__ = ["AgentConfig", "train_agent", "AgentResult", "load_trajectories", "build_transitions",
           "evaluate_online"]

__getattr__, __dir__ = lazy_exports(__name__, {
    "AgentConfig": "config", "train_agent": "train", "AgentResult": "train", "load_trajectories": "dataset",
    "build_transitions": "dataset", "evaluate_online": "evaluate"})
