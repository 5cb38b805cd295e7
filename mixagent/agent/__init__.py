"""The offline agent: trajectories -> d3rlpy dataset -> BC ("SFT") -> CQL ("RL") -> policy artifacts,
with offline (FQE) and online evaluation. d3rlpy is imported only here (names load lazily).

* ``config``: :class:`AgentConfig` and its sections; ``dataset``: trajectories -> transitions -> d3rlpy;
  ``algos``: the d3rlpy side; ``train``: :func:`train_agent` (stages, checkpoints, FQE; model-based stage 2
  is handed a world model by :mod:`mixagent.model_based`); ``evaluate``: rollouts of the agent and the
  baselines on held-out seeds; ``train_per_domain``: behaviour cloning of the per-domain policy
  (:mod:`mixagent.policies.per_domain`, plain torch).

CLI: ``mixagent train-agent --config configs/agent/<name>.yaml [key=value ...] [--resume]``
(``python -m mixagent.train_agent`` and ``python -m mixagent.agent train`` are the same command).
"""

from __future__ import annotations

from mixagent._lazy import lazy_exports

__all__ = ["AgentConfig", "train_agent", "AgentResult", "load_trajectories", "build_transitions",
           "evaluate_online"]

__getattr__, __dir__ = lazy_exports(__name__, {
    "AgentConfig": "config", "train_agent": "train", "AgentResult": "train", "load_trajectories": "dataset",
    "build_transitions": "dataset", "evaluate_online": "evaluate"})
