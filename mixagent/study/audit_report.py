"""The headroom audit's report (``mixagent.study.audit``): per reward, mean ± std over seeds per row,
the pooled seed standard deviation, best static / best schedule / oracle and their gaps in those units,
the static grid's spread, per-field extremes, the item noise of the final score (a bootstrap over
evaluation windows and benchmark items), as ``report.json``, ``report.md``, ``static.png`` and
``schedules.png``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from mixagent.config import to_dict
from mixagent.domains import DomainSpace
from mixagent.env.evaluation import EvalResult
from mixagent.env.rewards import NORMALISED_REWARDS, REWARDS, balanced_score, needs_reference, reward_measure
from mixagent.env.spec import EnvSpec
from mixagent.paths import atomic_write, atomic_write_json, finite_json
from mixagent.rollout.record import EpisodeRecord
from mixagent.rollout.schedules import Schedule
from mixagent.study.audit import SCHEDULE_FAMILIES, AuditRun, AuditStore

__all__ = ["make_report", "format_report", "plot_report", "report_rewards", "BOOTSTRAP"]

BOOTSTRAP = 500  # resamples of evaluation windows and items


def report_rewards(spec: EnvSpec, reference=None) -> list[str]:
    """The spec's reward first, then every normalised and relative reward (normalised ones only where
    ``reference`` can normalise their measure: :meth:`~mixagent.env.rewards.Reference.problems`)."""
    names = [spec.reward.name] + [n for n in (*NORMALISED_REWARDS, "balanced_bpb", "balanced") if n in REWARDS]
    usable = [n for n in names if reference is None or not needs_reference(n)
              or not reference.problems(reward_measure(n))]
    return list(dict.fromkeys(usable))


def _resampled(ev: EvalResult, items: dict, idx: dict, space: DomainSpace) -> EvalResult:
    """``ev`` recomputed from its per-item values on resampled indices ``idx`` (windows per domain, items
    per field)."""
    nll, nbytes, owner = (np.asarray(x) for x in items["windows"])
    bpb = {}
    for d, name in enumerate(space.names):
        w = idx["windows"][d]
        bpb[name] = float(nll[w].sum() / math.log(2) / nbytes[w].sum())
    scores = {}
    for field in ("source", "target"):
        vals = [np.asarray(x) for x in items[field]]
        i = idx[field]
        scores[field] = float(np.exp(vals[0][i].sum() / vals[1][i].sum()) if len(vals) == 2 else vals[0][i].mean())
    return EvalResult(bpb, scores, dict(scores), ev.tokens_seen, ev.eval_tokens, judge=dict(ev.judge),
                      judge_marked=ev.judge_marked)  # the judge's scores are not resampled: kept as they are


def _bootstrap_indices(items: dict, space: DomainSpace, n: int, seed: int = 0) -> list[dict]:
    rng = np.random.Generator(np.random.PCG64(seed))
    owner = np.asarray(items["windows"][2]).astype(int)
    per_domain = [np.flatnonzero(owner == d) for d in range(space.k)]
    sizes = {f: len(items[f][0]) for f in ("source", "target")}
    return [{"windows": [rng.choice(w, len(w)) for w in per_domain],
             **{f: rng.integers(0, m, m) for f, m in sizes.items()}} for _ in range(n)]


def make_report(run: AuditRun) -> dict:
    """Build ``report.json``, ``report.md`` and the plots (in ``run.dir``) from the stored leaves; returns
    the report."""
    store, cfg, spec, space, natural = run.store, run.cfg, run.spec, run.space, run.natural
    start, reference, schedules = run.start, run.reference, run.schedules
    oracle_meta = json.loads((store.dir / "oracle.json").read_text()) if (store.dir / "oracle.json").exists() else None
    rows = list(schedules)
    if oracle_meta:
        rows.append(Schedule(f"oracle ({oracle_meta['trials']} TPE trials)", "oracle", tuple(oracle_meta["rhos"])))
    stored = {(r.seed, r.key): r for r in store.rows if r.extra["trial"] is None}
    rewards = report_rewards(spec, reference)
    lam = spec.reward.lam
    table = []
    for row in rows:
        got = [stored[(seed, row.key)] for seed in cfg.seeds if (seed, row.key) in stored]
        if not got:
            continue
        evals = [leaf.final_eval for leaf in got]
        entry = {"label": row.label, "family": row.family, "key": row.key, "rhos": list(row.rhos),
                 "mixture": row.mixture, "mean_rho": row.mean_rho(space, natural), "seeds": [leaf.seed for leaf in got]}
        for field in ("source", "target"):
            entry[f"{field}_bpb"] = float(np.mean([e.field_bpb(space, field) for e in evals]))
            entry[f"{field}_score"] = float(np.mean([e.scores[field] for e in evals]))
            entry[f"{field}_norm_bpb"] = float(np.mean([reference.normalise("bpb", field, e.field_bpb(space, field))
                                                       for e in evals]))
        entry["rewards"] = {}
        for name in rewards:
            vals = [balanced_score(name, lam, start, e, space, reference) for e in evals]
            entry["rewards"][name] = {"values": vals, "mean": float(np.mean(vals)),
                                      "std": float(np.std(vals, ddof=1)) if len(vals) > 1 else float("nan")}
        table.append(entry)
    summary = {name: _summary(table, name, len(cfg.seeds)) for name in rewards}
    start_items = json.loads((store.dir / "start.json").read_text())["items"]
    boot = _Bootstrap(start, start_items, space, reference, lam) if start_items else None
    noise = {name: _item_noise(table, summary[name], stored, boot, name) if boot else {}
             for name in dict.fromkeys([spec.reward.name, "normalised_bpb", "normalised_score"])}
    noise = {name: v for name, v in noise.items() if v}
    report = {"env_id": spec.env_id, "spec_hash": spec.spec_hash(), "reward": spec.reward.name, "lam": lam,
              "seeds": list(cfg.seeds), "tune_seeds": list(cfg.tune_seeds), "oracle": oracle_meta,
              "reference": reference.to_json(), "start": start.to_json(), "summary": summary,
              "item_noise": noise, "rows": table, "episode_seconds": _episode_seconds(store),
              "config": to_dict(cfg)}
    atomic_write_json(store.dir / "report.json", finite_json(report))
    text = format_report(report)
    atomic_write(store.dir / "report.md", lambda tmp: tmp.write_text(text))
    plot_report(report, spec, store.dir)
    return report


def _summary(table: list[dict], name: str, n_seeds: int) -> dict:
    """Best static, best schedule, oracle and their gaps in pooled seed standard deviations."""
    full = [r for r in table if len(r["seeds"]) == n_seeds]
    variances = [r["rewards"][name]["std"] ** 2 for r in full if len(r["seeds"]) > 1]
    pooled = float(np.sqrt(np.mean(variances))) if variances else float("nan")

    def best(families):
        cands = [r for r in full if r["family"] in families]
        return max(cands, key=lambda r: r["rewards"][name]["mean"]) if cands else None

    static = [r for r in full if r["family"] == "static"]
    b_static, b_sched, oracle = best(("static",)), best(SCHEDULE_FAMILIES), best(("oracle",))
    out = {"pooled_std": pooled, "rows": len(full)}
    for key, row in (("best_static", b_static), ("best_schedule", b_sched), ("oracle", oracle)):
        if row:
            out[key] = {"label": row["label"], "mean": row["rewards"][name]["mean"], "std": row["rewards"][name]["std"]}
    if b_static:
        m = b_static["rewards"][name]["mean"]
        for key in ("best_schedule", "oracle"):
            if key in out:
                out[key]["gap"] = out[key]["mean"] - m
                out[key]["gap_in_std"] = (out[key]["mean"] - m) / pooled if pooled > 0 else float("nan")
        means = [r["rewards"][name]["mean"] for r in static]
        out["static_spread"] = max(means) - min(means)
        out["static_spread_in_std"] = out["static_spread"] / pooled if pooled > 0 else float("nan")
    if b_sched and b_static:  # a verdict needs >= 3 seeds
        out["bar_met"] = bool(n_seeds >= 3 and out["best_schedule"]["gap_in_std"] >= 3
                              and out["static_spread_in_std"] >= 5)
    for field in ("source", "target"):
        key = f"{field}_norm_bpb"
        top = max(full, key=lambda r: r[key]) if full else None
        low = min(full, key=lambda r: r[key]) if full else None
        if top:
            out[f"{field}_extremes"] = {"best": [top["label"], top[key]], "worst": [low["label"], low[key]]}
    return out


class _Bootstrap:
    """Shared resamples of the evaluation windows and benchmark items (the same indices for every row and
    reward, so gaps are paired), with the base model's evaluation resampled once."""

    def __init__(self, start: EvalResult, start_items: dict, space: DomainSpace, reference, lam: float) -> None:
        self.space, self.reference, self.lam = space, reference, lam
        self.idx = _bootstrap_indices(start_items, space, BOOTSTRAP)
        self.starts = [_resampled(start, start_items, i, space) for i in self.idx]
        self.windows_per_domain = int(np.bincount(np.asarray(start_items["windows"][2]).astype(int)).min())
        self.items = {f: len(start_items[f][0]) for f in ("source", "target")}

    def scores(self, name: str, row: EpisodeRecord) -> np.ndarray:
        """``(BOOTSTRAP,)`` final scores of audit row ``row`` under reward ``name``, one per resample."""
        ev, items = row.final_eval, row.extra["items"]
        return np.array([balanced_score(name, self.lam, s0, _resampled(ev, items, i, self.space), self.space,
                                        self.reference) for s0, i in zip(self.starts, self.idx)])


