"""The comparison's report (``mixagent.study.compare``): ``table.md``, ``table.json``, ``report.md`` and the
plots (``mixtures.png``, ``dynamics.png``, ``front.png``, ``efficiency.png``) in the comparison's directory.

* **Score**: the env reward's final balanced score, mean ± standard deviation (ddof 1) over the evaluation
  seeds; the *pooled seed standard deviation* (root mean of the non-oracle rows' variances) is the noise
  unit: every gap is given in it, and a gap under 2 units is called within noise.
* **Target data efficiency** (Ibrahim et al.'s replay metric, as in the seed paper): ``L(D) = A / D^B + C``
  fitted to the target-only family's final target-field bits per byte against its target tokens ``D``
  (``mixagent.policies.methods.fit_power_law``); a policy's efficiency is the ``D`` target-only training
  needs to reach its target loss, divided by the target tokens it used (``inf`` below the fit's floor C).
* **Oracles** (labelled): the audit's hindsight-best static row and hindsight-best schedule on the same
  seeds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from mixagent.domains import DomainSpace
from mixagent.env.evaluation import EvalResult
from mixagent.env.rewards import balanced_score, field_scores, needs_reference
from mixagent.paths import atomic_write, atomic_write_json
from mixagent.rollout.identity import policy_identity
from mixagent.rollout.schedules import Schedule
from mixagent.study.compare import CompareConfig, CompareRun, audit_rows, policy_kind

__all__ = ["make_compare_report", "report_episodes", "efficiency_fit", "inverse_tokens", "field_view", "format_table",
           "rank_table"]

NOISE_UNITS = 2.0  # a gap smaller than this many pooled seed standard deviations is within noise


def field_view(run: CompareRun, ev: EvalResult) -> tuple[float, float]:
    """``(source, target)`` per-field score of an evaluation: the normalised score when the env's reward is
    normalised (0 = the reference that ignores the field, 1 = the one spending everything on it), else the
    relative bits-per-byte improvement over the start."""
    space = run.space
    if needs_reference(run.spec.reward.name) and run.reference is not None:
        name = run.spec.reward.name.removesuffix("_min")
        s = field_scores(name, ev, space, run.reference)
        return s["source"], s["target"]
    start = run.start
    return tuple((start.field_bpb(space, f) - ev.field_bpb(space, f)) / start.field_bpb(space, f)  # type: ignore
                 for f in ("source", "target"))


def efficiency_fit(family: list[dict]) -> tuple[float, float, float] | None:
    """``(A, B, C)`` of ``L(D) = A / D^B + C`` on the target-only family (``D`` in segments), or ``None``
    with fewer than 3 budgets, a failed or flat fit (``B < 0.01``), or a family whose target loss does not
    fall as its tokens grow (e.g. under a cap on unique target tokens, where target-only repeats its data):
    then no target loss can be expressed as the target-only tokens that reach it."""
    from mixagent.policies.methods import fit_power_law

    pts = [(p["steps"], p["target_bpb"]) for p in family if math.isfinite(p["target_bpb"])]
    if len({d for d, _ in pts}) < 3:
        return None
    d, loss = np.array(sorted(pts), dtype=np.float64).T
    if np.any(np.diff(loss) >= 0):
        return None
    try:
        e, a, b = fit_power_law(d, loss, huber=False)
    except ValueError:
        return None
    return (math.exp(a), b, math.exp(e)) if b >= 0.01 else None


def inverse_tokens(fit: tuple[float, float, float], loss: float) -> float:
    """``D`` with ``A / D^B + C = loss`` (``inf`` at or below the floor ``C``, or for a flat fit)."""
    a, b, c = fit
    if loss <= c or b <= 0:
        return math.inf
    log_d = (math.log(a) - math.log(loss - c)) / b  # in log space: a flat fit (small B) overflows
    return math.inf if log_d > 700 else math.exp(log_d)


def _efficiency(fit: tuple[float, float, float] | None, target_bpb: float, used: float) -> float | None:
    if fit is None or used <= 0:
        return None
    return inverse_tokens(fit, target_bpb) / used


def _mean_weights(per_episode: list[list[list[float]]], steps: int, k: int) -> list[list[float]]:
    """``(T, K)`` mean mixture per step over episodes; a diverged episode's missing steps are left out."""
    padded = np.full((len(per_episode), steps, k), np.nan)
    for i, w in enumerate(per_episode):
        padded[i, : len(w)] = w
    with np.errstate(invalid="ignore"):
        mean = np.nanmean(padded, axis=0) if np.isfinite(padded).any() else padded[0]
    return np.nan_to_num(mean, nan=0.0).tolist()


