"""The closed gap of policies over an oracle table's held-out settings:
``mixagent closed-gap --config configs/closed_gap/math-cpt-v1.yaml``.

The measure of agent v2's bar (``../shared/SETTINGS.md``; :mod:`mixagent.study.closed_gap` computes it): for
every held-out setting of a finished oracle table (:mod:`mixagent.study.oracle_table`), each policy is scored on
the table's held-out seeds, on the table's reward scale (the anchored one with ``anchors``), and set between the
table's single best fixed rule (SBF, 0) and its per-setting oracle (1). A policy the table already scored (a
baseline, probe-then-commit, RegMix) is read from it; any other (an agent artifact, a method spec) is run in the
setting's cached scoring comparison (``heldout-<setting>``, so its episodes are shared with the table's and a
rerun trains nothing), with the row's ``extra_overrides``. The gate and the pooled seed std are the table's: its
noise rows, never a judged policy.

The report gives per policy the mean closed gap over the gated settings with a paired bootstrap 95% interval,
its win rate against SBF, its worst gated setting, its mean regret, and the safety line over *every* held-out
setting: the largest harm ``(SBF - P)`` in pooled std and the settings where it exceeds ``harm_limit``; the
intervals of every policy's difference from probe-then-commit and of the named ``differences``; and whether each
policy meets agent v2's bar (mean >= 0.5, interval above 0 and, for a policy other than probe-then-commit, its
difference from probe-then-commit above 0; no harm beyond ``harm_limit``).

Writes ``<table dir>/closed-gap/<name>/`` (``closed_gap.json``, ``closed_gap.md``, ``closed_gap.png``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from mixagent.errors import ConfigError
from mixagent.paths import REPO_ROOT, atomic_write, atomic_write_json, finite_json

__all__ = ["ClosedGapConfig", "run_closed_gap", "PROBE_COMMIT", "BAR_MEAN"]

PROBE_COMMIT = "probe_commit"  # a policy entry that names the oracle table's own fitted probe-then-commit
BAR_MEAN = 0.5  # agent v2's bar: the mean closed gap over the gated settings
RESULT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class ClosedGapConfig:
    """Which policies are judged, against which oracle table.

    Args:
        oracle: the oracle table's config (``configs/oracle/*.yaml``): its suite, held-out seeds, reward scale
            (``anchors``) and caches. Its table must exist (``mixagent oracle-table``).
        oracle_overrides: ``key=value`` overrides of that config (e.g. ``workers=1``).
        policies: the rows judged: ``probe_commit`` (the table's own fitted probe-then-commit), any rule the
            table scored (``regmix``, ``natural``, ``uniform``, ``replay:0.5``), a method spec or an agent
            artifact directory (run on the held-out seeds where the table has no scores for it).
        differences: ``[a, b]`` pairs of entries of ``policies``: the bootstrap interval of
            ``mean closed gap(a) - mean closed gap(b)``; every policy minus ``probe_commit`` (where it is judged)
            is always reported, as the bar needs it.
        name: the report's directory under ``<table dir>/closed-gap/``.
        partial: judge an oracle table that still has settings to run (the report says which are missing).
        settings: judge only these held-out settings (e.g. one attempt's, to give a verdict with and without a
            later attempt); each must have a row in the table. Empty: every finished row.
        n_boot: bootstrap resamples; seed: their generator's seed.
        harm_limit: the safety line, in pooled seed std below SBF.
    """

    oracle: str = "configs/oracle/math-cpt-v1-anchored.yaml"
    oracle_overrides: tuple[str, ...] = ()
    policies: tuple[str, ...] = (PROBE_COMMIT, "regmix", "natural", "uniform", "replay:0.5")
    differences: tuple[tuple[str, ...], ...] = ()
    name: str = "baselines"
    partial: bool = False
    settings: tuple[str, ...] = ()
    n_boot: int = 10_000
    seed: int = 0
    harm_limit: float = 2.0

    def check(self) -> list[str]:
        from mixagent.policies.registry import method_problems

        problems = [] if self.policies else ["policies is empty: name at least one policy to judge"]
        if len(set(self.policies)) != len(self.policies):
            problems.append(f"policies repeats entries: {list(self.policies)}")
        for p in self.policies:
            if p != PROBE_COMMIT and "/" in p and ":" not in p and not (REPO_ROOT / p).is_dir():
                problems.append(f"policies: {p!r} looks like an agent artifact directory but there is none; give "
                                f"the directory train-agent or per-domain wrote (e.g. runs/agent/<name>/bc)")
            elif p != PROBE_COMMIT and not (REPO_ROOT / p).is_dir():
                problems += [f"policies: {q}" for q in method_problems(p)]
        for pair in self.differences:
            if len(pair) != 2 or any(x not in self.policies for x in pair) or pair[0] == pair[1]:
                problems.append(f"differences: {list(pair)} must be two different entries of policies "
                                f"{list(self.policies)}")
        if len(set(self.settings)) != len(self.settings):
            problems.append(f"settings repeats entries: {list(self.settings)}")
        if not self.name or "/" in self.name:
            problems.append(f"name must be a plain directory name, got {self.name!r}")
        if self.n_boot < 100:
            problems.append(f"n_boot must be >= 100 bootstrap resamples, got {self.n_boot}")
        if not self.harm_limit > 0:
            problems.append(f"harm_limit must be > 0 pooled seed std, got {self.harm_limit}")
        return problems


def _spec_of(entry: str, row: dict) -> str:
    """The policy spec of a ``policies`` entry in one table row (``probe_commit``: the row's fitted one)."""
    if entry != PROBE_COMMIT:
        return entry
    if not row.get("probe_commit"):
        raise ConfigError("closed gap", [f"policies names {PROBE_COMMIT!r} but the oracle table fitted none "
                                         f"(setting {row['setting']}); set probe_commit: true in the oracle config"])
    return row["probe_commit"]


def run_closed_gap(cfg: ClosedGapConfig, progress: bool = True) -> dict:
    """Score ``cfg.policies`` on every finished held-out setting of the oracle table and write the closed-gap
    report (module docstring); returns it (``result`` holds :func:`~mixagent.study.closed_gap.closed_gap_table`'s
    output).

    Raises:
        ConfigError: a bad config, no oracle table (or an unfinished one without ``partial``), a table of another
            suite, or a policy the comparison cannot build.
    """
    from mixagent.config import load_config
    from mixagent.env.setting import load_suite
    from mixagent.study.closed_gap import SettingScores, closed_gap_table
    from mixagent.study.oracle_table import OracleConfig, config_differences, load_oracle_table, score_rules

    problems = cfg.check()
    if problems:
        raise ConfigError("closed gap", problems)
    ocfg = load_config(OracleConfig, REPO_ROOT / cfg.oracle, list(cfg.oracle_overrides))
    suite = load_suite(REPO_ROOT / ocfg.suite)
    table = load_oracle_table(ocfg.table_dir(suite.name), suite, partial=cfg.partial or bool(cfg.settings))
    if cfg.settings:  # a named subset: each needs its row; the rest of the table may still be running
        have = [r["setting"] for r in table["rows"]]
        if unknown := [n for n in cfg.settings if n not in have]:
            raise ConfigError("closed gap", [f"settings: {unknown} have no row in the oracle table (scored: {have}); "
                                             f"name scored held-out settings, or run mixagent oracle-table first"])
        table = {**table, "rows": [r for r in table["rows"] if r["setting"] in cfg.settings], "pending": []}
    if differ := config_differences(ocfg, table["config"]):
        raise ConfigError("closed gap", [f"oracle config {cfg.oracle} (with oracle_overrides) differs from the config "
                                         f"its table was made with in {differ}: policies would be scored otherwise "
                                         f"than the table's rows; use the table's config, or rerun mixagent "
                                         f"oracle-table with this one"])
    held = suite.held_out_settings()
    gate = float(table["config"]["gate"])
    settings, specs = [], {}
    for k, row in enumerate(table["rows"]):
        if not row.get("noise_rows"):
            raise ConfigError("closed gap", [f"oracle table row {row['setting']!r} has no noise_rows (written before "
                                             f"the gate's noise rows were recorded); rerun mixagent oracle-table"])
        specs[row["setting"]] = {p: _spec_of(p, row) for p in cfg.policies}
        scores = dict(row["scores"])
        missing = [s for s in specs[row["setting"]].values() if s not in scores]
        if missing:
            if progress:
                print(f"\n== closed gap: {row['setting']} ({k + 1}/{len(table['rows'])}): {missing} on held-out "
                      f"seeds {table['config']['seeds']}", flush=True)
            scores.update(score_rules(ocfg, suite, row["setting"], held[row["setting"]], missing,
                                      extra=tuple(row.get("extra_overrides", ())), report=False))
        by_entry = {p: scores[s] for p, s in specs[row["setting"]].items()}
        settings.append(SettingScores(setting=row["setting"], seeds=tuple(table["config"]["seeds"]),
                                      scores={**{r: scores[r] for r in row["noise_rows"]}, **by_entry},
                                      oracle=row["oracle"], sbf=row["sbf"], noise_rows=tuple(row["noise_rows"])))
    versus = [(p, PROBE_COMMIT) for p in cfg.policies if PROBE_COMMIT in cfg.policies and p != PROBE_COMMIT]
    pairs = list(dict.fromkeys([*versus, *(tuple(d) for d in cfg.differences)]))
    result = closed_gap_table(settings, list(cfg.policies), gate=gate, n_boot=cfg.n_boot, seed=cfg.seed,
                              differences=pairs, harm_limit=cfg.harm_limit)
    table_gated = {r["setting"]: r["gated"] for r in table["rows"]}
    drift = [r["setting"] for r in result["settings"] if r["gated"] != table_gated[r["setting"]]]
    if drift:  # the same scores and noise rows give the same gate; anything else is a stale table
        raise ConfigError("closed gap", [f"settings {drift} pass the gate here but not in the oracle table (or the "
                                         f"other way): the table is stale; rerun mixagent oracle-table"])
    report = {"version": RESULT_VERSION, "config": dataclasses.asdict(cfg), "suite": suite.name,
              "suite_hash": suite.suite_hash(), "table": str(_rel(ocfg.table_dir(suite.name) / "table.json")),
              "anchors": list(ocfg.anchors), "pending": list(table.get("pending", [])), "specs": specs,
              "bar": _bar(result, cfg), "result": result}
    out = ocfg.table_dir(suite.name) / "closed-gap" / cfg.name
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "closed_gap.json", finite_json(report))
    atomic_write(out / "closed_gap.md", lambda tmp: tmp.write_text(_markdown(report)))
    _plot(report, out / "closed_gap.png")
    return report


def _rel(path: Path) -> Path:
    return path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path


def _bar(result: dict, cfg: ClosedGapConfig) -> dict[str, dict]:
    """Per policy: agent v2's bar, line by line (``None`` where it cannot be judged: no gated setting)."""
    versus = {d["a"]: d for d in result["differences"] if d["b"] == PROBE_COMMIT}
    out = {}
    for p, s in result["policies"].items():
        if s["mean_closed_gap"] is None:
            out[p] = {"closed_gap": None, "above_probe_commit": None, "safe": not s["harmful"], "meets": None}
            continue
        above = True if p == PROBE_COMMIT else (bool(versus[p]["ci95"][0] > 0) if p in versus else None)
        gap = bool(s["mean_closed_gap"] >= BAR_MEAN and s["ci95"][0] > 0)
        # every line of the bar must hold; without probe-then-commit among the policies its line is unjudged
        out[p] = {"closed_gap": gap, "above_probe_commit": above, "safe": not s["harmful"],
                  "meets": None if above is None else bool(gap and above and not s["harmful"])}
    return out


def _label(entry: str) -> str:
    return "probe-then-commit" if entry == PROBE_COMMIT else entry


def _num(x, fmt: str = "{:+.2f}") -> str:
    return "n/a" if x is None or (isinstance(x, float) and not np.isfinite(x)) else fmt.format(x)


def _markdown(report: dict) -> str:
    res, cfg = report["result"], report["config"]
    scale = f"the anchored scale ({', '.join(report['anchors'])})" if report["anchors"] else "the reference-pair scale"
    lines = [f"Closed gap over the oracle table {report['table']} (suite {report['suite']}, hash "
             f"{report['suite_hash']}), on {scale}: {res['gated']} of {res['total']} held-out settings pass the gate "
             f"({res['gate']:g} pooled seed std); closed gap = (P - SBF) / (oracle - SBF) on the held-out seeds, "
             f"the mean over the gated settings with a paired bootstrap 95% interval ({res['n_boot']} resamples, "
             f"settings and seeds; {res['discarded']} discarded where a drawn setting's margin vanished).", ""]
    if res["gated"] == 1:
        lines += ["With one gated setting the bootstrap resamples its seeds only: the interval is seed noise, not the "
                  "spread over settings.", ""]
    if cfg.get("settings"):
        lines += [f"**A subset**: only the held-out settings {', '.join(cfg['settings'])} are judged (the config's "
                  f"`settings`).", ""]
    if report["pending"]:
        lines += [f"**Partial**: the oracle table has settings still to run ({', '.join(report['pending'])}); the "
                  f"numbers below cover its finished settings only.", ""]
    lines += ["| policy | gated settings | mean closed gap [95% CI] | win rate vs SBF | worst gated setting | "
              f"mean regret [std] | max harm [std] | harmful (> {res['harm_limit']:g} std) | bar |",
              "|---|---:|---|---:|---|---:|---:|---|---|"]
    for p, s in res["policies"].items():
        ci = f" [{s['ci95'][0]:+.2f}, {s['ci95'][1]:+.2f}]" if s["ci95"] else ""
        worst = f"{s['worst']['setting']} {s['worst']['closed_gap']:+.2f}" if s["worst"] else "n/a"
        bar = report["bar"][p]
        if bar["closed_gap"] is None:
            verdict = "no gated setting"
        elif bar["meets"] is None:
            verdict = "unjudged (add probe_commit to policies)"
        else:
            verdict = "meets" if bar["meets"] else "misses"
        verdict += "; safe" if bar["safe"] else "; harms"
        lines.append(f"| {_label(p)} | {s['n']} | {_num(s['mean_closed_gap'])}{ci} | "
                     f"{_num(s['win_rate'], '{:.2f}')} | {worst} | "
                     f"{_num(s['mean_regret_std'], '{:+.1f}')} | {_num(s['max_harm_std'], '{:+.1f}')} | "
                     f"{', '.join(s['harmful']) or 'none'} | {verdict} |")
    if res["differences"]:
        lines += ["", "| difference of mean closed gaps | mean [95% CI] |", "|---|---|"]
        for d in res["differences"]:
            ci = f" [{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}]" if d["ci95"] else ""
            lines.append(f"| {_label(d['a'])} - {_label(d['b'])} | {_num(d['mean'])}{ci} |")
    names = list(res["policies"])
    lines += ["", "Per setting (closed gap where the gate passes; every setting's harm, SBF - P in pooled std, "
              "after the slash):", "",
              "| setting | oracle - SBF [std] | gated | " + " | ".join(_label(p) for p in names) + " |",
              "|---|---:|:---:|" + "---:|" * len(names)]
    for r in res["settings"]:
        cells = []
        for p in names:
            x = r["policies"][p]
            gap = _num(x["closed_gap"]) if r["gated"] else "-"
            cells.append(f"{gap} / {_num(x['harm_std'], '{:+.1f}')}")
        lines.append(f"| {r['setting']} | {_num(r['oracle_gap_std'], '{:+.1f}')} | {'yes' if r['gated'] else 'no'} | "
                     + " | ".join(cells) + " |")
    lines += ["", f"The bar (agent v2): mean closed gap >= {BAR_MEAN} with its interval above 0 and, for a policy "
              f"other than probe-then-commit, the interval of its difference from probe-then-commit above 0; safe: "
              f"no held-out setting more than {res['harm_limit']:g} pooled std below "
              f"SBF. Command: `mixagent closed-gap` with {cfg['oracle']} (report {cfg['name']})."]
    return "\n".join(lines) + "\n"


def _plot(report: dict, path: Path) -> None:
    """Per gated setting and policy, the closed gap; the last group is the mean with its 95% interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = report["result"]
    names = list(res["policies"])
    gated = [r for r in res["settings"] if r["gated"]]
    groups = [r["setting"] for r in gated] + ["mean (95% CI)"]
    fig, ax = plt.subplots(figsize=(min(16.0, max(5.0, 0.3 * len(groups) * max(1, len(names)) + 2)), 4.5))
    width = 0.8 / max(1, len(names))
    for i, p in enumerate(names):
        xs = np.arange(len(groups)) + (i - (len(names) - 1) / 2) * width
        values = [r["policies"][p]["closed_gap"] for r in gated] + [res["policies"][p]["mean_closed_gap"]]
        heights = [v if v is not None else 0.0 for v in values]
        label = _label(p)
        ax.bar(xs, heights, width, label=label if len(label) <= 48 else f"{label[:22]}...{label[-23:]}")
        if (ci := res["policies"][p]["ci95"]) is not None:
            ax.errorbar(xs[-1], heights[-1], yerr=[[heights[-1] - ci[0]], [ci[1] - heights[-1]]], capsize=3,
                        color="black", linewidth=1)
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
    ax.axhline(BAR_MEAN, color="tab:red", linewidth=0.8, linestyle=":")
    ax.set_xticks(np.arange(len(groups)), groups, fontsize=8, rotation=20 if len(groups) > 6 else 0,
                  ha="right" if len(groups) > 6 else "center")
    ax.set_ylabel("closed gap (0 = SBF, 1 = oracle)")
    ax.set_title(f"{report['suite']}: {res['gated']} of {res['total']} held-out settings gated", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # outside: no bar hidden
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png", bbox_inches="tight"))  # legend included
    plt.close(fig)