def _item_noise(table: list[dict], summary: dict, leaves: dict, boot: _Bootstrap, name: str) -> dict:
    """Bootstrap over evaluation windows and benchmark items: the std of the final score of the best
    static row (mean over seeds of its per-seed std) and of its paired gap to the best schedule."""
    if "best_static" not in summary:
        return {}
    by_label = {r["label"]: r for r in table}
    static = by_label[summary["best_static"]["label"]]
    sched = by_label.get(summary.get("best_schedule", {}).get("label"))
    score_sd, gap_sd = [], []
    for seed in static["seeds"]:
        va = boot.scores(name, leaves[(seed, static["key"])])
        score_sd.append(va.std(ddof=1))
        if sched and (seed, sched["key"]) in leaves:
            gap_sd.append((boot.scores(name, leaves[(seed, sched["key"])]) - va).std(ddof=1))
    # the reference extremes stay fixed (their per-item values are not stored), so score_std also counts the
    # item-difficulty shift the references would share: an upper bound. The paired gap has no such term.
    out = {"resamples": BOOTSTRAP, "score_std": float(np.mean(score_sd)), "references_resampled": False,
           "windows_per_domain": boot.windows_per_domain, "items": boot.items}
    if gap_sd:
        out["gap_std"] = float(np.mean(gap_sd))
        gap = summary["best_schedule"].get("gap", float("nan"))
        out["gap_over_noise"] = gap / out["gap_std"] if out["gap_std"] > 0 else float("nan")
    return out


