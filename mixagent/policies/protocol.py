"""The ``MixingPolicy`` protocol.

Every policy — the baselines, the behaviour policies of collection and the trained agent — implements
``reset(space)`` and ``act(observation) -> DomainWeights``, so any of them drives the environment, the
collector and a real training run alike.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from mixagent.domains import DomainSpace, DomainWeights

__all__ = ["MixingPolicy"]


@runtime_checkable
class MixingPolicy(Protocol):
    """Chooses the next mixture from an observation (``mixagent.env.observation`` layout)."""

    def reset(self, space: DomainSpace) -> None:
        """Start a run in ``space``."""

    def act(self, observation: np.ndarray) -> DomainWeights:
        """The mixture for the next segment."""
