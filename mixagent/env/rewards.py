"""Named reward functions. Each scores a run's *balanced* improvement at time t from raw EvalResults; the
per-step reward is its change, so an episode's return telescopes to final minus start. Because
trajectories store raw EvalResults, any registered reward can be applied offline without re-collecting.

Balanced score ``B_t = lam * target_improvement + (1 - lam) * source_improvement``, each a relative change
versus the start of the run (the source term is negative under forgetting).
"""

from __future__ import annotations

from collections.abc import Callable

from mixagent.domains import DomainSpace
from mixagent.env.evaluation import EvalResult
from mixagent.errors import ConfigError, suggest

__all__ = ["REWARDS", "balanced_score", "step_reward", "field_improvement"]

Improvement = Callable[[EvalResult, EvalResult, DomainSpace, str], float]


def _benchmark(start: EvalResult, now: EvalResult, space: DomainSpace, field: str) -> float:
    return (now.scores[field] - start.scores[field]) / start.scores[field]


def _bpb(start: EvalResult, now: EvalResult, space: DomainSpace, field: str) -> float:
    b0 = start.field_bpb(space, field)
    return (b0 - now.field_bpb(space, field)) / b0


def _mixed(start: EvalResult, now: EvalResult, space: DomainSpace, field: str) -> float:
    return 0.5 * (_benchmark(start, now, space, field) + _bpb(start, now, space, field))


REWARDS: dict[str, Improvement] = {
    "balanced": _benchmark,  # benchmark scores (the paper's source/target evaluation feedback)
    "balanced_bpb": _bpb,  # held-out bits per byte, averaged over each field's domains
    "balanced_mixed": _mixed,  # the mean of the two
}


def field_improvement(name: str) -> Improvement:
    if name not in REWARDS:
        raise ConfigError("reward", [f"unknown reward {name!r}{suggest(name, REWARDS)}; known: {', '.join(REWARDS)}"])
    return REWARDS[name]


def balanced_score(name: str, lam: float, start: EvalResult, now: EvalResult, space: DomainSpace) -> float:
    """``B_t`` under reward ``name`` with target weight ``lam``."""
    f = field_improvement(name)
    return lam * f(start, now, space, "target") + (1 - lam) * f(start, now, space, "source")


def step_reward(name: str, lam: float, start: EvalResult, prev: EvalResult, now: EvalResult,
                space: DomainSpace) -> float:
    """``B_t - B_{t-1}``."""
    return balanced_score(name, lam, start, now, space) - balanced_score(name, lam, start, prev, space)