def _episode_seconds(store: AuditStore) -> float | None:
    """Median wall time of one whole episode: the oracle's trials (one schedule per tree, no forks); ``None``
    without an oracle."""
    times = [row.extra["seconds"] for row in store.rows if row.extra["trial"] is not None]
    return float(np.median(times)) if times else None


def _fmt(x: float | None, digits: int = 4) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:+.{digits}f}"


def format_report(report: dict) -> str:
    """The report as markdown: summary per reward, item noise, and every row."""
    name = report["reward"]
    lines = [f"# Headroom audit: {report['env_id']} (spec {report['spec_hash']})", "",
             f"Held-out seeds {report['seeds']}; reward `{name}` (lam {report['lam']}); "
             + (f"oracle tuned on seeds {report['tune_seeds']} ({report['oracle']['budget']})." if report["oracle"]
                else "no oracle row.") + "", "",
             "| reward | pooled seed std | best static | best schedule | gap (std) | oracle | gap (std) "
             "| static spread (std) | bar met |",
             "|---|---:|---|---|---:|---|---:|---:|---|"]
    for r, s in report["summary"].items():
        bs, sc, orc = s.get("best_static", {}), s.get("best_schedule", {}), s.get("oracle", {})
        lines.append(
            f"| `{r}` | {s['pooled_std']:.4f} | {bs.get('label', '-')} {_fmt(bs.get('mean'))} "
            f"| {sc.get('label', '-')} {_fmt(sc.get('mean'))} | {_fmt(sc.get('gap_in_std'), 1)} "
            f"| {orc.get('label', '-')} {_fmt(orc.get('mean'))} | "
            f"{_fmt(orc.get('gap_in_std'), 1)} | {_fmt(s.get('static_spread_in_std'), 1)} | "
            f"{'yes' if s.get('bar_met') else 'no'} |")
    for reward, noise in report["item_noise"].items():
        gap = (f"; paired gap (best schedule - best static) std {noise['gap_std']:.4f}, gap / noise "
               f"{_fmt(noise.get('gap_over_noise'), 1)}") if "gap_std" in noise else ""
        lines += ["", f"Item noise of `{reward}` ({noise['resamples']} bootstrap resamples over "
                      f"{noise['windows_per_domain']}+ windows per domain and {noise['items']} benchmark items): "
                      f"final score std {noise['score_std']:.4f} (an upper bound: the reference extremes are held "
                      f"fixed){gap}."]
    s = report["summary"][name]
    for field in ("source", "target"):
        if f"{field}_extremes" in s:
            e = s[f"{field}_extremes"]
            lines.append(f"- {field} field (normalised bits per byte): best {e['best'][0]} {e['best'][1]:+.3f}, "
                         f"worst {e['worst'][0]} {e['worst'][1]:+.3f}")
    lines += ["", "| row | family | mean rho | source bpb | target bpb | target score | s_source | s_target "
                  f"| `{name}` |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in sorted(report["rows"], key=lambda r: -r["rewards"][name]["mean"]):
        v = r["rewards"][name]
        sd = "" if v["std"] is None or not math.isfinite(v["std"]) else f" ± {v['std']:.4f}"
        lines.append(f"| {r['label']} | {r['family']} | {r['mean_rho']:.2f} | {r['source_bpb']:.4f} "
                     f"| {r['target_bpb']:.4f} | {r['target_score']:.4f} | {r['source_norm_bpb']:+.3f} "
                     f"| {r['target_norm_bpb']:+.3f} | {v['mean']:+.4f}{sd} |")
    return "\n".join(lines) + "\n"


def plot_report(report: dict, spec: EnvSpec, out: Path) -> None:
    """``static.png`` (score vs rho, per-field normalised bits per byte) and ``schedules.png`` (the best
    rows' replay share per step, with the learning rate)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mixagent.env.proxy import lr_at

    name = report["reward"]
    rows = report["rows"]
    static = sorted([r for r in rows if r["family"] == "static" and not r["mixture"]], key=lambda r: r["mean_rho"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    ax = axes[0]
    ax.errorbar([r["mean_rho"] for r in static], [r["rewards"][name]["mean"] for r in static],
                yerr=[r["rewards"][name]["std"] or 0 for r in static], marker="o", capsize=3, label="static rho")
    s = report["summary"][name]
    for key, style in (("best_schedule", "--"), ("oracle", ":")):
        if key in s:
            ax.axhline(s[key]["mean"], ls=style, color="C3" if key == "oracle" else "C2",
                       label=f"{s[key]['label']} ({s[key]['mean']:+.3f})")
    for r in rows:
        if r["mixture"]:
            ax.scatter([r["mean_rho"]], [r["rewards"][name]["mean"]], marker="x", s=50, zorder=3, label=r["label"])
    ax.set_xlabel("replay share rho (source field)")
    ax.set_ylabel(f"final {name} (mean ± std over {len(report['seeds'])} seeds)")
    ax.set_title(f"{report['env_id']}: static mixtures vs schedules")
    ax.legend(fontsize=7)
    ax = axes[1]
    for field, c in (("source", "C0"), ("target", "C1")):
        ax.plot([r["mean_rho"] for r in static], [r[f"{field}_norm_bpb"] for r in static], marker="o", color=c,
                label=f"{field} (static)")
        sched = [r for r in rows if r["family"] in SCHEDULE_FAMILIES + ("oracle",)]
        ax.scatter([r["mean_rho"] for r in sched], [r[f"{field}_norm_bpb"] for r in sched], color=c, marker=".",
                   alpha=0.5, label=f"{field} (schedules)")
    ax.set_xlabel("mean replay share rho")
    ax.set_ylabel("normalised bits-per-byte score s_f")
    ax.set_title("per field: 1 = the field's best reference run")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "static.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    by_label = {r["label"]: r for r in rows}
    T = spec.steps
    for key, c in (("best_static", "C0"), ("best_schedule", "C2"), ("oracle", "C3")):
        if key in s:
            r = by_label[s[key]["label"]]
            rhos = r["rhos"] if r["rhos"] else [r["mean_rho"]] * T
            ax.step(range(T + 1), list(rhos) + [rhos[-1]], where="post", color=c, lw=2,
                    label=f"{key.replace('_', ' ')}: {r['label']} ({s[key]['mean']:+.3f})")
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("re-weighting step")
    ax.set_ylabel("replay share rho (source field)")
    lr_ax = ax.twinx()
    steps = np.linspace(0, T, 200)
    lr_ax.plot(steps, [lr_at(min(int(x * 100), 100 * T - 1), 100 * T, spec.optim) / spec.optim.lr for x in steps],
               color="grey", alpha=0.5, ls="--")
    lr_ax.set_ylabel("learning rate / peak (dashed)")
    ax.set_title(f"{report['env_id']}: mixture over the run")
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(out / "schedules.png", dpi=110)
    plt.close(fig)
