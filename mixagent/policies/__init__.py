"""Mixing policies: the :class:`MixingPolicy` protocol, the baselines (and the one baseline-spec parser),
the seeded behaviour policies of collection, and the policy artifact format with its loader (plain torch,
no d3rlpy). Names load lazily.

* ``protocol``: :class:`MixingPolicy`; ``baselines``: uniform, natural, fixed, replay, target-only,
  :func:`parse_baseline`; ``behaviour``: Dirichlet, random-walk, piecewise replay and epsilon behaviours;
  ``heuristics``: switch at the LR decay, upsample at the end; ``online``: DoReMi, ODM, ADO, Velocitune,
  Aioli; ``regmix``: RegMix's regression; ``registry``: spec -> policy for all of them
  (:func:`policy_from_spec`); ``artifact``: ``policy.safetensors`` + ``meta.json``, :func:`load_policy`;
  ``guard``: the out-of-distribution guard of a learned policy (the deploy scheduler's); ``guarded``: a learned
  policy behind it, as one policy (``guarded:agent=DIR,ood=MODE``, what a comparison scores as deployed).
"""

from __future__ import annotations

from mixagent._lazy import lazy_exports

__all__ = ["MixingPolicy", "UniformPolicy", "NaturalPolicy", "FixedPolicy", "ReplayPolicy", "POLICIES",
           "make_policy", "policy_from_spec", "BASELINE_SPECS", "BaselineSpec", "parse_baseline",
           "baseline_problems", "BehaviourSpec", "BehaviourMix", "BEHAVIOURS", "AgentPolicy", "load_policy",
           "write_artifact", "random_artifact", "ArtifactMismatchError", "DecaySwitchPolicy", "EndUpsamplePolicy",
           "DoReMiPolicy", "ODMPolicy", "ADOPolicy", "VelocitunePolicy", "AioliPolicy", "ReferenceCurve",
           "ObservationView", "PolicyContext", "METHODS", "METHOD_SPECS", "build_policy", "method_problems",
           "fit_regmix", "RegMixFit", "sample_mixtures", "OODConfig", "OODGuard", "GuardedPolicy"]

__getattr__, __dir__ = lazy_exports(__name__, {
    "MixingPolicy": "protocol", **{n: "baselines" for n in (
        "UniformPolicy", "NaturalPolicy", "FixedPolicy", "ReplayPolicy", "POLICIES", "make_policy",
        "BASELINE_SPECS", "BaselineSpec", "parse_baseline", "baseline_problems")},
    "BehaviourSpec": "behaviour", "BehaviourMix": "behaviour", "BEHAVIOURS": "behaviour",
    **{n: "artifact" for n in ("AgentPolicy", "load_policy", "write_artifact", "random_artifact",
                               "ArtifactMismatchError")},
    "DecaySwitchPolicy": "heuristics", "EndUpsamplePolicy": "heuristics",
    **{n: "methods" for n in ("DoReMiPolicy", "ODMPolicy", "ADOPolicy", "VelocitunePolicy", "AioliPolicy",
                             "ReferenceCurve", "ObservationView")},
    **{n: "registry" for n in ("PolicyContext", "METHODS", "METHOD_SPECS", "build_policy", "method_problems",
                               "policy_from_spec")},
    **{n: "regmix" for n in ("fit_regmix", "RegMixFit", "sample_mixtures")},
    "OODConfig": "guard", "OODGuard": "guard", "GuardedPolicy": "guarded"})