def _rows(run: CompareRun) -> list[dict]:
    space, spec, seeds = run.space, run.spec, list(run.cfg.seeds)
    fit = efficiency_fit(run.family)
    rows = []
    for label, eps in run.episodes.items():
        evals = [EvalResult.from_json(e["final"]) for e in eps]
        rows.append({"policy": label, "identity": policy_identity(run.labels[label]),
                     "kind": policy_kind(run.labels[label]), "seeds": seeds,
                     "scores": [float(e["balanced"]) for e in eps],
                     "source_bpb": float(np.mean([e.field_bpb(space, "source") for e in evals])),
                     "target_bpb": float(np.mean([e.field_bpb(space, "target") for e in evals])),
                     "fields": [field_view(run, e) for e in evals],
                     "target_tokens": float(np.mean([e["target_tokens"] for e in eps])),
                     "weights": _mean_weights([e["weights"] for e in eps], spec.steps, space.k),
                     "extra_episodes": run.extra_episodes.get(label, 0),
                     "diverged": sum(bool(e["truncated"]) for e in eps)})
        fell_back = [int(e.get("policy", {}).get("fallbacks", 0)) for e in eps]
        if any(fell_back):  # decisions the policy could not make: the run kept its last (or initial) mixture
            rows[-1]["fallbacks"] = {"decisions": sum(fell_back), "of": sum(len(e["weights"]) for e in eps)}
        if run.cfg.tuning:
            rows[-1]["tuning"] = _tuning_cell(run, label)
    audit = run.audit.get("rows", {})
    if audit:
        start = run.start
        natural = np.asarray(run.audit["natural"])

        def static(key: str) -> bool:
            return Schedule.from_key(key).is_static

        def weights(key: str) -> list[list[float]]:
            sched = Schedule.from_key(key)
            return [sched.weights(space, natural, t).tolist() for t in range(spec.steps)]

        scored = {k: [balanced_score(spec.reward.name, spec.reward.lam, start, EvalResult.from_json(e), space,
                                     run.reference) for e in evs] for k, evs in audit.items()}
        for label, pick in (("oracle: best static (hindsight)", static),
                            ("oracle: best schedule (hindsight)", lambda k: not static(k))):
            keys = [k for k in scored if pick(k)]
            if not keys:
                continue
            key = max(keys, key=lambda k: float(np.mean(scored[k])))
            evals = [EvalResult.from_json(e) for e in audit[key]]
            w = weights(key)
            tokens = float(sum(np.asarray(x)[space.field_mask("target")].sum() for x in w))
            rows.append({"policy": label, "kind": "oracle", "seeds": seeds, "scores": scored[key], "audit_row": key,
                         "source_bpb": float(np.mean([e.field_bpb(space, "source") for e in evals])),
                         "target_bpb": float(np.mean([e.field_bpb(space, "target") for e in evals])),
                         "fields": [field_view(run, e) for e in evals], "target_tokens": tokens, "weights": w,
                         "extra_episodes": None, "diverged": 0})
    for r in rows:
        r["mean"] = float(np.mean(r["scores"]))
        r["std"] = float(np.std(r["scores"], ddof=1)) if len(r["scores"]) > 1 else 0.0
        r["efficiency"] = _efficiency(fit, r["target_bpb"], r["target_tokens"])
    methods = [r for r in rows if r["kind"] != "oracle"]
    pooled = float(math.sqrt(np.mean([r["std"] ** 2 for r in methods]))) if len(seeds) > 1 else float("nan")
    best = max(methods, key=lambda r: r["mean"])
    for rank, r in enumerate(sorted(methods, key=lambda r: -r["mean"]), 1):
        r["rank"] = rank
    for r in rows:
        r["gap_to_best"] = r["mean"] - best["mean"]
        r["gap_std"] = r["gap_to_best"] / pooled if pooled and math.isfinite(pooled) and pooled > 0 else None
        r["within_noise"] = r["gap_std"] is not None and abs(r["gap_std"]) < NOISE_UNITS
    return rows


def _tuning_cell(run: CompareRun, label: str) -> str:
    """What the equal tuning budget did for a row: the chosen point, ``defaults`` for a method with
    hyperparameters that was not tuned, ``—`` for one without any."""
    from mixagent.study.compare import has_hyperparameters

    t = run.tuning.get(label)
    if t is not None:
        chosen = t["chosen"].partition(":")[2]
        return f"{chosen} (best of {len(t['scores'])})"
    return "defaults" if has_hyperparameters(run.labels[label]) else "—"


