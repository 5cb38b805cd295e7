"""Model-based research on top of the agent: a world model of the mixing environment (an ensemble over
(observation, mixture) -> next evaluation deltas), the surrogate env it serves behind the Gymnasium contract,
synthetic transitions and online RL in the surrogate for the agent's stage 2 (MOPO / MBPO-style), a
model-predictive planner, and the variants study that scores every agent variant in the real env.
Verdicts come only from the real env. Names load lazily.

* ``world_model``: the ensemble, its artifact; ``surrogate``: the surrogate env; ``synthetic``: stage-2
  data for :func:`mixagent.agent.train_agent` (:func:`world_model_data`); ``planning``: the MPC planner;
  ``job``: ``mixagent world-model``; ``variants``: ``mixagent variants``.
"""

from __future__ import annotations

from mixagent._lazy import lazy_exports

__all__ = ["WorldModel", "load_world_model", "make_surrogate_env", "WorldModelData", "world_model_data",
           "WorldModelPlanner", "evaluate_planner", "WorldModelJobConfig", "run_world_model_job", "VariantsConfig",
           "run_variants"]

__getattr__, __dir__ = lazy_exports(__name__, {
    "WorldModel": "world_model", "load_world_model": "world_model", "make_surrogate_env": "surrogate",
    "WorldModelData": "synthetic", "world_model_data": "synthetic", "WorldModelPlanner": "planning",
    "evaluate_planner": "planning", "WorldModelJobConfig": "job", "run_world_model_job": "job",
    "VariantsConfig": "variants", "run_variants": "variants"})
