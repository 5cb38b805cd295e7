"""Target data efficiency over unique target budgets: ``mixagent efficiency --config configs/oracle/math-cpt-v1.yaml``.

The measure of the replay paper (Kotha & Liang, arXiv 2603.04964; ``../shared/SETTINGS.md``): the unique
target tokens that training *without replay* would need to reach a run's target loss, over the unique target
tokens the run had. Here:

1. **The target-only family**: ``target_only`` in the suite's default setting with the unique target tokens
   set to each of ``budgets`` (the same run otherwise: steps, tokens per step, LR schedule; a small budget is
   repeated, never extended), on the oracle table's held-out seeds. ``L(D) = A / D^B + C`` is fitted to the
   mean final target bits per byte over ``D`` in unique tokens (scipy least squares,
   :func:`mixagent.policies.methods.fit_power_law`). Budgets above the target tokens a target-only run trains
   add nothing (it never reaches them) and are refused.
2. **Every policy of every budget setting**: the held-out settings of the oracle table that differ from the
   default setting in the unique target tokens only (and lam, which changes no run); their scored rules (the
   oracle, SBF, probe-then-commit, the baselines) from the table's cached comparisons. For each episode: its
   final target bits per byte ``L``, the unique target tokens it had (per target domain, the tokens it trained
   up to the domain's pool: the cap is split over the target domains by natural share, in whole windows, and
   the sampler cycles through each pool; :func:`target_pools`), and its efficiency ``L^-1(L) / had``,
   infinite where ``L`` is below the fit's floor ``C``. The family's ``D`` is counted the same way.

Writes ``<out>/<suite>/efficiency/`` (``table.md``, ``table.json``, ``efficiency.png``); the family's episodes
are cached comparisons under the same directory, so a rerun trains nothing new.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np

from mixagent.errors import ConfigError
from mixagent.paths import REPO_ROOT, atomic_write, atomic_write_json
from mixagent.study.compare_report import inverse_tokens

__all__ = ["DEFAULT_BUDGETS", "run_efficiency", "unique_target_tokens", "target_pools"]

DEFAULT_BUDGETS = (16384, 32768, 65536, 131072, 262144, 524288)


def unique_target_tokens(weights: list[list[float]], pools: np.ndarray, segment_tokens: int) -> float:
    """The unique target tokens an episode had: per target domain, the tokens it trained (``sum_t`` weight x
    segment tokens, ``weights`` ``(T, K)``) up to the domain's pool of unique tokens (``pools`` ``(K,)``, 0 off
    the target field; the sampler cycles through each pool), summed."""
    trained = np.asarray(weights, dtype=np.float64).sum(axis=0) * segment_tokens
    pools = np.asarray(pools, dtype=np.float64)
    return float(np.minimum(trained, pools)[pools > 0].sum())


def target_pools(spec) -> np.ndarray:
    """``(K,)`` the unique training tokens of every target domain in ``spec``'s run (its ``target_tokens`` cap
    split by natural share into whole windows, exactly as the proxy's data are: ``DomainData.capped_train``),
    0 for source domains."""
    from mixagent.data.domain_data import DomainData
    from mixagent.data.sources import load_space
    from mixagent.env.base_model import get_base_model

    space = load_space(spec.space_path())
    base = get_base_model(spec.base_config())
    data = DomainData(space, base.tokenizer, base.tokenizer_hash)
    mask = np.asarray(space.field_mask("target"))
    streams = (data.capped_train(mask, spec.target_tokens, base.model_config.seq_len + 1) if spec.target_tokens
               else data.train)
    return np.array([float(len(t)) if m else 0.0 for t, m in zip(streams, mask)])


SCALE = 131072.0  # the fit's token unit (fit_power_law's bounds suit numbers near 1, not raw token counts)


def _fit(budgets: list[float], losses: list[float]) -> tuple[float, float, float]:
    from mixagent.policies.methods import fit_power_law

    e, a, b = fit_power_law(np.asarray(budgets, dtype=np.float64) / SCALE, np.asarray(losses), huber=False)
    if b < 0.01:
        raise ConfigError("efficiency", [f"the target-only family's loss does not fall with its unique tokens "
                                         f"(fitted exponent {b:.4f}); no loss can be expressed in tokens. Check the "
                                         f"budgets {budgets} against the tokens a run trains"])
    return math.exp(a) * SCALE ** b, b, math.exp(e)  # A / D^B with D in tokens


def run_efficiency(cfg, budgets: tuple[int, ...] = DEFAULT_BUDGETS, progress: bool = True) -> dict:
    """Run (or read from caches) the family, fit it and tabulate every budget setting (module docstring).

    Args:
        cfg: the oracle table's :class:`~mixagent.study.oracle_table.OracleConfig` (its suite, seeds, output
            root; its table must hold the budget settings).
        budgets: the family's unique target budgets (>= 3 distinct, each at most the target tokens a run trains).

    Raises:
        ConfigError: fewer than 3 budgets, a budget a run cannot reach, no oracle table, or no budget setting
            in it.
    """
    from mixagent.env.setting import load_suite
    from mixagent.study.compare import CompareConfig, run_compare
    from mixagent.study.oracle_table import heldout_episodes, load_oracle_table, tuned_run

    cfg = dataclasses.replace(cfg, anchors=())  # target bits per byte are scale-free: the reference-scale table
    suite = load_suite(REPO_ROOT / cfg.suite)
    base = suite.setting()
    trained = base.steps * base.segment_tokens
    problems = []
    if len(set(budgets)) < 3:
        problems.append(f"budgets must hold >= 3 distinct unique target budgets for the 3-parameter fit, got "
                        f"{list(budgets)}")
    decl = suite.axes.get("target_tokens", {})
    low = int(decl["range"][0]) if "range" in decl else min(decl.get("values", [1]))
    if any(not low <= b <= trained for b in budgets):
        problems.append(f"budgets {[b for b in budgets if not low <= b <= trained]}: a target-only run of "
                        f"{base.steps} x {base.segment_tokens} tokens trains {trained} target tokens and the suite's "
                        f"target_tokens axis starts at {low}; use budgets in {low}..{trained}")
    if problems:
        raise ConfigError("efficiency", problems)
    out = REPO_ROOT / cfg.out / suite.name
    table = load_oracle_table(out, suite, partial=True)
    held = suite.held_out_settings()
    axes = [a for a in base.to_json() if a not in ("target_tokens", "lam")]
    budget_rows = [r for r in table["rows"] if all(getattr(held[r["setting"]], a) == getattr(base, a) for a in axes)]
    if not budget_rows:
        raise ConfigError("efficiency", [f"the oracle table of {suite.name} has no finished setting that differs from "
                                         f"the default in its unique target tokens only; run mixagent oracle-table "
                                         f"first (e.g. --settings budget-16k)"])
    family: dict[int, list[float]] = {}
    unique: dict[int, float] = {}  # a budget's unique tokens as the run has them (whole windows per domain)
    for k, budget in enumerate(sorted(set(budgets))):
        if progress:
            print(f"\n== target-only family: {budget} unique target tokens ({k + 1}/{len(set(budgets))})", flush=True)
        setting = suite.setting({"target_tokens": budget})
        run = run_compare(CompareConfig(
            name=f"family-{budget}", env=suite.env,  # only target bits per byte are read: no reference runs
            env_overrides=(*setting.overrides(suite), "reward.name=balanced_bpb"),
            policies=("target_only",), seeds=cfg.seeds, tune_seeds=cfg.tune_seeds, regmix_runs=0,
            efficiency_steps=(), oracles=False, workers=cfg.workers, launcher=cfg.launcher,
            out=f"{cfg.out}/{suite.name}/efficiency", reuse=()))
        family[budget] = [float(e["target_bpb"]) for e in run.episodes["target_only"]]
        unique[budget] = float(target_pools(setting.spec(suite)).sum())
    xs = sorted(family)
    fit = _fit([unique[b] for b in xs], [float(np.mean(family[b])) for b in xs])
    rows = []
    for r in budget_rows:
        setting = held[r["setting"]]
        pools = target_pools(setting.spec(suite))
        extra = tuple(r.get("extra_overrides", ()))
        tuned_run(cfg, suite, r["setting"], setting, extra=extra)  # cached: its committed reference is adopted
        episodes = heldout_episodes(cfg, suite, r["setting"], setting, list(r["scores"]), report=False, extra=extra)
        for rule, eps in episodes.items():
            losses = [float(e["target_bpb"]) for e in eps]
            had = [unique_target_tokens(e["weights"], pools, setting.segment_tokens) for e in eps]
            eff = [inverse_tokens(fit, L) / h if h > 0 else math.nan for L, h in zip(losses, had)]
            rows.append({"setting": r["setting"], "target_tokens": setting.target_tokens, "rule": rule,
                         "role": _role(r, rule), "target_bpb": losses, "had": had, "efficiency": eff,
                         "target_bpb_mean": float(np.mean(losses)), "had_mean": float(np.mean(had)),
                         "needed": inverse_tokens(fit, float(np.mean(losses)))})
    result = {"suite": suite.name, "suite_hash": suite.suite_hash(), "seeds": list(cfg.seeds),
              "fit": {"A": fit[0], "B": fit[1], "C": fit[2], "unit": "unique target tokens"},
              "family": {str(b): family[b] for b in xs}, "family_unique_tokens": {str(b): unique[b] for b in xs},
              "rows": rows, "complete": not table.get("pending")}
    where = out / "efficiency"
    where.mkdir(parents=True, exist_ok=True)
    atomic_write_json(where / "table.json", _json_safe(result))
    atomic_write(where / "table.md", lambda tmp: tmp.write_text(_markdown(result)))
    _plot(result, where / "efficiency.png")
    return result


def short_rule(rule: str) -> str:
    """A rule spec for tables and legends: ``probe_commit`` without its model path."""
    return rule.split(":model=")[0] if rule.startswith("probe_commit") else rule


def _role(row: dict, rule: str) -> str:
    roles = [name for name, key in (("oracle", "oracle"), ("SBF", "sbf"), ("probe-then-commit", "probe_commit"))
             if row.get(key) == rule]
    return ", ".join(roles)


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else "inf"
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def _fmt(x: float) -> str:
    return "above the fit's floor" if math.isinf(x) else f"{x:.2f}x"


def _markdown(result: dict) -> str:
    f = result["fit"]
    lines = [f"Target data efficiency ({result['suite']}, held-out seeds {result['seeds']}): the target-only family "
             f"over unique target budgets gives L(D) = {f['A']:.4g} / D^{f['B']:.3f} + {f['C']:.4f} (D in unique "
             f"target tokens). Efficiency = the unique tokens target-only needs for a run's target loss / the unique "
             f"target tokens the run had (per target domain, the tokens it trained up to that domain's share of the "
             f"budget); mean ± std over seeds.",
             "", "| budget setting | unique target tokens | rule | role | target bpb | tokens had | efficiency |",
             "|---|---:|---|---|---:|---:|---:|"]
    for r in result["rows"]:
        eff = [e for e in r["efficiency"] if not math.isnan(e)]
        finite = [e for e in eff if math.isfinite(e)]
        text = (f"{np.mean(finite):.2f}x ± {np.std(finite, ddof=1):.2f}" if len(finite) == len(eff) > 1
                else ", ".join(_fmt(e) for e in eff))
        lines.append(f"| {r['setting']} | {r['target_tokens']} | {short_rule(r['rule'])} | {r['role']} | "
                     f"{r['target_bpb_mean']:.4f} | {r['had_mean']:.0f} | {text} |")
    if not result["complete"]:
        lines += ["", "The oracle table is unfinished: budget settings still to run are missing here."]
    return "\n".join(lines) + "\n"


def _plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9.5, 4.5))
    budgets = list(result["family"])
    xs = np.array([result["family_unique_tokens"][b] for b in budgets])
    ys = [result["family"][b] for b in budgets]
    ax.errorbar(xs, [np.mean(y) for y in ys], yerr=[np.std(y, ddof=1) if len(y) > 1 else 0 for y in ys], fmt="o",
                color="black", label="target-only (mean ± std over seeds)")
    grid = np.geomspace(xs.min() / 2, xs.max() * 2, 200)
    f = result["fit"]
    ax.plot(grid, f["A"] / grid ** f["B"] + f["C"], color="black", lw=1,
            label=f"L(D) = {f['A']:.3g}/D^{f['B']:.2f} + {f['C']:.3f}")
    markers = dict(zip(sorted({r["setting"] for r in result["rows"]}), "svD^<>pP*"))
    rules = sorted({short_rule(r["rule"]) for r in result["rows"]})
    colours = dict(zip(rules, plt.get_cmap("tab10").colors))
    for r in result["rows"]:  # hollow, nested markers: rules that chose the same mixture stay visible
        ax.scatter(r["had_mean"], r["target_bpb_mean"], marker=markers[r["setting"]],
                   s=40 + 45 * rules.index(short_rule(r["rule"])), facecolors="none",
                   edgecolors=colours[short_rule(r["rule"])], linewidths=1.5,
                   label=f"{r['setting']}: {short_rule(r['rule'])}")
    ax.set_xscale("log")
    ax.set_xlabel("unique target tokens (had)")
    ax.set_ylabel("final target bits per byte")
    ax.set_title(f"{result['suite']}: target data efficiency")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