def _fmt_eff(x: float | None) -> str:
    if x is None:
        return "—"
    return "> fit floor" if math.isinf(x) else f"{x:.2f}x"


def format_table(rows: list[dict], reward: str) -> str:
    """The table in markdown; a ``tuned`` column when the comparison had a tuning budget; a row whose policy
    fell back (kept its mixture at decisions it could not make) is marked with how many decisions did."""
    tuned = any("tuning" in r for r in rows)
    lines = [f"| rank | policy | kind | {reward} (mean ± std) | gap to best [pooled std] | source bpb | target bpb | "
             f"target data efficiency | extra episodes |" + (" tuned |" if tuned else ""),
             "|---:|---|---|---:|---:|---:|---:|---:|---:|" + ("---|" if tuned else "")]
    for r in sorted(rows, key=lambda r: (r["kind"] == "oracle", -r["mean"])):
        gap = f"{r['gap_to_best']:+.4f}" + (f" [{r['gap_std']:+.1f}]" if r["gap_std"] is not None else "")
        if r["gap_to_best"] == 0 and r["kind"] != "oracle":
            gap = "best"
        name = r["policy"] + (f" ({r['diverged']} diverged)" if r["diverged"] else "")
        if r.get("fallbacks"):
            name += f" (**fell back** at {r['fallbacks']['decisions']} of {r['fallbacks']['of']} decisions)"
        lines.append(f"| {r.get('rank', '—')} | {name} | {r['kind']} | {r['mean']:+.4f} ± {r['std']:.4f} | {gap} | "
                     f"{r['source_bpb']:.4f} | {r['target_bpb']:.4f} | {_fmt_eff(r['efficiency'])} | "
                     f"{'—' if r['extra_episodes'] is None else r['extra_episodes']} |"
                     + (f" {r.get('tuning', '—')} |" if tuned else ""))
    return "\n".join(lines)


def make_compare_report(run: CompareRun) -> dict:
    """Write ``table.md``, ``table.json``, ``report.md`` and the plots into ``run.dir``; returns the table."""
    rows = _rows(run)
    methods = [r for r in rows if r["kind"] != "oracle"]
    pooled = math.sqrt(np.mean([r["std"] ** 2 for r in methods])) if len(run.cfg.seeds) > 1 else float("nan")
    fit = efficiency_fit(run.family)
    table = {"version": 1, "name": run.cfg.name, "env_id": run.spec.env_id, "spec_hash": run.spec.spec_hash(),
             "reward": run.spec.reward.name, "seeds": list(run.cfg.seeds),
             "pooled_seed_std": pooled if math.isfinite(pooled) else None,  # one seed: no noise estimate
             "noise_units": NOISE_UNITS, "rows": rows, "regmix": run.regmix, "target_only_family": run.family,
             "efficiency_fit": dict(zip(("A", "B", "C"), fit)) if fit else None,
             "audit": run.audit.get("dir"), "domains": list(run.space.names)}
    if run.tuning:
        table["tuning"] = run.tuning
    md = format_table(rows, run.spec.reward.name)
    atomic_write(run.dir / "table.md", lambda tmp: tmp.write_text(md + "\n"))
    json_rows = [{**r, "efficiency": None if r["efficiency"] is None or math.isinf(r["efficiency"])
                  else r["efficiency"],
                  "efficiency_below_fit_floor": r["efficiency"] is not None and math.isinf(r["efficiency"])}
                 for r in rows]  # JSON has no infinity: a target loss below the fit's floor C is flagged
    atomic_write_json(run.dir / "table.json", {**table, "rows": json_rows})
    plots = _plot(run, rows, fit)
    text = _report_md(run, rows, table, md, plots)
    atomic_write(run.dir / "report.md", lambda tmp: tmp.write_text(text))
    return table


