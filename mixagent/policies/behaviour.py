"""Behaviour policies for trajectory collection: seeded, randomised mixing policies that cover the space of
mixtures and schedules the agent learns from.

All of them implement :class:`~mixagent.policies.MixingPolicy`. They read what they need from the
observation (current weights in ``obs[:K]``, progress ``t/T`` in ``obs[-1]``), so a policy can take over
mid-episode, which branching collection does at every branch point.

=====================  =====================================================================================
name                   behaviour
=====================  =====================================================================================
``dirichlet``          one constant mixture ``~ Dirichlet(concentration * natural)`` (RegMix's proxy sampling)
``random_walk``        starts like ``dirichlet``, then drifts: ``w_t ~ Dirichlet(step_concentration * w_{t-1})``
``target_then_replay`` target field only until ``switch`` (a fraction of T), then replay fraction ``rho``
``target_warmup``      target share ramps linearly from ``start_target`` to ``end_target`` over ``warmup`` of T
``two_stage_replay``   replay fraction ``rho1`` until ``switch``, ``rho2`` after
``epsilon``            a deterministic baseline (``base``) whose mixture is replaced, with probability
                       ``epsilon`` per step, by a ``dirichlet`` draw
=====================  =====================================================================================

A collect config lists behaviours with a sampling ``weight`` and their parameters; a parameter is a value,
``{range: [lo, hi]}`` (uniform), ``{log_range: [lo, hi]}`` (log-uniform) or ``{choice: [...]}``, drawn
once per trajectory. :class:`BehaviourMix` does the drawing and returns the resolved parameters, which
the collector stores in each trajectory's header.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from mixagent.domains import DomainSpace, DomainWeights
from mixagent.errors import ConfigError, suggest
from mixagent.policies.baselines import NaturalPolicy, ReplayPolicy, UniformPolicy
from mixagent.policies.protocol import MixingPolicy

__all__ = ["BehaviourSpec", "BehaviourMix", "BEHAVIOURS", "DirichletPolicy", "RandomWalkPolicy",
           "ReplaySchedulePolicy", "EpsilonPolicy", "step_of"]

_EPS = 1e-3  # keeps Dirichlet parameters positive when a weight is exactly zero


def step_of(observation: np.ndarray, horizon: int) -> int:
    """The step index ``t`` encoded in an observation's progress entry."""
    return int(round(float(observation[-1]) * horizon))


def _dirichlet(rng: np.random.Generator, alpha: np.ndarray) -> np.ndarray:
    w = rng.dirichlet(np.maximum(alpha, _EPS))
    return w / w.sum()


class DirichletPolicy:
    """A constant mixture drawn once per episode from ``Dirichlet(concentration * natural)``.

    Args:
        natural: natural token shares (the Dirichlet's mean).
        concentration: total concentration; small values give sparse mixtures, large ones stay near natural.
        seed: seeds the draw.
    """

    def __init__(self, natural: np.ndarray, concentration: float, seed: int) -> None:
        self.natural, self.concentration = np.asarray(natural, dtype=np.float64), float(concentration)
        self.rng = np.random.default_rng(seed)
        self._weights: DomainWeights | None = None

    def reset(self, space: DomainSpace) -> None:
        self.space, self._weights = space, None

    def act(self, observation: np.ndarray) -> DomainWeights:
        if self._weights is None:
            draw = _dirichlet(self.rng, self.concentration * self.natural)
            self._weights = DomainWeights.normalised(self.space, draw)
        return self._weights


