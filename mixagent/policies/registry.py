"""The one registry of named mixing methods: spec string -> policy, for the comparison, the agent's online
evaluation and deployment alike.

Specs: the constant baselines (``uniform``, ``natural``, ``target_only``, ``replay:<rho>``), the schedule
heuristics (``decay_switch``, ``end_upsample``), the online methods (``doremi``, ``odm``, ``ado``,
``velocitune``, ``aioli``) and ``regmix`` (the fitted mixture). ``doremi`` and ``velocitune`` need a
reference run, ``regmix`` its fitted mixture: :class:`PolicyContext` carries them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

from mixagent.errors import ConfigError, suggest
from mixagent.policies.baselines import BASELINE_SPECS, FixedPolicy, baseline_problems, parse_baseline
from mixagent.policies.protocol import MixingPolicy

__all__ = ["PolicyContext", "METHODS", "METHOD_SPECS", "build_policy", "method_problems", "NEEDS_REFERENCE",
           "policy_from_spec", "policy_fingerprint", "RULES_VERSION"]

RULES_VERSION = 1  # bump when a method's update rule or default changes: cached episodes then rerun


@dataclasses.dataclass(frozen=True)
class PolicyContext:
    """What some methods need beyond the space.

    Args:
        natural: ``{domain: natural token share}``.
        reference: a :class:`~mixagent.policies.methods.ReferenceCurve` (DoReMi, Velocitune).
        regmix: ``{domain: weight}``, RegMix's fitted mixture.
        batches_per_step: optimizer batches per re-weighting step (ODM counts its updates in batches).
    """

    natural: Mapping[str, float] | None = None
    reference: object | None = None
    regmix: Mapping[str, float] | None = None
    batches_per_step: int = 1


def _regmix(ctx: PolicyContext) -> MixingPolicy:
    if ctx.regmix is None:
        raise ConfigError("regmix", ["RegMix's mixture is not fitted: run it through `mixagent compare`"
                                     " (which makes its proxy runs and fits it)"])
    return FixedPolicy(ctx.regmix)


def _methods() -> dict[str, Callable[[PolicyContext], MixingPolicy]]:
    from mixagent.policies.heuristics import DecaySwitchPolicy, EndUpsamplePolicy
    from mixagent.policies.methods import ADOPolicy, AioliPolicy, DoReMiPolicy, ODMPolicy, VelocitunePolicy

    return {
        "decay_switch": lambda ctx: DecaySwitchPolicy(ctx.natural),
        "end_upsample": lambda ctx: EndUpsamplePolicy(ctx.natural),
        "doremi": lambda ctx: DoReMiPolicy(ctx.reference),  # type: ignore[arg-type]
        "odm": lambda ctx: ODMPolicy(batches_per_step=ctx.batches_per_step),
        "ado": lambda ctx: ADOPolicy(ctx.natural),
        "velocitune": lambda ctx: VelocitunePolicy(ctx.natural, ctx.reference),  # type: ignore[arg-type]
        "aioli": lambda ctx: AioliPolicy(ctx.natural),
        "regmix": _regmix,
    }


METHODS = ("decay_switch", "end_upsample", "doremi", "odm", "ado", "velocitune", "aioli", "regmix")
METHOD_SPECS = (*BASELINE_SPECS, *METHODS)
NEEDS_REFERENCE = ("doremi", "velocitune")


def method_problems(spec: str) -> list[str]:
    """What is wrong with a method spec (empty when it names a registered method or baseline)."""
    if spec in METHODS:
        return []
    problems = baseline_problems(spec)
    if problems and not spec.startswith("replay"):
        return [f"unknown policy {spec!r}{suggest(spec.partition(':')[0], METHOD_SPECS)}; known: "
                f"{', '.join(METHOD_SPECS)} or a policy artifact directory"]
    return problems


def build_policy(spec: str, ctx: PolicyContext) -> MixingPolicy:
    """The policy named by ``spec``.

    Raises:
        ConfigError: an unknown name (with a suggestion), a bad ``replay`` share, or what the method
            needs missing from ``ctx`` (natural shares, a reference run, RegMix's fit).
    """
    baseline = parse_baseline(spec)
    if baseline is not None:
        return baseline.build(ctx.natural)
    if spec not in METHODS:
        raise ConfigError("policy", method_problems(spec))
    return _methods()[spec](ctx)


def policy_from_spec(spec: str, natural: Mapping[str, float] | None = None) -> MixingPolicy:
    """A policy from a short spec: ``uniform``, ``natural``, ``target_only``, ``replay:<rho>`` (natural
    shares within each field), a registered method that needs nothing but the natural shares
    (``mixagent.policies.registry``: ``decay_switch``, ``end_upsample``, ``odm``, ``ado``, ``aioli``; those
    that need a reference run or a fit raise) or the directory of a trained policy artifact.

    Args:
        spec: the spec string.
        natural: ``{domain: token share}``, needed by ``natural``, ``target_only`` and ``replay``.

    Raises:
        ConfigError: an unknown spec (with a suggestion), a bad ``rho``, or missing natural shares.
        CorruptArtifactError, SchemaVersionError: an artifact directory that does not load.
    """
    from pathlib import Path

    baseline = parse_baseline(spec)
    if baseline is not None:
        return baseline.build(natural)
    if spec in METHODS:
        return build_policy(spec, PolicyContext(natural=natural))
    if Path(spec).is_dir():
        from mixagent.policies.artifact import load_policy

        return load_policy(spec)
    raise ConfigError("policy", [f"unknown policy {spec!r}{suggest(spec.partition(':')[0], METHOD_SPECS)}: give "
                                 f"one of {', '.join(METHOD_SPECS)} or a policy artifact directory "
                                 f"(runs/agent/<name>/rl)"])


def _plain(value: object) -> object:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in sorted(value.items())}
    if hasattr(value, "to_json"):
        return _plain(value.to_json())
    return None


def policy_fingerprint(policy: MixingPolicy) -> dict:
    """What defines a built policy's behaviour, as JSON: its class, its public constructor state (numbers,
    strings, shares, a reference curve) and :data:`RULES_VERSION`. The comparison keys cached episodes by
    its digest, so changing a default or a rule reruns the episodes instead of reusing stale ones."""
    state = {k: _plain(v) for k, v in sorted(vars(policy).items()) if not k.startswith("_")}
    return {"class": type(policy).__name__, "rules": RULES_VERSION, "state": state}