def report_episodes(env, episodes: Mapping[str, list[dict]], labels: Mapping[str, str], seeds: list[int],
                    out: Path, name: str, audit_root: str = "audits") -> dict:
    """The comparison's report (table, ``report.md``, plots) for episodes run elsewhere on the episode engine,
    e.g. the agent's online evaluation: scored with ``env``'s reward, beside the audit's oracles when an audit
    of the env's spec covers ``seeds``; no target-only family, so no data-efficiency column.

    Args:
        env: the env the episodes ran in (its spec, space, natural shares and reference extremes).
        episodes: ``{label: [episode record per seed]}`` (:func:`mixagent.rollout.engine.roll_policies`).
        labels: ``{label: policy spec}`` (the kind column: baseline, heuristic, online, agent).
        out: the directory written (created).
    """
    cfg = CompareConfig(name=name, env=env.spec_.env_id, policies=tuple(labels.values()), seeds=tuple(seeds),
                        tune_seeds=(), efficiency_steps=(), audit_root=audit_root)
    out.mkdir(parents=True, exist_ok=True)
    first = next(iter(episodes.values()))[0]
    run = CompareRun(cfg, env.spec_, env.space, env.natural.values.copy(), env.reference, out, dict(episodes),
                     dict(labels), {}, None, [], audit_rows(cfg, env.spec_), EvalResult.from_json(first["start"]))
    return make_compare_report(run)


