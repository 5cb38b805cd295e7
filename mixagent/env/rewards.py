"""Named reward functions. Each scores a run at time t from raw EvalResults; the per-step reward is the
score's change, so an episode's return telescopes to ``B_T - B_0`` (potential-based shaping: this holds
with discount 1 only, so agents trained on these rewards use gamma = 1). Because trajectories store raw
EvalResults, any registered reward can be applied offline without re-collecting.

Two families:

* **relative** (``balanced``, ``balanced_bpb``, ``balanced_mixed``; environment v0):
  ``B_t = lam * target_improvement + (1 - lam) * source_improvement``, each a relative change versus the
  start of the run (the source term is negative under forgetting), so ``B_0 = 0``.
* **normalised** (``normalised_bpb``, ``normalised_score`` and their ``_min`` variants; environment v1):
  per field ``s_f = (L_f(worst) - L_f) / (L_f(worst) - L_f(best))``, the D4RL normalised-score convention
  (Fu et al., arXiv 2004.07219), with the extremes from reference runs at the same token budget
  (source-only and target-only; :class:`Reference`, ``mixagent.env.references``). ``s_f = 1`` is what
  spending the whole budget on that field reaches, ``0`` what spending none of it does. With
  ``reward.anchors`` (static mixtures run beside them) the extremes are the best and worst of all those runs:
  with scarce unique target data target-only overfits, natural can beat it on the target field, and without
  anchors scores reach 2-4 in such settings, so one policy trained across settings would weigh them most. The balanced
  score is ``lam * s_target + (1 - lam) * s_source``; the ``_min`` variant is ``min(s_target, s_source)``.
  ``L_f`` is a field's mean held-out bits per byte (``_bpb``) or its benchmark score (``_score``, higher
  is better, so the roles of best and worst follow the measure's direction).

And the **judge** (:mod:`mixagent.env.judge`; the Self-Improving Pretraining signal, Tan et al., arXiv
2601.21343): ``judge`` is ``lam * dJ_target + (1 - lam) * dJ_source`` with ``dJ_f`` the change of the field's
judge score (a win rate in [0, 1], so already on one scale across fields and settings) since the start;
``judge_bpb`` is the mean of that and ``normalised_bpb``. Both need an evaluation with ``eval.judge``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np

from mixagent.config import is_number
from mixagent.domains import FIELDS, DomainSpace, replay_weights
from mixagent.env.evaluation import EvalResult
from mixagent.errors import ConfigError, UsageError, suggest

__all__ = ["ANCHORS", "STANDARD_ANCHORS", "ANCHORS_VERSION", "anchor_problems", "anchor_weights", "REWARDS",
           "NORMALISED_REWARDS", "BLENDS", "Reference", "balanced_score", "step_reward", "field_improvement",
           "reward_measure", "field_measure", "field_scores", "needs_reference"]

Improvement = Callable[[EvalResult, EvalResult, DomainSpace, str], float]


def _benchmark(start: EvalResult, now: EvalResult, space: DomainSpace, field: str) -> float:
    return (now.scores[field] - start.scores[field]) / start.scores[field]


def _bpb(start: EvalResult, now: EvalResult, space: DomainSpace, field: str) -> float:
    b0 = start.field_bpb(space, field)
    return (b0 - now.field_bpb(space, field)) / b0


def _judge(start: EvalResult, now: EvalResult, space: DomainSpace, field: str) -> float:
    if field not in now.judge or field not in start.judge:
        raise ConfigError("reward", [f"a judge reward reads the judge's {field} score, and this evaluation has "
                                     f"none: set eval.judge (the env spec's eval block or the deploy job's eval "
                                     f"section), or use a reward without the judge"])
    return now.judge[field] - start.judge[field]


def _mixed(start: EvalResult, now: EvalResult, space: DomainSpace, field: str) -> float:
    return 0.5 * (_benchmark(start, now, space, field) + _bpb(start, now, space, field))


REWARDS: dict[str, Improvement | None] = {
    "balanced": _benchmark,  # benchmark scores (the paper's source/target evaluation feedback)
    "balanced_bpb": _bpb,  # held-out bits per byte, averaged over each field's domains
    "balanced_mixed": _mixed,  # the mean of the two
    # normalised by reference runs (no relative-improvement function; see balanced_score)
    "normalised_bpb": None,
    "normalised_bpb_min": None,
    "normalised_score": None,
    "normalised_score_min": None,
    "judge": _judge,  # change of the judge's win rate against the real text (no reference needed)
    "judge_bpb": None,  # the mean of judge and normalised_bpb
}
BLENDS = {"judge_bpb": ("judge", "normalised_bpb")}  # rewards that average two others
NORMALISED_REWARDS = tuple(n for n, f in REWARDS.items() if f is None and n not in BLENDS)
MEASURES = ("bpb", "score")  # what a normalised reward measures a field by


ANCHORS = ("uniform", "natural", "replay:<rho>")  # the static mixtures reward.anchors may name
STANDARD_ANCHORS = ("natural", "replay:0.5", "uniform")  # what the settings suite's rewards are scaled by
ANCHORS_VERSION = 1  # anchors.json beside an audit (the oracle table's): its anchor runs on its reference seeds


def anchor_problems(name: str) -> list[str]:
    """What is wrong with an anchor (``reward.anchors``): ``uniform``, ``natural`` or ``replay:<rho>``, rho in
    [0, 1] (``target_only`` and ``replay:1`` are the reference runs themselves)."""
    kind, colon, rho = str(name).partition(":")
    if kind == "replay" and colon:
        try:
            share = float(rho)
        except ValueError:
            share = -1.0
        if not 0.0 <= share <= 1.0:
            return [f"anchor {name!r} needs a rho in [0, 1], e.g. 'replay:0.5'"]
        return [f"anchor {name!r} is the source-only reference run; drop it"] if share == 1.0 else []
    if kind == "target_only" and not colon:
        return ["target_only is already a reference run; drop it"]
    if kind in ("uniform", "natural") and not colon:
        return []
    return [f"unknown anchor {name!r}{suggest(kind, ('uniform', 'natural', 'replay'))}; anchors are static mixtures: "
            f"{', '.join(ANCHORS)}"]


def anchor_weights(name: str, space: DomainSpace, natural: np.ndarray) -> np.ndarray:
    """``(K,)`` the mixture of anchor ``name`` (:func:`anchor_problems`) given the domains' natural token shares:
    uniform; natural; replay ``rho`` of source data, each field split by natural share
    (:func:`mixagent.domains.replay_weights`)."""
    kind, _, rho = name.partition(":")
    if kind == "uniform":
        return np.full(space.k, 1.0 / space.k)
    if kind == "natural":
        return np.asarray(natural, dtype=np.float64) / float(np.sum(natural))
    return replay_weights(space, natural, float(rho))


def needs_reference(name: str) -> bool:
    """Whether reward ``name`` is scaled by reference runs."""
    return name in NORMALISED_REWARDS or any(needs_reference(part) for part in BLENDS.get(name, ()))


def field_measure(measure: str, result: EvalResult, space: DomainSpace, field: str) -> float:
    """A field's raw value under ``measure``: mean held-out bits per byte (``bpb``, lower is better) or
    benchmark score (``score``, higher is better)."""
    return result.field_bpb(space, field) if measure == "bpb" else float(result.scores[field])


@dataclasses.dataclass(frozen=True)
class Reference:
    """The extremes a field reaches at an episode's token budget, per measure: ``worst[measure][field]``
    from the run that spends nothing on the field, ``best[measure][field]`` from the run that spends
    everything on it (mean over the reference seeds), each widened by the spec's ``reward.anchors`` runs
    (:func:`mixagent.env.references.extremes`).

    A measure whose range is zero or inverted for a field (a noisy benchmark with few items can score the
    field higher after a run that spent nothing on it) cannot normalise: :meth:`problems` names why, and
    :meth:`normalise` refuses that measure only, so a bits-per-byte reward still works beside an unusable
    benchmark score.

    Raises:
        ConfigError: a non-finite value, or no measure usable at all.
    """

    best: dict[str, dict[str, float]]
    worst: dict[str, dict[str, float]]
    spec_hash: str = ""
    seeds: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        problems: dict[str, list[str]] = {m: [] for m in MEASURES}
        for m in MEASURES:
            for f in FIELDS:
                b, w = self.best.get(m, {}).get(f), self.worst.get(m, {}).get(f)
                if not (is_number(b) and is_number(w)):
                    raise ConfigError("reference runs", [f"reference {m} of the {f} field must be finite numbers, "
                                                         f"got best={b!r}, worst={w!r}"])
                if math.isclose(b, w, rel_tol=1e-6, abs_tol=1e-12):
                    problems[m].append(f"the {f} field's {m} has zero range (best = worst = {b:.6g}) at this "
                                       f"budget; a normalised reward cannot scale it: use a relative reward "
                                       f"(balanced_bpb) or give the episode more tokens")
                elif (b > w) if m == "bpb" else (b < w):
                    problems[m].append(f"the {f} field's {m} is inverted: the run spending the budget on it scored "
                                       f"{b:.6g}, the run spending none {w:.6g}; a normalised reward would reward "
                                       f"neglecting the field: use a relative reward, or more items or tokens")
        object.__setattr__(self, "_problems", problems)
        if all(problems.values()):
            raise ConfigError("reference runs", [p for m in MEASURES for p in problems[m]])

    def problems(self, measure: str) -> list[str]:
        """Why ``measure`` cannot normalise a field here (empty when it can)."""
        return list(self._problems.get(measure, [f"unknown measure {measure!r}; known: {', '.join(MEASURES)}"]))

    def normalise(self, measure: str, field: str, value: float) -> float:
        """``(worst - value) / (worst - best)``: 0 at the worst reference, 1 at the best.

        Raises:
            ConfigError: ``measure`` has a zero or inverted range here (:meth:`problems`).
        """
        if problems := self._problems.get(measure):
            raise ConfigError("reference runs", problems)
        w, b = self.worst[measure][field], self.best[measure][field]
        return (w - value) / (w - b)

    def to_json(self) -> dict:
        return {"spec_hash": self.spec_hash, "seeds": list(self.seeds), "best": self.best, "worst": self.worst}

    @classmethod
    def from_json(cls, d: dict) -> Reference:
        return cls(d["best"], d["worst"], d.get("spec_hash", ""), tuple(d.get("seeds", ())))


def field_improvement(name: str) -> Improvement:
    if name not in REWARDS:
        raise ConfigError("reward", [f"unknown reward {name!r}{suggest(name, REWARDS)}; known: {', '.join(REWARDS)}"])
    f = REWARDS[name]
    if f is None:
        raise UsageError(f"reward {name!r} is normalised by reference runs, not a relative improvement; "
                         f"use field_scores(..., reference)")
    return f


def reward_measure(name: str) -> str:
    """The measure a normalised reward (or a blend with one) normalises (``bpb`` or ``score``)."""
    normalised = [part for part in BLENDS.get(name, (name,)) if part in NORMALISED_REWARDS]
    return (normalised or [name])[0].split("_")[1]


def field_scores(name: str, now: EvalResult, space: DomainSpace, reference: Reference) -> dict[str, float]:
    """Per-field normalised scores ``s_f`` of a normalised reward."""
    measure = reward_measure(name)
    return {f: reference.normalise(measure, f, field_measure(measure, now, space, f)) for f in FIELDS}


def balanced_score(name: str, lam: float, start: EvalResult, now: EvalResult, space: DomainSpace,
                   reference: Reference | None = None) -> float:
    """``B_t`` under reward ``name`` with target weight ``lam`` (``reference`` for normalised rewards).

    Raises:
        ConfigError: unknown reward name.
        UsageError: a normalised reward without ``reference``.
    """
    if name in BLENDS:
        return sum(balanced_score(part, lam, start, now, space, reference) for part in BLENDS[name]) / len(BLENDS[name])
    if needs_reference(name):
        if reference is None:
            raise UsageError(f"reward {name!r} needs reference runs (mixagent.env.references.get_reference)")
        s = field_scores(name, now, space, reference)
        if name.endswith("_min"):
            return min(s["target"], s["source"])
        return lam * s["target"] + (1 - lam) * s["source"]
    f = field_improvement(name)
    return lam * f(start, now, space, "target") + (1 - lam) * f(start, now, space, "source")


def step_reward(name: str, lam: float, start: EvalResult, prev: EvalResult, now: EvalResult,
                space: DomainSpace, reference: Reference | None = None) -> float:
    """``B_t - B_{t-1}``."""
    return (balanced_score(name, lam, start, now, space, reference)
            - balanced_score(name, lam, start, prev, space, reference))
