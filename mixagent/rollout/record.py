"""The one episode record, and the one store API every result store implements.

An episode is a run of the proxy from the base model under a sequence of mixtures: the evaluation at reset,
one step per trained segment (its domain weights, the evaluation after it, its reward), and how it ended.
The collection's trajectory store (:mod:`mixagent.trajectories.store`), the episode cache
(:mod:`mixagent.rollout.cache`) and the headroom audit's results (:mod:`mixagent.study.audit`) all read and
write :class:`EpisodeRecord` through :class:`EpisodeStore`; each keeps its own versioned on-disk format
(what it stores of an episode differs: every step's raw record, a summary with the per-step evaluations,
the final evaluation only), and says so in :attr:`EpisodeRecord.extra`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np

from mixagent.env.evaluation import EvalResult

__all__ = ["EpisodeRecord", "EpisodeStore"]


@dataclasses.dataclass(frozen=True)
class EpisodeRecord:
    """One episode as every store reads and writes it.

    Attributes:
        key: what was rolled out: a policy key (:func:`mixagent.rollout.identity.policy_key`), a schedule key
            (the audit) or a trajectory id (collection).
        seed: the env seed (``MixingEnv.reset(seed=seed)``; a collection tree's ``episode_seed``).
        start: the evaluation at reset (:meth:`EvalResult.to_json`), or ``None`` where the store keeps one
            shared start elsewhere (the audit's ``start.json``).
        steps: one dict per trained segment: ``weights`` (``K`` floats in the space's domain order), ``eval``
            (the evaluation after the segment, or ``None`` when the segment was not evaluated), ``reward``
            (``None`` where the store keeps only the return) and ``balanced_score`` (or ``None``), plus the
            keys a store records beside them (``action``, ``tokens_seen``, ``wall``...), as they are.
        final: the last evaluation reached (before a divergence, if the run was truncated).
        ret: the episode return under the env's reward (``None`` where not recorded).
        truncated: the run diverged (NaN/Inf loss) before its last step.
        extra: what one store adds (a trajectory's header and end line, an audit row's per-item values and
            wall time, a cached episode's summary).
    """

    key: str
    seed: int
    start: dict | None
    steps: tuple[dict, ...]
    final: dict
    ret: float | None
    truncated: bool
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def start_eval(self) -> EvalResult | None:
        return EvalResult.from_json(self.start) if self.start is not None else None

    @property
    def final_eval(self) -> EvalResult:
        return EvalResult.from_json(self.final)

    @property
    def evals(self) -> list[EvalResult]:
        """The evaluation after each evaluated step, in order."""
        return [EvalResult.from_json(s["eval"]) for s in self.steps if s.get("eval") is not None]

    @property
    def weights(self) -> np.ndarray:
        """``(steps, K)`` mixtures trained (``(0, 0)`` when the store keeps none)."""
        if not self.steps:
            return np.zeros((0, 0))
        return np.array([s["weights"] for s in self.steps], dtype=np.float64)

    @property
    def balanced(self) -> float:
        """The last balanced score reached (0 when no step recorded one)."""
        done = [s["balanced_score"] for s in self.steps if s.get("balanced_score") is not None]
        return done[-1] if done else 0.0


class EpisodeStore(Protocol):
    """Where episodes are kept: the trajectory store, the episode cache and the audit's results.

    ``get`` returns ``None`` for an episode not stored (or stored unreadable: it is then run again); ``put``
    publishes one finished episode atomically (a reader never sees half of it); ``records`` yields every
    stored episode.
    """

    def get(self, key: str, seed: int) -> EpisodeRecord | None:
        """The stored episode of ``key`` on ``seed``, or ``None``."""

    def put(self, record: EpisodeRecord) -> None:
        """Store one finished episode."""

    def records(self) -> Iterator[EpisodeRecord]:
        """Every stored episode."""
