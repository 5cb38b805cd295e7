"""The training range of a learned policy's input features: recorded when it is trained, checked before each
decision of a deployment (:mod:`mixagent.policies.guard`), clipped into on request.

A range table maps each feature name to ``[lo, hi]``, the least and the largest value of that feature over the
observations the policy was trained on. An artifact stores its tables in ``meta.json`` under
``training.feature_ranges`` (with ``format`` and ``rows``, the number of training observations), which is outside
the policy's cache identity (:func:`mixagent.rollout.identity.policy_key`): recording the ranges does not change
what the policy does. A value is out of range when it lies more than ``tolerance * (hi - lo) + FLOAT_SLACK``
beyond the nearer end (``tolerance`` is a share of the range's width; ``FLOAT_SLACK`` absorbs float32 rounding,
so a feature that was constant in training is not flagged for noise).

A learned policy that knows its ranges implements :class:`RangeChecked`; the baselines and the published
methods do not, and are never checked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np

from mixagent.domains import DomainWeights

__all__ = ["RANGES_FORMAT", "FLOAT_SLACK", "GUARD_VERSION", "DOMAIN_RANGES", "OutOfRange", "RangeChecked",
           "value_ranges", "bounds", "outside", "table_problems"]

RANGES_FORMAT = 1
FLOAT_SLACK = 1e-6
# the deploy guard's rules and defaults (mixagent.policies.guard): part of the identity of every stored run of a
# learned policy (a run stored before the guard, or under other rules, is another run); bump it when the
# guard's defaults or its check change
GUARD_VERSION = 1


class OutOfRange(NamedTuple):
    """One feature of one observation outside its training range.

    Attributes:
        feature: its name (``target_score``; a per-domain feature with its domain, ``loss_rel[algebra]``).
        value: what the observation gave.
        lo, hi: its training range.
    """

    feature: str
    value: float
    lo: float
    hi: float

    @property
    def excess(self) -> float:
        """How far beyond the nearer end of the range the value lies (> 0), in the feature's units."""
        return self.value - self.hi if self.value > self.hi else self.lo - self.value

    @property
    def relative(self) -> float | None:
        """:attr:`excess` in widths of the range (``None`` for a range of zero width)."""
        width = self.hi - self.lo
        return self.excess / width if width > 0 else None

    def to_json(self) -> dict[str, Any]:
        """``{feature, value, lo, hi, excess, relative}``, rounded to 6 significant digits."""
        rel = self.relative
        return {"feature": self.feature, "value": _r(self.value), "lo": _r(self.lo), "hi": _r(self.hi),
                "excess": _r(self.excess), "relative": None if rel is None else _r(rel)}


def _r(x: float) -> float:
    return float(f"{float(x):.6g}")


@runtime_checkable
class RangeChecked(Protocol):
    """A learned policy that can tell whether an observation lies in its training range, and act on the
    observation's features clipped into it (:class:`~mixagent.policies.per_domain.PerDomainPolicy`,
    :class:`~mixagent.policies.artifact.AgentPolicy`)."""

    path: Any

    @property
    def feature_ranges(self) -> dict[str, Any] | None:
        """The artifact's ``training.feature_ranges`` (``None``: not recorded)."""

    def out_of_range(self, observation: np.ndarray, tolerance: float = 0.05) -> list[OutOfRange]:
        """The features of ``observation`` outside the training range (empty when it is in range); changes no
        running state."""

    def act_clipped(self, observation: np.ndarray) -> DomainWeights:
        """``act`` on the observation's features clipped into the training range."""


# features whose range is their whole domain, not the training sample: the run's progress t/T is in [0, 1] by
# definition, and a deployment deciding more often than the T training segments must be able to act late in the run
DOMAIN_RANGES = {"progress": (0.0, 1.0)}


def value_ranges(names: Sequence[str], values: np.ndarray) -> dict[str, list[float]]:
    """``{name: [min, max]}`` of ``(N, F)`` ``values`` over the ``N`` rows, for the ``F`` ``names`` (``N >= 1``;
    non-finite values are left out, and a feature with none finite gets ``[0, 0]``); a feature of
    :data:`DOMAIN_RANGES` gets its domain."""
    values = np.asarray(values, np.float64).reshape(-1, len(names))
    out = {}
    for j, name in enumerate(names):
        col = values[:, j][np.isfinite(values[:, j])]
        out[name] = [float(col.min()), float(col.max())] if col.size else [0.0, 0.0]
        if name in DOMAIN_RANGES:
            out[name] = list(DOMAIN_RANGES[name])
    return out


def bounds(table: Mapping[str, Sequence[float]], names: Sequence[str]) -> np.ndarray:
    """``(F, 2)`` ``[lo, hi]`` of ``names`` from a range table."""
    return np.array([[float(table[n][0]), float(table[n][1])] for n in names], np.float64).reshape(-1, 2)


def outside(names: Sequence[str], values: np.ndarray, lohi: np.ndarray, tolerance: float) -> list[OutOfRange]:
    """The entries of ``values`` (``(F,)``) outside their ``(F, 2)`` ranges ``lohi`` by more than
    ``tolerance * width + FLOAT_SLACK``, named by ``names``."""
    values = np.asarray(values, np.float64).reshape(-1)
    lo, hi = lohi[:, 0], lohi[:, 1]
    slack = tolerance * (hi - lo) + FLOAT_SLACK
    bad = (values < lo - slack) | (values > hi + slack)
    return [OutOfRange(names[j], float(values[j]), float(lo[j]), float(hi[j])) for j in np.flatnonzero(bad)]


def table_problems(table: Any, names: Sequence[str], where: str) -> list[str]:
    """What is wrong with range table ``table`` for features ``names`` (``where``: its path in ``meta.json``):
    missing names, and entries that are not ``[lo, hi]`` of finite numbers with ``lo <= hi``."""
    if not isinstance(table, Mapping):
        return [f"{where} is {type(table).__name__}; expected {{feature: [lo, hi]}}"]
    problems = []
    missing = [n for n in names if n not in table]
    if missing:
        problems.append(f"{where} lacks features {missing}")
    for n in names:
        v = table.get(n)
        if n in table and not (isinstance(v, list | tuple) and len(v) == 2
                               and all(isinstance(x, int | float) and not isinstance(x, bool) and np.isfinite(x)
                                       for x in v) and v[0] <= v[1]):
            problems.append(f"{where}.{n} is {v!r}; expected [lo, hi] with finite lo <= hi")
    return problems
