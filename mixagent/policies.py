"""The ``MixingPolicy`` protocol and the first baselines.

Every policy — these baselines, the behaviour policies of collection and the trained agent — implements
``reset(space)`` and ``act(observation) -> DomainWeights``, so any of them drives the environment, the
collector and a real training run alike.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np

from mixagent.domains import DomainSpace, DomainWeights
from mixagent.errors import ConfigError, suggest

__all__ = ["MixingPolicy", "UniformPolicy", "NaturalPolicy", "FixedPolicy", "ReplayPolicy", "POLICIES",
           "make_policy", "policy_from_spec", "BASELINE_SPECS"]


@runtime_checkable
class MixingPolicy(Protocol):
    """Chooses the next mixture from an observation (``mixagent.observation`` layout)."""

    def reset(self, space: DomainSpace) -> None:
        """Start a run in ``space``."""

    def act(self, observation: np.ndarray) -> DomainWeights:
        """The mixture for the next segment."""


class _Constant:
    """Base for policies whose mixture does not depend on the observation."""

    space: DomainSpace

    def reset(self, space: DomainSpace) -> None:
        self.space = space
        self._weights = self.weights_for(space)

    def weights_for(self, space: DomainSpace) -> DomainWeights:
        raise NotImplementedError

    def act(self, observation: np.ndarray) -> DomainWeights:
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
        w = np.zeros(space.k)
        for field, share in (("source", self.rho), ("target", 1.0 - self.rho)):
            mask = space.field_mask(field)
            if share > 0 and base[mask].sum() <= 0:
                raise ConfigError("ReplayPolicy", [f"shares give no weight to any {field}-field domain "
                                                   f"({', '.join(np.asarray(space.names)[mask])}); add them to shares"])
            w[mask] = share * base[mask] / base[mask].sum() if share > 0 else 0.0
        return DomainWeights.normalised(space, w)


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


def policy_from_spec(spec: str, natural: Mapping[str, float] | None = None) -> MixingPolicy:
    """A policy from a short spec: ``uniform``, ``natural``, ``target_only``, ``replay:<rho>`` (natural
    shares within each field) or the directory of a trained policy artifact.

    Args:
        spec: the spec string.
        natural: ``{domain: token share}``, needed by ``natural``, ``target_only`` and ``replay``.
    """
    from pathlib import Path

    name, _, rho = spec.partition(":")
    if name in ("natural", "target_only", "replay") and natural is None:
        raise ConfigError("policy", [f"policy {spec!r} needs the domains' natural token shares"])
    if name == "uniform" and not rho:
        return UniformPolicy()
    if name == "natural" and not rho:
        return NaturalPolicy(natural)
    if name == "target_only" and not rho:
        return ReplayPolicy(0.0, natural)
    if name == "replay":
        try:
            return ReplayPolicy(float(rho), natural)
        except ValueError:
            raise ConfigError("policy", [f"replay needs a share: 'replay:0.5', got {spec!r}"]) from None
    if Path(spec).is_dir():
        from mixagent.agent.artifact import load_policy

        return load_policy(spec)
    raise ConfigError("policy", [f"unknown policy {spec!r}{suggest(name, BASELINE_SPECS)}: give one of "
                                 f"{', '.join(BASELINE_SPECS)} or a policy artifact directory (runs/agent/<name>/rl)"])
