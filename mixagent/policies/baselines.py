"""The constant-mixture baselines and the one parser of baseline specs (``uniform``, ``natural``,
``target_only``, ``replay:<rho>``), used by the agent's config, online evaluation and deployment alike
(``mixagent.policies.registry.policy_from_spec`` turns any spec into a policy).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from mixagent.domains import DomainSpace, DomainWeights, replay_weights
from mixagent.errors import ConfigError, UsageError, WeightsError, suggest
from mixagent.policies.protocol import MixingPolicy

__all__ = ["UniformPolicy", "NaturalPolicy", "FixedPolicy", "ReplayPolicy", "POLICIES", "make_policy",
           "BASELINE_SPECS", "BaselineSpec", "parse_baseline", "baseline_problems"]


class _Constant:
    """Base for policies whose mixture does not depend on the observation."""

    space: DomainSpace

    def reset(self, space: DomainSpace) -> None:
        self.space = space
        self._weights = self.weights_for(space)

    def weights_for(self, space: DomainSpace) -> DomainWeights:
        raise NotImplementedError

    def act(self, observation: np.ndarray) -> DomainWeights:
        if not hasattr(self, "_weights"):
            raise UsageError(f"{type(self).__name__}: call reset(space) before act()")
        return self._weights


class UniformPolicy(_Constant):
    """Equal weight on every domain."""

    def weights_for(self, space: DomainSpace) -> DomainWeights:
        return DomainWeights.normalised(space, np.ones(space.k))


class NaturalPolicy(_Constant):
    """Each domain in proportion to its training tokens.

    Args:
        shares: ``{domain: token share}`` (e.g. ``env.unwrapped.natural.to_mapping()``).
    """

    def __init__(self, shares: Mapping[str, float]) -> None:
        self.shares = dict(shares)

    def weights_for(self, space: DomainSpace) -> DomainWeights:
        return DomainWeights.from_mapping(space, self.shares)


class FixedPolicy(_Constant):
    """A fixed mixture given as ``{domain: weight}`` (normalised; unnamed domains get 0)."""

    def __init__(self, weights: Mapping[str, float]) -> None:
        self.weights = dict(weights)

    def weights_for(self, space: DomainSpace) -> DomainWeights:
        return DomainWeights.from_mapping(space, self.weights)


class ReplayPolicy(_Constant):
    """Replay: a fixed share ``rho`` of source-field data, the rest target-field data; within a field,
    domains get their natural token shares (uniform when none are given). ``rho=0`` is target-only.

    Args:
        rho: replay fraction in [0, 1].
        shares: optional ``{domain: token share}`` used within each field.
    """

    def __init__(self, rho: float, shares: Mapping[str, float] | None = None) -> None:
        if not 0.0 <= rho <= 1.0:
            raise ConfigError("ReplayPolicy", [f"rho must be in [0, 1], got {rho}"])
        self.rho = rho
        self.shares = dict(shares) if shares else None

    def weights_for(self, space: DomainSpace) -> DomainWeights:
        base = (DomainWeights.from_mapping(space, self.shares).values if self.shares else np.ones(space.k))
        try:
            return DomainWeights.normalised(space, replay_weights(space, base, self.rho))
        except WeightsError as exc:
            raise ConfigError("ReplayPolicy", [f"{exc}; add them to shares"]) from None


POLICIES: dict[str, Callable[..., MixingPolicy]] = {
    "uniform": UniformPolicy,
    "natural": NaturalPolicy,
    "fixed": FixedPolicy,
    "replay": ReplayPolicy,
    "target_only": lambda shares=None: ReplayPolicy(0.0, shares),
}


def make_policy(name: str, **params: Any) -> MixingPolicy:
    """Build a registered policy by name, e.g. ``make_policy("replay", rho=0.5, shares=...)``."""
    if name not in POLICIES:
        raise ConfigError("policy", [f"unknown policy {name!r}{suggest(name, POLICIES)}; known: {', '.join(POLICIES)}"])
    return POLICIES[name](**params)


BASELINE_SPECS = ("uniform", "natural", "target_only", "replay:<rho>")
_NEEDS_SHARES = ("natural", "target_only", "replay")


@dataclasses.dataclass(frozen=True)
class BaselineSpec:
    """A parsed baseline spec: ``name`` (``uniform``, ``natural``, ``target_only`` or ``replay``) and, for
    ``replay``, the source-field share ``rho`` in [0, 1]."""

    name: str
    rho: float | None = None

    @property
    def label(self) -> str:
        """The name in tables: ``replay rho=0.5``, ``target-only``, ``uniform``."""
        return f"replay rho={self.rho:g}" if self.name == "replay" else self.name.replace("_", "-")

    def build(self, natural: Mapping[str, float] | None = None) -> MixingPolicy:
        """The policy; ``natural`` (``{domain: token share}``) is needed by all but ``uniform``."""
        if self.name in _NEEDS_SHARES and natural is None:
            raise ConfigError("policy", [f"policy {self.name!r} needs the domains' natural token shares"])
        if self.name == "uniform":
            return UniformPolicy()
        if self.name == "natural":
            return NaturalPolicy(natural or {})
        return ReplayPolicy(0.0 if self.name == "target_only" else float(self.rho or 0.0), natural)


def baseline_problems(spec: str) -> list[str]:
    """What is wrong with a baseline spec string (empty when it parses)."""
    name, colon, rho = spec.partition(":")
    if name == "replay":
        try:
            ok = 0.0 <= float(rho) <= 1.0
        except ValueError:
            ok = False
        return [] if ok else [f"{spec!r} needs a rho in [0, 1], e.g. 'replay:0.5'"]
    if name in BASELINE_SPECS and not colon:
        return []
    return [f"unknown baseline {spec!r}{suggest(name, BASELINE_SPECS)}; known: {', '.join(BASELINE_SPECS)}"]


def parse_baseline(spec: str) -> BaselineSpec | None:
    """Parse ``uniform``, ``natural``, ``target_only`` or ``replay:<rho>``; ``None`` when ``spec`` is not
    a baseline spec at all (e.g. an artifact path).

    Raises:
        ConfigError: ``replay`` without a share in [0, 1].
    """
    name, colon, rho = spec.partition(":")
    if name == "replay":
        problems = baseline_problems(spec)
        if problems:
            raise ConfigError("policy", [f"replay needs a share in [0, 1]: 'replay:0.5', got {spec!r}"])
        return BaselineSpec("replay", float(rho))
    if name in BASELINE_SPECS and not colon:
        return BaselineSpec(name)
    return None