def _report_md(run: CompareRun, rows: list[dict], table: dict, md: str, plots: list[str]) -> str:
    methods = sorted([r for r in rows if r["kind"] != "oracle"], key=lambda r: -r["mean"])
    best = methods[0]
    tied = [r["policy"] for r in methods[1:] if r["within_noise"]]
    cfg = run.cfg
    lines = [f"# Comparison `{cfg.name}` on {run.spec.env_id} (spec {run.spec.spec_hash()})", "",
             f"Reward: `{run.spec.reward.name}` (lam {run.spec.reward.lam}), final balanced score; evaluation seeds "
             f"{list(cfg.seeds)}"
             + (f"; preparation runs on tuning seeds {list(cfg.tune_seeds)}" if cfg.tune_seeds else "")
             + ". Pooled seed standard "
             f"deviation {table['pooled_seed_std'] or float('nan'):.4f} (the spread of one episode across seeds; "
             f"the standard error of a gap between two {len(cfg.seeds)}-seed means is sqrt(2/{len(cfg.seeds)}) of "
             f"it); gaps under {NOISE_UNITS:g} of it are called within noise.", "",
             md, "",
             f"**Strongest method: {best['policy']}** ({best['mean']:+.4f} ± {best['std']:.4f}); within noise of it: "
             f"{', '.join(tied) if tied else 'none'}."]
    oracles = [r for r in rows if r["kind"] == "oracle"]
    for r in oracles:
        lines.append(f"- {r['policy']}: audit row `{r['audit_row'][:60]}`, {r['mean']:+.4f} "
                     f"({r['gap_to_best']:+.4f} vs the strongest method).")
    if run.regmix:
        lines.append(f"- RegMix: {run.regmix['runs']} proxy runs, held-out Spearman "
                     f"{run.regmix['spearman_heldout']:.3f} "
                     f"(published 0.975-0.997 at 512 runs and larger proxies).")
    if table["efficiency_fit"]:
        f = table["efficiency_fit"]
        lines.append(f"- Target data efficiency: L(D) = {f['A']:.4f} / D^{f['B']:.3f} + {f['C']:.4f} (D in segments "
                     f"of {run.spec.segment_tokens} tokens) on target-only runs of "
                     f"{sorted(p['steps'] for p in run.family)} segments, tuning seed {cfg.tune_seeds[0]}.")
    elif run.family:
        pts = sorted((p["steps"], p["target_bpb"]) for p in run.family)
        lines.append("- Target data efficiency is not defined here: target-only runs of " + ", ".join(
            f"{d} segments reach target bpb {x:.4f}" for d, x in pts) + ". More target tokens do not make "
            "target-only training better on the target (with a cap on unique target tokens it repeats its data), "
            "so no policy's target loss maps to a number of target-only tokens.")
    if run.tuning:
        lines += ["", f"**Equal tuning budget** (tuning seeds {list(cfg.tune_seeds)}; every tuned method ran the same "
                  f"number of grid points, the best mean was evaluated):", ""]
        lines += [f"- {label}: " + ", ".join(f"`{c.partition(':')[2]}` {v:+.4f}"
                                            + (" (chosen)" if c == t["chosen"] else "")
                                            for c, v in t["scores"].items()) for label, t in run.tuning.items()]
        untuned = [r["policy"] for r in rows if r.get("tuning") == "defaults"]
        if untuned:
            lines.append(f"- run at their defaults (not tuned): {', '.join(untuned)}.")
    fell = [r for r in rows if r.get("fallbacks")]
    if fell:
        lines += ["", "**Rows that fell back** (the policy could not decide and kept its mixture; the row is not the "
                  "method as designed): " + ", ".join(f"{r['policy']} ({r['fallbacks']['decisions']} of "
                                                      f"{r['fallbacks']['of']} decisions)" for r in fell) + "."]
    lines += ["", "Extra episodes: preparation runs a method used beyond its own episode (DoReMi's and Velocitune's "
              "reference run, RegMix's proxy runs" + (", the tuning grid's runs" if run.tuning else "") + ").", ""]
    lines += [f"![{p}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def _colors(space: DomainSpace) -> list:
    import matplotlib

    src, tgt = int(space.field_mask("source").sum()), int(space.field_mask("target").sum())
    blues = matplotlib.colormaps["Blues"](np.linspace(0.35, 0.9, max(src, 1)))
    oranges = matplotlib.colormaps["Oranges"](np.linspace(0.45, 0.95, max(tgt, 1)))
    out, i, j = [], 0, 0
    for f in space.fields:
        if f == "source":
            out.append(blues[i])
            i += 1
        else:
            out.append(oranges[j])
            j += 1
    return out


def _plot(run: CompareRun, rows: list[dict], fit) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    space, T = run.space, run.spec.steps
    out = []
    ordered = sorted(rows, key=lambda r: (r["kind"] == "oracle", -r["mean"]))
    tab20 = matplotlib.colormaps["tab20"]
    # one colour per policy in every plot: tab20's strong colours first, then their light twins
    color = {r["policy"]: tab20((2 * i) % 20 + (2 * i) // 20 % 2) for i, r in enumerate(ordered)}
    # 1. mixtures over steps, one panel per policy
    n = len(ordered)
    cols = min(4, n)
    nrows = math.ceil(n / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.2 * cols, 2.4 * nrows + 0.8), sharex=True, sharey=True,
                             squeeze=False)
    colors = _colors(space)
    for ax, r in zip(axes.flat, ordered):
        w = np.asarray(r["weights"]).T
        ax.stackplot(np.arange(w.shape[1] + 1), np.concatenate([w, w[:, -1:]], axis=1), colors=colors, step="post")
        ax.set_title(f"{r['policy'][:34]}\n{r['mean']:+.4f}", fontsize=8)
        ax.set_xlim(0, T)
        ax.set_ylim(0, 1)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("re-weighting step")
    for ax in axes[:, 0]:
        ax.set_ylabel("domain weight")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in colors]
    fig.legend(handles, [f"{d} ({f})" for d, f in zip(space.names, space.fields)], loc="lower center",
               ncol=min(5, space.k), fontsize=7, frameon=False)
    fig.suptitle(f"Mixture over steps (mean over seeds; blues = source, oranges = target) — {run.spec.env_id}",
                 fontsize=9)
    fig.tight_layout(rect=(0, 0.06 + 0.02 * math.ceil(space.k / 5), 1, 0.97))
    fig.savefig(run.dir / "mixtures.png", dpi=110)
    plt.close(fig)
    out.append("mixtures.png")
    # 2. dynamics: per-field held-out bits per byte per step
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for label, eps in run.episodes.items():
        for ax, field in zip(axes, ("source", "target")):
            curves = [[EvalResult.from_json(e["start"]).field_bpb(space, field)]
                      + [EvalResult.from_json(x).field_bpb(space, field) for x in e["evals"]] for e in eps]
            m = min(len(c) for c in curves)
            ax.plot(range(m), np.mean([c[:m] for c in curves], axis=0), marker=".", color=color[label],
                    label=label[:30], lw=1.2)
    for ax, field in zip(axes, ("source", "target")):
        ax.set_xlabel("re-weighting step")
        ax.set_ylabel(f"{field}-field held-out bits per byte")
        ax.set_title(f"{field} field (lower is better; mean over seeds)", fontsize=9)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="upper right", ncol=2)
    fig.tight_layout()
    fig.savefig(run.dir / "dynamics.png", dpi=110)
    plt.close(fig)
    out.append("dynamics.png")
    # 3. source vs target final score, static front from the audit
    fig, ax = plt.subplots(figsize=(6.6, 5.4))
    audit = run.audit.get("rows", {})
    front = []
    for key, evs in audit.items():
        sched = Schedule.from_key(key)
        if sched.rhos and sched.is_static:  # the replay grid (natural and uniform are not on it)
            pts = np.array([field_view(run, EvalResult.from_json(e)) for e in evs])
            front.append((sched.rhos[0], *pts.mean(axis=0)))
    if front:
        front.sort()
        f = np.array(front)
        ax.plot(f[:, 1], f[:, 2], "-", color="0.6", lw=1, zorder=1, label="static replay front (audit)")
        for rho, x, y in front:
            ax.annotate(f"ρ={rho:g}", (x, y), fontsize=6, color="0.45", xytext=(3, -8), textcoords="offset points")
    for r in ordered:
        pts = np.asarray(r["fields"])
        m, s = pts.mean(axis=0), pts.std(axis=0, ddof=1) if len(pts) > 1 else np.zeros(2)
        marker = "*" if r["kind"] == "oracle" else "o"
        ax.errorbar(m[0], m[1], xerr=s[0], yerr=s[1], fmt=marker, ms=8 if marker == "*" else 5, capsize=2,
                    color=color[r["policy"]], label=r["policy"][:30], zorder=3)
    normalised = needs_reference(run.spec.reward.name) and run.reference is not None
    unit = "normalised score (1 = best reference)" if normalised else "relative bpb improvement"
    ax.set_xlabel(f"source field: {unit}")
    ax.set_ylabel(f"target field: {unit}")
    title = "Final source vs target (mean ± std over seeds)"
    methods = [r for r in rows if r["kind"] != "oracle"]
    pooled = math.sqrt(np.mean([r["std"] ** 2 for r in methods])) if methods else 0.0
    best = max(r["mean"] for r in methods) if methods else 0.0
    near = [r for r in rows if pooled > 0 and r["mean"] >= best - 10 * pooled]
    if 1 < len(near) < len(rows):  # zoom on the rows that compete; the rest are named in the title
        pts = np.array([np.mean(r["fields"], axis=0) for r in near])
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        pad = np.maximum((hi - lo) * 0.25, 0.01)
        ax.set_xlim(lo[0] - pad[0], hi[0] + pad[0])
        ax.set_ylim(lo[1] - pad[1], hi[1] + pad[1])
        off = [r["policy"] for r in rows if r not in near]
        title += f"\nzoomed to rows within 10 pooled std of the best; off-axis: {', '.join(off)[:90]}"
    ax.set_title(title, fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="lower left", ncol=2)
    fig.tight_layout()
    fig.savefig(run.dir / "front.png", dpi=110)
    plt.close(fig)
    out.append("front.png")
    # 4. target data efficiency
    if fit is not None:
        fig, ax = plt.subplots(figsize=(6.6, 4.6))
        d = np.array([p["steps"] for p in run.family], dtype=float)
        loss = np.array([p["target_bpb"] for p in run.family])
        grid = np.linspace(max(0.3, d.min() * 0.5), T * 1.05, 200)
        a, b, c = fit
        ax.plot(grid, a / grid ** b + c, "-", color="0.4", label=f"target-only fit {a:.3f}/D^{b:.2f}+{c:.3f}")
        ax.plot(d, loss, "ks", label="target-only runs (tuning seed)")
        for r in ordered:
            ax.plot(r["target_tokens"], r["target_bpb"], "*" if r["kind"] == "oracle" else "o",
                    color=color[r["policy"]], label=f"{r['policy'][:26]} ({_fmt_eff(r['efficiency'])})")
        ax.set_xlabel(f"target tokens used (segments of {run.spec.segment_tokens})")
        ax.set_ylabel("final target-field bits per byte")
        ax.set_title("Target data efficiency: tokens target-only needs / tokens used", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, ncol=2)
        fig.tight_layout()
        fig.savefig(run.dir / "efficiency.png", dpi=110)
        plt.close(fig)
        out.append("efficiency.png")
    return out


def rank_table(tables: list[dict]) -> str:
    """A markdown rank table across settings (one ``table.json`` per comparison): each method's rank among
    the non-oracle rows in each setting, and its mean rank."""
    names = list(dict.fromkeys(r["policy"] for t in tables for r in t["rows"] if r["kind"] != "oracle"))
    head = "| policy | " + " | ".join(f"{t.get('name', '?')} ({t['env_id']})" for t in tables) + " | mean rank |"
    lines = [head, "|---|" + "---:|" * (len(tables) + 1)]
    for n in names:
        ranks = [next((r["rank"] for r in t["rows"] if r["policy"] == n and "rank" in r), None) for t in tables]
        got = [x for x in ranks if x is not None]
        mean = f" | {np.mean(got):.1f} |" if got else " | — |"
        lines.append(f"| {n} | " + " | ".join("—" if x is None else str(x) for x in ranks) + mean)
    return "\n".join(lines)
