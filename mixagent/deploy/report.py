"""The deploy job's report: ``report.json`` (raw: every decision with its evaluation), ``report.md`` (what a
person reads) and two plots: ``mixture.png`` (the mixture over training steps, stacked) and ``heldout.png``
(each field's mean held-out loss at every decision). ``report.json`` ``ood`` (:func:`mixagent.policies.guard.
ood_summary`) counts the decisions whose observation was outside the policy's training range, per action, with
the features and how far out; ``report.md`` shows it as a table."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from mixagent.paths import atomic_write, atomic_write_json

__all__ = ["write_report", "decision_steps", "ood_lines", "judge_lines"]


def _field_loss(ev: dict, domains: list[str], fields: list[str], field: str) -> float:
    return float(np.mean([ev["bpb"][d] for d, f in zip(domains, fields) if f == field]))


def decision_steps(r: dict) -> list[int]:
    """The optimizer step each decision of report ``r`` was taken at, from the tokens trained by then (a run
    resumed with a larger ``max_steps`` recorded its earlier decisions' progress against the old length)."""
    per_step = r["final"].get("tokens_seen", 0) / max(1, r["steps"])
    return [int(round(h["tokens_seen"] / per_step)) if per_step > 0 and "tokens_seen" in h
            else int(round(h["progress"] * r["steps"])) for h in r["history"]]


def _plots(out: Path, r: dict) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    domains, fields, hist = r["domains"], r["fields"], r["history"]
    steps = decision_steps(r)
    w = np.array([h["weights"] for h in hist])
    blues, oranges = plt.get_cmap("Blues"), plt.get_cmap("Oranges")
    n_s, n_t = fields.count("source"), fields.count("target")
    colors, i_s, i_t = [], 0, 0
    for f in fields:
        if f == "source":
            colors.append(blues(0.35 + 0.55 * i_s / max(1, n_s - 1)))
            i_s += 1
        else:
            colors.append(oranges(0.35 + 0.55 * i_t / max(1, n_t - 1)))
            i_t += 1
    fig, ax = plt.subplots(figsize=(8, 4.2))
    edges = steps + [r["steps"]]
    for k, name in enumerate(domains):  # each decision holds until the next one
        ax.stairs(w[:, : k + 1].sum(1), edges, baseline=w[:, :k].sum(1) if k else 0, fill=True, color=colors[k],
                  label=f"{name} ({fields[k]})")
    ax.set_xlim(0, r["steps"])
    ax.set_ylim(0, 1)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("domain weight")
    ax.set_title(f"Mixture over the run — policy {r['policy']} (blues = source, oranges = target)")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "mixture.png", dpi=110)
    plt.close(fig)

    unit = "byte" if r["start"].get("unit", "byte") == "byte" else "token"
    evals = [h["eval"] for h in hist]
    fig, ax = plt.subplots(figsize=(7, 4))
    for field, color in (("source", "tab:blue"), ("target", "tab:orange")):
        xs = [s for s, e in zip(steps, evals) if e is not None] + [r["steps"]]
        ys = [_field_loss(e, domains, fields, field) for e in evals if e is not None]
        ys.append(_field_loss(r["final"], domains, fields, field))
        ax.plot(xs, ys, marker="o", color=color, label=f"{field} field (mean over its domains)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(f"held-out loss [bits per {unit}]")
    ax.set_title("Held-out loss per field at each decision and at the end")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "heldout.png", dpi=110)
    plt.close(fig)
    return ["mixture.png", "heldout.png"]


def ood_lines(ood: dict | None) -> list[str]:
    """``report.md``'s paragraph (and table) on the out-of-distribution guard, from ``report.json`` ``ood``
    (empty for a report written before the guard existed)."""
    if not ood:
        return []
    how = f"`ood: {ood['mode']}`" + (f", fallback `{ood['fallback']}`" if ood["mode"] == "fallback" else "") + \
        f", tolerance {100 * ood['tolerance']:g}% of each range"
    if not ood["checked"]:
        return [f"Out-of-range guard ({how}): not checked, {ood['reason']}.", ""]
    lines = [f"Out-of-range guard ({how}): {ood['affected']} of {ood['decisions']} decisions saw features outside "
             f"the policy's training range" + ("." if not ood["affected"] else ":"), ""]
    if not ood["affected"]:
        return lines
    lines += ["| action | feature | decisions | training range | furthest value | beyond the range by |",
              "|---|---|---:|---|---:|---:|"]
    for action, a in ood["by_action"].items():
        for name, f in a["features"].items():
            rel = f" ({f['relative']:.2g} widths)" if f["relative"] is not None else ""
            lines.append(f"| {action} ({a['decisions']} decisions) | {name} | {f['decisions']} | "
                         f"[{f['lo']:+.3g}, {f['hi']:+.3g}] | {f['furthest']:+.3g} | {f['excess']:.3g}{rel} |")
    return lines + [""]


