"""The one registry of named mixing methods: spec string -> policy, for the comparison, the agent's online
evaluation and deployment alike.

Specs: the constant baselines (``uniform``, ``natural``, ``target_only``, ``replay:<rho>``), the schedule
heuristics (``decay_switch``, ``end_upsample``, the fixed ``two_phase`` schedule), the online methods
(``doremi``, ``odm``, ``ado``, ``velocitune``, ``aioli``), ``regmix`` (the fitted mixture) and ``probe_commit``
(one probe segment, then the rule a regression fitted on training settings picks). ``doremi`` and
``velocitune`` need a reference run, ``regmix`` its fitted mixture, ``probe_commit`` the run's stated setting:
:class:`PolicyContext` carries them.

A method's hyperparameters ride in its spec: ``<name>:<key>=<value>[,<key>=<value>]`` (``doremi:eta=0.1``,
``end_upsample:end_rho=0.25``), any keyword of the method's constructor that the context does not supply
(:func:`tunable` lists them); that is how the comparison gives every method the same tuning search.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping

from mixagent.errors import ConfigError, suggest
from mixagent.policies.baselines import BASELINE_SPECS, FixedPolicy, baseline_problems, parse_baseline
from mixagent.policies.protocol import MixingPolicy

__all__ = ["PolicyContext", "METHODS", "METHOD_SPECS", "build_policy", "method_problems", "NEEDS_REFERENCE",
           "policy_from_spec", "policy_fingerprint", "RULES_VERSION", "parse_method", "method_spec", "is_method",
           "tunable", "PROBING", "RULES", "rules_version", "FITTED_PARAMS", "split_policies"]

# bump a method's entry when its update rule or a default changes: its cached episodes then rerun.
# 2: DoReMi per optimizer batch against the reference's end, Velocitune's targets at the full budget, Aioli's
# probes (2026-12-06).
RULES = {"doremi": 2, "velocitune": 2, "aioli": 2}
RULES_VERSION = 1  # every other method


@dataclasses.dataclass(frozen=True)
class PolicyContext:
    """What some methods need beyond the space.

    Args:
        natural: ``{domain: natural token share}``.
        reference: a :class:`~mixagent.policies.methods.ReferenceCurve` (DoReMi, Velocitune).
        regmix: ``{domain: weight}``, RegMix's fitted mixture.
        batches_per_step: optimizer batches per re-weighting step (ODM counts its updates in batches).
        stated: what the user states about the run (``lam``, ``target_tokens``, ``lr``, ``wsd``,
            ``decay_fraction``, ``steps``, ``segment_tokens``: :func:`mixagent.env.setting.stated_from_spec`);
            probe-then-commit reads it.
    """

    natural: Mapping[str, float] | None = None
    reference: object | None = None
    regmix: Mapping[str, float] | None = None
    batches_per_step: int = 1
    stated: Mapping[str, float] | None = None


def _regmix(ctx: PolicyContext) -> MixingPolicy:
    if ctx.regmix is None:
        raise ConfigError("regmix", ["RegMix's mixture is not fitted: run it through `mixagent compare`"
                                     " (which makes its proxy runs and fits it)"])
    return FixedPolicy(ctx.regmix)


def _classes() -> dict[str, type]:
    from mixagent.policies.guarded import GuardedPolicy
    from mixagent.policies.heuristics import DecaySwitchPolicy, EndUpsamplePolicy, TwoPhasePolicy
    from mixagent.policies.methods import ADOPolicy, AioliPolicy, DoReMiPolicy, ODMPolicy, VelocitunePolicy
    from mixagent.policies.probe_commit import ProbeCommitPolicy

    return {"decay_switch": DecaySwitchPolicy, "end_upsample": EndUpsamplePolicy, "two_phase": TwoPhasePolicy,
            "doremi": DoReMiPolicy,
            "odm": ODMPolicy, "ado": ADOPolicy, "velocitune": VelocitunePolicy, "aioli": AioliPolicy,
            "probe_commit": ProbeCommitPolicy, "guarded": GuardedPolicy}


def _methods() -> dict[str, Callable[..., MixingPolicy]]:
    c = _classes()
    return {
        "decay_switch": lambda ctx, **kw: c["decay_switch"](ctx.natural, **kw),
        "end_upsample": lambda ctx, **kw: c["end_upsample"](ctx.natural, **kw),
        "two_phase": lambda ctx, **kw: c["two_phase"](ctx.natural, **kw),
        "doremi": lambda ctx, **kw: c["doremi"](ctx.reference, batches_per_step=ctx.batches_per_step, **kw),
        "odm": lambda ctx, **kw: c["odm"](batches_per_step=ctx.batches_per_step, **kw),
        "ado": lambda ctx, **kw: c["ado"](ctx.natural, **kw),
        "velocitune": lambda ctx, **kw: c["velocitune"](ctx.natural, ctx.reference, **kw),
        "aioli": lambda ctx, **kw: c["aioli"](ctx.natural, **kw),
        "regmix": lambda ctx, **kw: _regmix(ctx),
        "probe_commit": lambda ctx, **kw: c["probe_commit"](ctx.natural, ctx.stated, **kw),
        "guarded": lambda ctx, **kw: c["guarded"](ctx.natural, **kw),
    }


METHODS = ("decay_switch", "end_upsample", "two_phase", "doremi", "odm", "ado", "velocitune", "aioli", "regmix",
           "probe_commit", "guarded")
METHOD_SPECS = (*BASELINE_SPECS, *METHODS)
NEEDS_REFERENCE = ("doremi", "velocitune")
PROBING = ("aioli",)  # methods that train short probe mixtures inside each step (the env's ``probe``)
_FROM_CONTEXT = ("self", "natural", "shares", "reference", "batches_per_step", "stated")
FITTED_PARAMS = ("model", "agent")  # spec keywords that name a fitted artifact (probe_commit's model, guarded's
# policy directory), not a hyperparameter
_STAND_IN_STATED = {"lam": 0.5, "target_tokens": 0.0, "lr": 2e-3, "wsd": 1.0, "decay_fraction": 0.25, "steps": 8.0,
                    "segment_tokens": 65536.0}


def _tunable() -> dict[str, tuple[str, ...]]:
    return {name: tuple(p for p in inspect.signature(cls.__init__).parameters if p not in _FROM_CONTEXT)
            for name, cls in _classes().items()} | {"regmix": ()}


_TUNABLE: dict[str, tuple[str, ...]] = {}  # filled on first use (importing the classes is lazy)


def tunable(name: str) -> tuple[str, ...]:
    """The hyperparameters method ``name`` takes in its spec (its constructor's keywords the context does not
    supply); empty for a name that is not a registered method."""
    if not _TUNABLE:
        _TUNABLE.update(_tunable())
    return _TUNABLE.get(name, ())


def _defaults(name: str) -> dict[str, object]:
    cls = _classes().get(name)
    if cls is None:
        return {}
    return {k: v.default for k, v in inspect.signature(cls.__init__).parameters.items() if k in tunable(name)}


def _value(text: str, default: object) -> tuple[object, str]:
    """``text`` as the type of the hyperparameter's default (``None`` defaults take a number); ``(value, "")``
    or ``(None, what is wrong)``."""
    import math

    if isinstance(default, bool):
        v = {"true": True, "false": False, "1": True, "0": False}.get(text.lower())
        return (v, "") if v is not None else (None, "expected true or false")
    if isinstance(default, int):
        try:
            return int(text), ""
        except ValueError:
            return None, "expected an integer"
    if isinstance(default, str):
        return text, ""
    try:
        v = float(text)
    except ValueError:
        return None, "expected a number"
    return (v, "") if math.isfinite(v) else (None, "expected a finite number")


def parse_method(spec: str) -> tuple[str, dict[str, object]] | None:
    """``(name, {keyword: value})`` of a method spec (``doremi``, ``doremi:eta=0.1,smoothing=0.01``);
    ``None`` when ``spec`` names no registered method. Each value is parsed as the type of the
    hyperparameter's default (bool: ``true``/``false``/``1``/``0``; int; finite float; string).

    Raises:
        ConfigError: a keyword the method does not take (with the ones it does), a malformed or repeated
            pair, or a value of the wrong type.
    """
    name, colon, rest = spec.partition(":")
    if name not in METHODS:
        return None
    if not colon:
        return name, {}
    names = tunable(name)
    defaults = _defaults(name)
    params, problems = {}, []
    for pair in rest.split(","):
        key, eq, value = pair.partition("=")
        if not eq or not key or not value:
            problems.append(f"{spec!r}: give hyperparameters as key=value pairs, e.g. '{name}:"
                            f"{(names or ('eta',))[0]}=0.1'")
        elif key not in names:
            problems.append(f"{name} has no hyperparameter {key!r}{suggest(key, names)}; it takes "
                            f"{', '.join(names) or 'none'}")
        elif key in params:
            problems.append(f"{spec!r}: {key} is given twice")
        else:
            v, wrong = _value(value, defaults.get(key))
            if wrong:
                problems.append(f"{spec!r}: {key}={value}: {wrong} (default {defaults.get(key)!r})")
            else:
                params[key] = v
    if problems:
        raise ConfigError("policy", problems)
    return name, params


def split_policies(text: str) -> list[str]:
    """Policy specs from a comma-separated list (``--policies``): a piece that is only ``key=value`` continues the
    method spec before it, so ``probe_commit,guarded:agent=runs/agent/v2/bc,ood=clip,uniform`` gives three
    specs (a spec's own pairs are comma-separated too)."""
    specs: list[str] = []
    for piece in filter(None, (p.strip() for p in text.split(","))):
        key, eq, _ = piece.partition("=")
        if specs and eq and ":" in specs[-1] and not {":", "/"} & set(key):  # a pair of the spec before
            specs[-1] += f",{piece}"
        else:
            specs.append(piece)
    return specs


def method_spec(name: str, params: Mapping[str, object]) -> str:
    """The spec string of method ``name`` with ``params`` (keys sorted, so equal settings give equal specs)."""
    if not params:
        return name
    return name + ":" + ",".join(f"{k}={params[k]}" for k in sorted(params))


def is_method(spec: str) -> bool:
    """Whether ``spec`` names a registered method (with or without hyperparameters)."""
    return spec.partition(":")[0] in METHODS


def method_problems(spec: str) -> list[str]:
    """What is wrong with a method spec (empty when it names a registered method or baseline): an unknown
    name or hyperparameter, a value of the wrong type, or one the method's constructor refuses (checked by
    building it in a stand-in context; what the context itself lacks is checked where the policy is built)."""
    if is_method(spec):
        try:
            name, params = parse_method(spec)  # type: ignore[misc]
            if name != "regmix":
                from mixagent.policies.methods import ReferenceCurve

                stand_in = ReferenceCurve(("a",), (0.0, 1.0), ((1.0,), (0.9,)), (1.0,), "stand-in")
                _methods()[name](PolicyContext(natural=None, reference=stand_in, stated=_STAND_IN_STATED), **params)
        except ConfigError as exc:
            return list(exc.problems)
        except TypeError as exc:
            return [f"{spec!r}: {exc}"]
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
    parsed = parse_method(spec)
    if parsed is None:
        raise ConfigError("policy", method_problems(spec))
    name, params = parsed
    try:
        return _methods()[name](ctx, **params)
    except TypeError as exc:  # a value of the wrong kind for the constructor
        raise ConfigError("policy", [f"{spec!r}: {exc}"]) from None


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
    if is_method(spec):
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


def rules_version(name: str) -> int:
    """The rules version of method ``name`` (:data:`RULES`, else :data:`RULES_VERSION`)."""
    return RULES.get(name.partition(":")[0], RULES_VERSION)


def policy_fingerprint(policy: MixingPolicy) -> dict:
    """What defines a built policy's behaviour, as JSON: its class, its public constructor state (numbers,
    strings, shares, a reference curve) and :data:`RULES_VERSION`. The comparison keys cached episodes by
    its digest, so changing a default or a rule reruns the episodes instead of reusing stale ones."""
    state = {k: _plain(v) for k, v in sorted(vars(policy).items()) if not k.startswith("_")}
    return {"class": type(policy).__name__, "rules": rules_version(str(getattr(policy, "name", ""))),
            "state": state}