class RandomWalkPolicy:
    """A mixture that drifts: the first draw as :class:`DirichletPolicy`, then each step
    ``Dirichlet(step_concentration * w_{t-1})`` around the current weights (read from the observation, so
    the walk can start mid-episode from whatever mixture is in place).

    Args:
        natural: natural token shares.
        concentration: concentration of the first draw.
        step_concentration: how tightly each step stays near the last mixture (larger = slower drift).
        seed: seeds the walk.
    """

    def __init__(self, natural: np.ndarray, concentration: float, step_concentration: float, seed: int) -> None:
        self.natural = np.asarray(natural, dtype=np.float64)
        self.concentration, self.step_concentration = float(concentration), float(step_concentration)
        self.rng = np.random.default_rng(seed)

    def reset(self, space: DomainSpace) -> None:
        self.space = space

    def act(self, observation: np.ndarray) -> DomainWeights:
        if float(observation[-1]) <= 0.0:
            return DomainWeights.normalised(self.space, _dirichlet(self.rng, self.concentration * self.natural))
        current = np.asarray(observation[: self.space.k], dtype=np.float64)
        return DomainWeights.normalised(self.space, _dirichlet(self.rng, self.step_concentration * current))


class ReplaySchedulePolicy:
    """Replay with a per-step replay fraction: step ``t`` trains ``rhos[t]`` source-field data and the rest
    target-field data (natural shares within each field).

    Args:
        rhos: replay fraction per step (length T).
        shares: ``{domain: natural token share}``.
    """

    def __init__(self, rhos: list[float], shares: Mapping[str, float]) -> None:
        self.rhos = [float(r) for r in rhos]
        self.shares = dict(shares)

    def reset(self, space: DomainSpace) -> None:
        self.space = space
        self._cache: dict[float, DomainWeights] = {}

    def act(self, observation: np.ndarray) -> DomainWeights:
        rho = self.rhos[min(step_of(observation, len(self.rhos)), len(self.rhos) - 1)]
        if rho not in self._cache:
            self._cache[rho] = ReplayPolicy(rho, self.shares).weights_for(self.space)
        return self._cache[rho]


class EpsilonPolicy:
    """A deterministic policy plus exploration: with probability ``epsilon`` per step the mixture is a
    ``Dirichlet(concentration * natural)`` draw instead of the base policy's.

    Args:
        base: the deterministic policy.
        natural: natural token shares.
        epsilon: per-step probability of a random mixture.
        concentration: concentration of the random mixtures.
        seed: seeds the coin flips and draws.
    """

    def __init__(self, base: MixingPolicy, natural: np.ndarray, epsilon: float, concentration: float,
                 seed: int) -> None:
        self.base, self.natural = base, np.asarray(natural, dtype=np.float64)
        self.epsilon, self.concentration = float(epsilon), float(concentration)
        self.rng = np.random.default_rng(seed)

    def reset(self, space: DomainSpace) -> None:
        self.space = space
        self.base.reset(space)

    def act(self, observation: np.ndarray) -> DomainWeights:
        explore = self.rng.random() < self.epsilon
        draw = _dirichlet(self.rng, self.concentration * self.natural)  # drawn every step: a fixed stream
        return DomainWeights.normalised(self.space, draw) if explore else self.base.act(observation)


# --- the registry: name -> factory(space, natural, horizon, seed, **params) ---------------------------------


def _steps_rhos(horizon: int, rho_at: Callable[[float], float]) -> list[float]:
    return [float(np.clip(rho_at(t / horizon), 0.0, 1.0)) for t in range(horizon)]


def _shares(space: DomainSpace, natural: np.ndarray) -> dict[str, float]:
    return dict(zip(space.names, np.asarray(natural, dtype=float).tolist()))


def _dirichlet_factory(space, natural, horizon, seed, concentration: float = 8.0) -> MixingPolicy:
    return DirichletPolicy(natural, concentration, seed)


def _random_walk_factory(space, natural, horizon, seed, concentration: float = 8.0,
                         step_concentration: float = 30.0) -> MixingPolicy:
    return RandomWalkPolicy(natural, concentration, step_concentration, seed)


def _target_then_replay(space, natural, horizon, seed, switch: float = 0.5, rho: float = 0.5) -> MixingPolicy:
    return ReplaySchedulePolicy(_steps_rhos(horizon, lambda f: 0.0 if f < switch else rho), _shares(space, natural))