def judge_lines(r: dict) -> list[str]:
    """The judge's part of ``report.md``: per field its validity and its win rate at the start and the end,
    then its cost (none without a judge)."""
    j = r.get("judge")
    if not j:
        return []
    lines = ["", "| field | judge valid: accuracy [95% CI] | judge win rate at start | at end | change |",
             "|---|---|---:|---:|---:|"]
    for field in ("source", "target"):
        v = j["validity"].get(field, {})
        a, b = r["start"].get("judge", {}).get(field, math.nan), r["final"].get("judge", {}).get(field, math.nan)
        mark = " (**marked**: failed, kept)" if field in j.get("marked", ()) else ""
        lines.append(f"| {field} | {'yes' if v.get('valid') else 'no'}: {v.get('accuracy', math.nan):.3f} "
                     f"[{v.get('ci_low', math.nan):.3f}, {v.get('ci_high', math.nan):.3f}]{mark} | {a:.3f} | {b:.3f} | "
                     f"{b - a:+.3f} |")
    share = j.get("share_of_run_seconds", math.nan)
    return lines + ["", f"The judge ({j.get('judged_evals', 0)} judged evaluations, "
                        f"{j.get('seconds_per_judged_eval', math.nan):.1f} s each) took {100 * share:.0f}% of the "
                        f"run's time; judge reward (lam 0.5): {j['rewards']['judge']:+.4f}."]


def write_report(out: Path, r: dict) -> None:
    """Write ``report.json``, the plots and ``report.md`` into ``out`` (rank 0 only)."""
    atomic_write_json(out / "report.json", r)
    plots = _plots(out, r)
    domains, fields = r["domains"], r["fields"]
    unit = "byte" if r["start"].get("unit", "byte") == "byte" else "token"
    fallbacks = sum(h["fallback"] is not None for h in r["history"])
    lines = [f"# Deploy run `{r['name']}`", "",
             f"Policy `{r['policy']}` drove {r['model']['name']} ({r['model']['parameters']:,} parameters, "
             f"{r['dtype']} on {r['device']}) for {r['steps']} optimizer steps; {len(r['history'])} decisions"
             f" ({fallbacks} fell back to the guard's mixture).", ""]
    if r.get("mapping"):
        lines += [f"The policy acts on its own domains, mapped onto the run's: `{r['mapping']['assign']}`.", ""]
    lines += ood_lines(r.get("ood"))
    lines += [f"| field | held-out loss at start [bits/{unit}] | at end | change | score at start | at end |",
              "|---|---:|---:|---:|---:|---:|"]
    for field in ("source", "target"):
        a, b = _field_loss(r["start"], domains, fields, field), _field_loss(r["final"], domains, fields, field)
        lines.append(f"| {field} | {a:.4f} | {b:.4f} | {b - a:+.4f} | {r['start']['scores'][field]:.4f} | "
                     f"{r['final']['scores'][field]:.4f} |")
    lines += judge_lines(r)
    lines += ["", "| domain | field | first weight | last weight | mean weight |", "|---|---|---:|---:|---:|"]
    w = np.array([h["weights"] for h in r["history"]])
    for k, (d, f) in enumerate(zip(domains, fields)):
        lines.append(f"| {d} | {f} | {w[0, k]:.3f} | {w[-1, k]:.3f} | {w[:, k].mean():.3f} |")
    lines += ["", *[f"![{p}]({p})" for p in plots], ""]
    atomic_write(out / "report.md", lambda tmp: tmp.write_text("\n".join(lines)))
