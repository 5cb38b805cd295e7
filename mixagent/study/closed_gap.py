"""The closed gap: how much of a per-setting search a policy recovers (``../shared/SETTINGS.md``).

The algorithm-selection measure (ASlib, Bischl et al. 2016, arXiv 1506.02465; the AS challenges, arXiv
1805.01214) with a policy P in place of the selector, the **single best fixed rule** SBF (the one static
mixture or fixed schedule with the best mean over the *training* settings) in place of the single best
solver, and the **per-setting oracle** OR (the best static mixture or two-phase schedule for that setting,
selected on tuning seeds and scored on fresh held-out seeds) in place of the virtual best solver:

    closed gap(P, s) = (P_s - SBF_s) / (OR_s - SBF_s)

with ``X_s`` the mean over setting ``s``'s held-out seeds. 0 is no better than the fixed rule, 1 as good as
the per-setting search. A setting counts only where ``OR_s - SBF_s`` exceeds ``gate`` (3) pooled seed
standard deviations (the **gate**; below it the denominator is noise). The table reports, per policy, the
mean closed gap over the gated settings with a **paired bootstrap** 95% interval (settings resampled with
replacement, and within each the seeds, the same seed draw for every row of the setting, so P, SBF and OR
stay paired), the regret ``OR_s - P_s`` in pooled std, the win rate against SBF, the worst setting, and for
named pairs the bootstrap interval of the difference of their mean closed gaps (e.g. the agent minus
probe-then-commit).

The pooled seed std of a setting is ``sqrt(mean over its noise rows of the per-row variance (ddof 1))``, as
the comparison tables compute it. The **noise rows** are fixed before any policy is judged (the oracle table
records them: the oracle, SBF and the other fixed rules it scored); a policy's own row never enters them, so
adding a policy cannot move a setting's gate. The bar's safety line is reported beside the closed gap: per
setting the **harm** ``(SBF_s - P_s)`` in pooled std, and its maximum over *every* held-out setting (gated or
not), with the settings where it exceeds ``harm_limit`` (2).

In the bootstrap, a resample in which some drawn setting's oracle margin vanishes (``OR - SBF <= 0`` on the
drawn seeds) has no defined closed gap: it is discarded, and the table says how many were.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np

from mixagent.errors import ConfigError

__all__ = ["SettingScores", "closed_gap_table", "pooled_seed_std", "single_best_fixed"]


@dataclasses.dataclass(frozen=True)
class SettingScores:
    """One held-out setting's scores.

    Args:
        setting: the setting's name (or hash).
        seeds: the held-out seeds, shared by every row (scores are paired by seed).
        scores: row name -> ``(len(seeds),)`` final scores (e.g. normalised bits per byte at the setting's lam).
        oracle: the row holding the per-setting oracle (selected on tuning seeds, scored on ``seeds``).
        sbf: the row holding the single best fixed rule.
        noise_rows: the rows the pooled seed std is taken over (empty: the oracle and SBF); never the policies
            being judged.
    """

    setting: str
    seeds: tuple[int, ...]
    scores: Mapping[str, Sequence[float]]
    oracle: str
    sbf: str
    noise_rows: tuple[str, ...] = ()

    def check(self) -> list[str]:
        where = f"setting {self.setting!r}"
        problems = [] if len(self.seeds) >= 2 else [f"{where}: needs >= 2 held-out seeds for a seed std, got "
                                                    f"{list(self.seeds)}"]
        for row in (self.oracle, self.sbf):
            if row not in self.scores:
                problems.append(f"{where}: row {row!r} (oracle or sbf) has no scores; rows: {sorted(self.scores)}")
        missing = [r for r in self.noise_rows if r not in self.scores]
        if missing:
            problems.append(f"{where}: noise rows {missing} have no scores; rows: {sorted(self.scores)}")
        for row, values in self.scores.items():
            v = np.asarray(values, dtype=float)
            if v.shape != (len(self.seeds),) or not np.all(np.isfinite(v)):
                problems.append(f"{where}: row {row!r} must give one finite score per seed {list(self.seeds)}, got "
                                f"{list(np.ravel(v))}")
        return problems

    def array(self, row: str) -> np.ndarray:
        return np.asarray(self.scores[row], dtype=float)

    def pooled_std(self) -> float:
        """The pooled seed std over :attr:`noise_rows` (the oracle and SBF when none are named)."""
        rows = self.noise_rows or (self.oracle, self.sbf)
        return pooled_seed_std({r: self.scores[r] for r in dict.fromkeys(rows)})


def pooled_seed_std(rows: Mapping[str, Sequence[float]]) -> float:
    """``sqrt(mean_r var_r)`` over the rows' per-seed scores (``ddof=1``). A row whose scores equal an earlier
    row's exactly is the same runs under two names (in a 2-domain space uniform *is* replay 0.5) and counts once."""
    distinct = {tuple(float(x) for x in v): None for v in rows.values()}
    variances = [float(np.var(np.asarray(v, dtype=float), ddof=1)) for v in distinct if len(v) > 1]
    return math.sqrt(float(np.mean(variances))) if variances else float("nan")


def single_best_fixed(means: Mapping[str, Mapping[str, float]]) -> str:
    """The rule with the best mean score over the training settings.

    Args:
        means: rule -> {training setting -> mean score}; every rule must cover the same settings.

    Raises:
        ConfigError: no rules, or rules scored on different settings.
    """
    if not means:
        raise ConfigError("single best fixed rule", ["no rules to choose from"])
    covered = {rule: frozenset(v) for rule, v in means.items()}
    first = next(iter(covered.values()))
    uneven = [rule for rule, s in covered.items() if s != first]
    if uneven or not first:
        raise ConfigError("single best fixed rule", [f"every rule must be scored on the same (non-empty) training "
                                                     f"settings; {uneven or 'none'} differ"])
    return max(means, key=lambda rule: (float(np.mean(list(means[rule].values()))), rule))


def _gap(p: np.ndarray, sbf: np.ndarray, oracle: np.ndarray) -> float:
    return float((p.mean() - sbf.mean()) / (oracle.mean() - sbf.mean()))


def closed_gap_table(settings: Sequence[SettingScores], policies: Sequence[str], gate: float = 3.0,
                     n_boot: int = 10_000, seed: int = 0,
                     differences: Sequence[tuple[str, str]] = (), harm_limit: float = 2.0) -> dict:
    """Per-setting and aggregate closed gaps (see the module docstring).

    Args:
        settings: the held-out settings' scores; every row in ``policies`` must be present in each.
        policies: the rows to score (the agent, probe-then-commit, baselines...).
        gate: the oracle's margin over SBF, in pooled seed std, for a setting to count.
        n_boot: bootstrap resamples; seed: their generator's seed (numpy ``default_rng``).
        differences: ``(a, b)`` pairs: the interval of ``mean closed gap(a) - mean closed gap(b)``.
        harm_limit: the safety line: a policy below SBF by more than this many pooled std in any setting harms.

    Returns:
        ``{"gate", "settings": [per setting: name, pooled_std, oracle_gap_std, gated, per-policy mean,
        closed_gap, regret_std, harm_std, beats_sbf], "policies": {name: {mean_closed_gap, ci95, win_rate,
        worst, n, max_harm_std, harmful}}, "differences": [{a, b, mean, ci95}], "gated": n, "total": n,
        "discarded": n}``. Aggregates are over the gated settings, except ``max_harm_std`` and ``harmful``
        (every setting); ``mean_closed_gap`` is ``None`` when none passes the gate.

    Raises:
        ConfigError: a setting with missing rows, unpaired or non-finite scores, or fewer than 2 seeds.
    """
    problems = [p for s in settings for p in s.check()]
    problems += [f"setting {s.setting!r}: policy row {p!r} missing" for s in settings for p in policies
                 if p not in s.scores]
    if problems:
        raise ConfigError("closed gap", problems)
    rows, gated = [], []
    for s in settings:
        pooled = s.pooled_std()
        sbf, oracle = s.array(s.sbf), s.array(s.oracle)
        margin = float(oracle.mean() - sbf.mean())
        passes = bool(pooled > 0 and margin > gate * pooled)
        row = {"setting": s.setting, "seeds": list(s.seeds), "pooled_std": pooled, "oracle": s.oracle,
               "sbf": s.sbf, "oracle_mean": float(oracle.mean()), "sbf_mean": float(sbf.mean()),
               "oracle_gap_std": margin / pooled if pooled > 0 else float("nan"), "gated": passes, "policies": {}}
        for p in policies:
            values = s.array(p)
            row["policies"][p] = {"mean": float(values.mean()), "std": float(values.std(ddof=1)),
                                  "closed_gap": _gap(values, sbf, oracle) if margin != 0 else None,
                                  "regret_std": float((oracle.mean() - values.mean()) / pooled) if pooled > 0
                                  else float("nan"),
                                  "harm_std": float((sbf.mean() - values.mean()) / pooled) if pooled > 0
                                  else float("nan"), "beats_sbf": bool(values.mean() > sbf.mean())}
        rows.append(row)
        if passes:
            gated.append(s)
    boot, discarded = _bootstrap(gated, policies, n_boot, seed)  # (kept resamples, len(policies)) mean gaps
    summary = {}
    for i, p in enumerate(policies):
        per = [r["policies"][p] for r in rows if r["gated"]]
        gaps = [x["closed_gap"] for x in per]
        worst = min((r for r in rows if r["gated"]), key=lambda r: r["policies"][p]["closed_gap"], default=None)
        summary[p] = {"n": len(gaps), "mean_closed_gap": float(np.mean(gaps)) if gaps else None,
                      "ci95": _interval(boot[:, i]) if gaps else None,
                      "win_rate": float(np.mean([x["beats_sbf"] for x in per])) if per else None,
                      "worst": None if worst is None else {"setting": worst["setting"],
                                                           "closed_gap": worst["policies"][p]["closed_gap"]},
                      "mean_regret_std": float(np.mean([x["regret_std"] for x in per])) if per else None,
                      "max_harm_std": max((r["policies"][p]["harm_std"] for r in rows), default=None),
                      "harmful": [r["setting"] for r in rows if r["policies"][p]["harm_std"] > harm_limit]}
    diffs = []
    for a, b in differences:
        ia, ib = list(policies).index(a), list(policies).index(b)
        mean = (summary[a]["mean_closed_gap"] - summary[b]["mean_closed_gap"]) if gated else None
        diffs.append({"a": a, "b": b, "mean": mean, "ci95": _interval(boot[:, ia] - boot[:, ib]) if gated else None})
    return {"gate": gate, "harm_limit": harm_limit, "n_boot": n_boot, "seed": seed, "discarded": discarded,
            "gated": len(gated), "total": len(rows), "settings": rows, "policies": summary, "differences": diffs}


def _bootstrap(settings: Sequence[SettingScores], policies: Sequence[str], n_boot: int,
               seed: int) -> tuple[np.ndarray, int]:
    """``(kept, len(policies))`` mean closed gaps over resampled settings and, within each, resampled seeds
    (one seed draw per setting and resample, shared by its rows: paired), and how many of the ``n_boot``
    resamples were discarded (a drawn setting whose oracle margin vanished on its drawn seeds)."""
    out = np.zeros((n_boot, len(policies)))
    if not settings:
        return out, 0
    keep = np.ones(n_boot, dtype=bool)
    rng = np.random.default_rng(seed)
    arrays = [(np.stack([s.array(p) for p in policies]), s.array(s.sbf), s.array(s.oracle)) for s in settings]
    for b in range(n_boot):
        picks = rng.integers(len(settings), size=len(settings))
        total = np.zeros(len(policies))
        for k in picks:
            rows, sbf, oracle = arrays[k]
            idx = rng.integers(sbf.size, size=sbf.size)
            denominator = oracle[idx].mean() - sbf[idx].mean()
            if denominator <= 0:  # no defined gap on these seeds: the whole resample is discarded
                keep[b] = False
                break
            total += (rows[:, idx].mean(axis=1) - sbf[idx].mean()) / denominator
        out[b] = total / len(picks)
    if not keep.any():
        raise ConfigError("closed gap", ["every bootstrap resample drew a setting whose oracle margin vanished on "
                                         "its drawn seeds: too few seeds for an interval; score more held-out "
                                         "seeds"])
    return out[keep], int((~keep).sum())


def _interval(samples: np.ndarray) -> list[float]:
    lo, hi = np.percentile(samples, [2.5, 97.5])
    return [float(lo), float(hi)]
