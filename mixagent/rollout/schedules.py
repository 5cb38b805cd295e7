"""Replay-share schedules: a per-step source-field share (or a named constant mixture) turned into domain
weights. The audit's rows, the world model's policy ranking and the comparison's plots use them."""

from __future__ import annotations

import dataclasses

import numpy as np

from mixagent.domains import DomainSpace, replay_weights

__all__ = ["Schedule"]


@dataclasses.dataclass(frozen=True)
class Schedule:
    """One audit row: a per-step replay share ``rhos`` (``(T,)``, source-field share in [0, 1]), or a
    constant named ``mixture`` (``natural`` or ``uniform``)."""

    label: str
    family: str
    rhos: tuple[float, ...] = ()
    mixture: str = ""

    @property
    def key(self) -> str:
        return self.mixture or "rho:" + ",".join(f"{r:.4f}" for r in self.rhos)

    @classmethod
    def from_key(cls, key: str, label: str = "", family: str = "") -> Schedule:
        """The schedule a stored leaf's ``key`` names (``natural``, ``uniform`` or ``rho:<r0>,<r1>,...``)."""
        if key.startswith("rho:"):
            return cls(label or key, family, tuple(float(x) for x in key.removeprefix("rho:").split(",")))
        return cls(label or key, family, mixture=key)

    @property
    def is_static(self) -> bool:
        """A constant mixture: a named one, or the same ``rho`` at every step."""
        return bool(self.mixture) or len(set(self.rhos)) == 1

    def weights(self, space: DomainSpace, natural: np.ndarray, t: int) -> np.ndarray:
        """``(K,)`` weights of step ``t``."""
        if self.mixture == "uniform":
            return np.full(space.k, 1.0 / space.k)
        if self.mixture == "natural":
            return np.asarray(natural, dtype=np.float64)
        return replay_weights(space, natural, self.rhos[t])

    def mean_rho(self, space: DomainSpace, natural: np.ndarray) -> float:
        return float(np.mean([self.weights(space, natural, t)[space.field_mask("source")].sum()
                              for t in range(len(self.rhos) or 1)]))