def _target_warmup(space, natural, horizon, seed, warmup: float = 0.5, start_target: float = 0.1,
                   end_target: float = 0.9) -> MixingPolicy:
    def rho(f: float) -> float:
        ramp = min(1.0, f / warmup) if warmup > 0 else 1.0
        return 1.0 - (start_target + (end_target - start_target) * ramp)
    return ReplaySchedulePolicy(_steps_rhos(horizon, rho), _shares(space, natural))


def _two_stage_replay(space, natural, horizon, seed, switch: float = 0.5, rho1: float = 0.25,
                      rho2: float = 0.5) -> MixingPolicy:
    return ReplaySchedulePolicy(_steps_rhos(horizon, lambda f: rho1 if f < switch else rho2), _shares(space, natural))


_BASES = ("uniform", "natural", "replay", "target_only")


def _epsilon(space, natural, horizon, seed, base: str = "replay", rho: float = 0.5, epsilon: float = 0.2,
             concentration: float = 8.0) -> MixingPolicy:
    if base not in _BASES:
        raise ConfigError("behaviour epsilon", [f"base {base!r} unknown{suggest(base, _BASES)}; use one of {_BASES}"])
    shares = _shares(space, natural)
    policy: MixingPolicy = {"uniform": UniformPolicy, "natural": lambda: NaturalPolicy(shares),
                            "replay": lambda: ReplayPolicy(rho, shares),
                            "target_only": lambda: ReplayPolicy(0.0, shares)}[base]()
    return EpsilonPolicy(policy, natural, epsilon, concentration, seed)


BEHAVIOURS: dict[str, Callable[..., MixingPolicy]] = {
    "dirichlet": _dirichlet_factory,
    "random_walk": _random_walk_factory,
    "target_then_replay": _target_then_replay,
    "target_warmup": _target_warmup,
    "two_stage_replay": _two_stage_replay,
    "epsilon": _epsilon,
}

# Valid values of each numeric parameter, for config checks (inclusive bounds).
_BOUNDS: dict[str, tuple[float, float]] = {
    "concentration": (1e-3, 1e6), "step_concentration": (1e-3, 1e6), "switch": (0.0, 1.0), "rho": (0.0, 1.0),
    "rho1": (0.0, 1.0), "rho2": (0.0, 1.0), "warmup": (0.0, 1.0), "start_target": (0.0, 1.0),
    "end_target": (0.0, 1.0), "epsilon": (0.0, 1.0),
}


def _params_of(name: str) -> list[str]:
    import inspect

    fixed = ("space", "natural", "horizon", "seed")
    return [p for p in inspect.signature(BEHAVIOURS[name]).parameters if p not in fixed]


@dataclasses.dataclass(frozen=True)
class BehaviourSpec:
    """One behaviour of a collect config's mixture of behaviours.

    Args:
        name: a registered behaviour (``mixagent.policies.behaviour.BEHAVIOURS``).
        weight: its probability mass in the mixture (normalised over all behaviours).
        params: its parameters: a value, ``{range: [lo, hi]}``, ``{log_range: [lo, hi]}`` or
            ``{choice: [...]}``; unnamed parameters take the behaviour's defaults.
    """

    name: str
    weight: float = 1.0
    params: dict[str, Any] = dataclasses.field(default_factory=dict)

    def check(self) -> list[str]:
        if self.name not in BEHAVIOURS:
            return [f"behaviour {self.name!r} unknown{suggest(self.name, BEHAVIOURS)}; known: {', '.join(BEHAVIOURS)}"]
        problems = [] if self.weight >= 0 and math.isfinite(self.weight) else [
            f"behaviour {self.name}: weight must be >= 0, got {self.weight}"]
        known = _params_of(self.name)
        for key, value in self.params.items():
            where = f"behaviour {self.name}: params.{key}"
            if key not in known:
                problems.append(f"{where} unknown{suggest(key, known)}; {self.name} takes {', '.join(known)}")
                continue
            problems += _check_param(where, key, value)
        return problems


