"""The mixing environment: a proxy LM continually pre-trained on the mixture an agent picks, scored by an
evaluation environment after every segment. Names load lazily (``import mixagent.env`` needs no torch).

* ``spec``: :class:`EnvSpec` (``envs/*.yaml``) and :func:`load_spec`; ``environment``: :class:`MixingEnv`.
* ``model``: Llama-style proxies from config; ``base_model``: the cached source-field base checkpoint
  (``mixagent base-model``); ``proxy``: the LR schedule and the training-segment loop.
* ``evaluation``: :class:`EvalResult`, bits per byte and benchmarks; ``observation``: the shared
  :class:`ObservationBuilder`; ``rewards``: named reward functions; ``backends``: the real LM and an
  analytic stand-in behind the ``ProxyBackend`` protocol.
"""

from __future__ import annotations

from mixagent._lazy import lazy_exports

__all__ = ["MixingEnv", "EnvSpec", "load_spec", "EvalResult", "EvalSpec", "Evaluator", "ObservationBuilder",
           "OBSERVATION_VERSION", "REWARDS", "balanced_score", "BaseModelConfig", "get_base_model",
           "AnalyticBackend", "LMBackend"]

__getattr__, __dir__ = lazy_exports(__name__, {
    "MixingEnv": "environment", "EnvSpec": "spec", "load_spec": "spec", "EvalResult": "evaluation",
    "EvalSpec": "evaluation", "Evaluator": "evaluation", "ObservationBuilder": "observation",
    "OBSERVATION_VERSION": "observation", "REWARDS": "rewards", "balanced_score": "rewards",
    "BaseModelConfig": "base_model", "get_base_model": "base_model", "AnalyticBackend": "backends",
    "LMBackend": "backends"})