def _check_param(where: str, key: str, value: Any) -> list[str]:
    if isinstance(value, dict):
        if len(value) != 1 or next(iter(value)) not in ("range", "log_range", "choice"):
            return [f"{where}: give a value, {{range: [lo, hi]}}, {{log_range: [lo, hi]}} or {{choice: [...]}}, "
                    f"got {value!r}"]
        kind, arg = next(iter(value.items()))
        if kind == "choice":
            if not isinstance(arg, list) or not arg:
                return [f"{where}: choice needs a non-empty list, got {arg!r}"]
            return [p for v in arg for p in _check_param(where, key, v)]
        if not (isinstance(arg, list) and len(arg) == 2 and all(isinstance(v, int | float) for v in arg)
                and arg[0] <= arg[1]):
            return [f"{where}: {kind} needs [lo, hi] with lo <= hi, got {arg!r}"]
        if kind == "log_range" and arg[0] <= 0:
            return [f"{where}: log_range needs lo > 0, got {arg!r}"]
        return [p for v in arg for p in _check_param(where, key, v)]
    if key in _BOUNDS:
        lo, hi = _BOUNDS[key]
        if not isinstance(value, int | float) or isinstance(value, bool) or not lo <= value <= hi:
            return [f"{where} must be a number in [{lo:g}, {hi:g}], got {value!r}"]
    elif key == "base" and value not in _BASES:
        return [f"{where}: base {value!r} unknown{suggest(str(value), _BASES)}; use one of {_BASES}"]
    return []


def _draw(rng: np.random.Generator, value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    kind, arg = next(iter(value.items()))
    if kind == "choice":
        return arg[int(rng.integers(len(arg)))]
    if kind == "range":
        return float(rng.uniform(arg[0], arg[1]))
    return float(math.exp(rng.uniform(math.log(arg[0]), math.log(arg[1]))))


class BehaviourMix:
    """Draws behaviour policies from a collect config's weighted list of :class:`BehaviourSpec`.

    Args:
        specs: the behaviours and their parameter distributions.
    """

    def __init__(self, specs: list[BehaviourSpec] | tuple[BehaviourSpec, ...]) -> None:
        problems = [p for s in specs for p in s.check()]
        total = sum(s.weight for s in specs if s.name in BEHAVIOURS)
        if not specs or not total > 0:
            problems.append("behaviours: give at least one behaviour with weight > 0")
        if problems:
            raise ConfigError("behaviours", problems)
        self.specs = list(specs)
        self.probs = np.array([s.weight for s in specs], dtype=np.float64) / total

    def sample(self, space: DomainSpace, natural: np.ndarray, horizon: int,
               seed: np.random.SeedSequence | int) -> tuple[MixingPolicy, dict[str, Any]]:
        """Draw a behaviour and its parameters; returns the reset policy and its record
        ``{"name", "params", "seed"}`` (enough to rebuild it with :meth:`build`)."""
        rng = np.random.default_rng(seed)
        spec = self.specs[int(rng.choice(len(self.specs), p=self.probs))]
        params = {k: _draw(rng, v) for k, v in spec.params.items()}
        record = {"name": spec.name, "params": params, "seed": int(rng.integers(2**31 - 1))}
        return self.build(record, space, natural, horizon), record

    @staticmethod
    def build(record: Mapping[str, Any], space: DomainSpace, natural: np.ndarray, horizon: int) -> MixingPolicy:
        """Rebuild a behaviour from its record (fresh state, as at the start of its segment)."""
        policy = BEHAVIOURS[record["name"]](space, np.asarray(natural, dtype=np.float64), horizon, record["seed"],
                                            **record["params"])
        policy.reset(space)
        return policy
