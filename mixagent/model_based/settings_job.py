"""Fit the world model across settings and measure it per setting:
``mixagent world-model-settings --config configs/world_model/suite-v1.yaml [key=value ...]``.

1. **Leave settings out.** The suite's settings are split into ``folds`` (seeded); each fold's settings are
   predicted by an ensemble (:mod:`mixagent.model_based.settings_model`) fitted on the other folds' settings
   only, so every number below is for a setting the model never saw.
2. **One-step accuracy per setting**: R² of the per-domain loss changes (mean over the setting's source and
   target domains) and of the two fields' benchmark score changes, beside repeating each domain's last change
   (the simplest forecast, for scale).
3. **Policy ranking per setting**: where an audit of the setting's runs exists (the oracle table's tuning grids:
   29 static and two-phase schedules on the tuning seed), every schedule is rolled out in the model from the
   setting's start and ranked by the final score on the setting's own reward scale; the Spearman correlation
   with the real ranking, and the regret of trusting it (the real best row's score minus the real score of the
   row the model ranks first).

The shipped artifact is fitted on every setting; ``report.json``, ``report.md`` and ``ranks.png`` go to ``out``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np

from mixagent.config import to_dict
from mixagent.errors import ConfigError
from mixagent.model_based.settings_model import (
    SettingRun,
    SettingsData,
    SettingsModelConfig,
    SettingsWorldModel,
    fit_settings_model,
    rollout_final,
    settings_data,
)
from mixagent.paths import REPO_ROOT, atomic_write, atomic_write_json

__all__ = ["SettingsModelJobConfig", "run_settings_model_job", "grid_rows", "REPORT_VERSION"]

log = logging.getLogger(__name__)
REPORT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class SettingsModelJobConfig:
    """What ``mixagent world-model-settings`` fits and measures.

    Args:
        data: trajectory runs, one setting each, or suite collections (each stands for its finished settings).
        out: the artifact and report directory.
        model: the ensemble's fit (:class:`~mixagent.model_based.settings_model.SettingsModelConfig`).
        folds: leave-settings-out folds (each setting is measured by a model fitted without it); at least 2.
        audits: a directory of audits (the oracle table's ``tuning/<suite>/``) whose grid rows are ranked in the
            settings whose runs they ran; empty: no ranking.
        tune_seeds: the audits' seeds whose rows are ranked (the tuning seed; nothing else was run there).
        fixed_rules: static replay shares whose regret is reported beside the model's (the single best fixed rule
            of each scale: replay 0.6 on the reference pair's, 0.7 on the anchored one the suite collects on).
    """

    data: tuple[str, ...] = ("trajectories/reference/suite-v1",)
    out: str = "checkpoints/world_models/suite-v1"
    model: SettingsModelConfig = SettingsModelConfig()
    folds: int = 4
    audits: str = "audits/settings/math-cpt-v1/tuning/math-cpt-v1"
    tune_seeds: tuple[int, ...] = (100,)
    fixed_rules: tuple[float, ...] = (0.6, 0.7)

    def check(self) -> list[str]:
        problems = [] if self.data else ["data is empty: name a suite collection or trajectory runs"]
        if not isinstance(self.folds, int) or self.folds < 2:
            problems.append(f"folds must be an integer >= 2 (each setting predicted by a model fitted without it), "
                            f"got {self.folds!r}")
        if any(not 0 <= r <= 1 for r in self.fixed_rules):
            problems.append(f"fixed_rules are replay shares in [0, 1], got {list(self.fixed_rules)}")
        if self.audits and not self.tune_seeds:
            problems.append("tune_seeds is empty: name the audits' seeds whose rows are ranked (e.g. [100])")
        return problems + [f"model.{p}" for p in self.model.check()]


def grid_rows(run: SettingRun, audits: Path, seeds: tuple[int, ...]) -> dict[str, float]:
    """The real final score of every grid row an audit of ``run``'s runs recorded on ``seeds`` (mean over
    them; oracle trials left out), on ``run``'s reward scale and lam; of the matching audits
    (:func:`mixagent.env.references.audits_of`) the one with the most rows; empty where none matches. A line a
    running job is still writing is skipped."""
    from mixagent.config import from_dict
    from mixagent.env.evaluation import EvalResult
    from mixagent.env.references import audits_of
    from mixagent.env.rewards import balanced_score
    from mixagent.env.spec import EnvSpec

    spec = from_dict(EnvSpec, run.spec, "recorded env spec")
    name, lam = run.reward
    best: dict[str, float] = {}
    for d, _ in audits_of(spec, audits, run.base_id):
        path = d / "results.jsonl"
        scores: dict[str, list[float]] = {}
        for line in path.read_text().splitlines() if path.is_file() else ():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if row.get("seed") in seeds and row.get("trial") is None and "eval" in row:
                final = EvalResult.from_json(row["eval"])
                scores.setdefault(row["key"], []).append(balanced_score(name, lam, run.start, final, run.space,
                                                                        run.reference))
        if len(scores) > len(best):
            best = {k: float(np.mean(v)) for k, v in scores.items()}
    return best


def _fold_of(settings: list[str], folds: int, seed: int) -> dict[str, int]:
    order = np.random.default_rng(seed).permutation(len(settings))
    return {settings[i]: pos % folds for pos, i in enumerate(order)}


def _accuracy(model: SettingsWorldModel, data: SettingsData, run: SettingRun) -> dict[str, float]:
    """R² (sklearn's ``r2_score``) per output group on ``data`` (one setting's transitions), and of repeating the
    last change; per-domain outputs averaged over the field's domains."""
    from sklearn.metrics import r2_score

    y_dom, _, y_run, _ = model.predict(data.dom, data.target, data.valid, data.run)
    target = run.space.field_mask("target")
    out = {}
    for field, mask in (("source", ~target), ("target", target)):
        idx = np.flatnonzero(mask)
        truth = data.y_dom[:, idx]
        out[f"bpb_{field}"] = float(r2_score(truth, y_dom[:, idx]))
        out[f"bpb_{field}_last_change"] = float(r2_score(truth, data.dom[:, idx, 5]))
    for i, field in enumerate(("source", "target")):
        out[f"score_{field}"] = float(r2_score(data.y_run[:, i], y_run[:, i]))
    out["transitions"] = int(len(data))
    return out


def _ranking(model: SettingsWorldModel, run: SettingRun, real: dict[str, float], rules: tuple[float, ...]) -> dict:
    from scipy.stats import spearmanr

    from mixagent.env.rewards import balanced_score
    from mixagent.rollout.schedules import Schedule

    name, lam = run.reward
    keys = sorted(real)
    pred = []
    for key in keys:
        sched = Schedule.from_key(key)
        weights = [sched.weights(run.space, run.natural, t) for t in range(run.horizon)]
        final = rollout_final(model, run, weights)
        pred.append(balanced_score(name, lam, run.start, final, run.space, run.reference))
    truth = np.array([real[k] for k in keys])
    pick = int(np.argmax(pred))
    fixed = {f"replay:{r:g}": float(truth.max() - real[key]) for r in rules
             if (key := Schedule("", "", (r,) * run.horizon).key) in real}
    return {"rows": len(keys), "spearman": float(spearmanr(truth, pred).statistic),
            "regret": float(truth.max() - truth[pick]), "fixed_regret": fixed, "model_pick": keys[pick],
            "real_best": keys[int(truth.argmax())],
            "real_spread": float(truth.max() - truth.min()),
            "points": [{"key": k, "real": float(r), "model": float(p)} for k, r, p in zip(keys, truth, pred)]}


def _describe(run_dir: Path) -> str:
    """A setting in words, from its run's ``meta.json`` ``setting`` (hidden axes included)."""
    meta = json.loads((run_dir / "meta.json").read_text()).get("setting") or {}
    s, hidden = meta.get("setting", {}), meta.get("hidden", {})
    if not s:
        return run_dir.name
    prior = hidden.get("prior_target_share")
    decay = f" (decay {s['decay_fraction']:g})" if s.get("schedule") == "wsd" and "decay_fraction" in s else ""
    return (f"{s.get('space')}, {int(s.get('target_tokens') or 0) // 1024}k target, LR {s.get('lr')} "
            f"{s.get('schedule')}{decay}, {hidden.get('size', '?')} base"
            + (f" {prior:.0%} prior" if prior is not None else ""))


def run_settings_model_job(cfg: SettingsModelJobConfig, progress: bool = True) -> dict:
    """Fit per fold, measure, fit on everything and save (see the module docstring); returns the report.

    Raises:
        ConfigError: bad config, or fewer settings than folds.
        WorldModelError: runs without what the model reads (see :func:`~mixagent.model_based.settings_model.
            setting_run`).
    """
    from tqdm.auto import tqdm

    from mixagent.agent.dataset import load_trajectories
    from mixagent.trajectories.suite import expand_runs

    if problems := cfg.check():
        raise ConfigError("world_model", problems)
    names, left = expand_runs(cfg.data)
    if left:
        log.info("%d suite settings not collected yet are left out", len(left))
    if len(names) < cfg.folds:
        raise ConfigError("world_model", [f"folds={cfg.folds} needs at least that many settings, {cfg.data} holds "
                                          f"{len(names)}; lower folds or collect more settings"])
    tsets = [load_trajectories([REPO_ROOT / n]) for n in names]
    data, runs = settings_data(tsets)
    by_name = {r.name: (r, REPO_ROOT / n) for r, n in zip(runs, names)}
    fold = _fold_of([r.name for r in runs], cfg.folds, cfg.model.seed)
    audits = REPO_ROOT / cfg.audits if cfg.audits else None
    rows = []
    with tqdm(total=(cfg.folds + 1) * cfg.model.epochs, desc="world model across settings", unit="epoch",
              disable=not progress) as bar:
        def tick(epoch: int, loss: float) -> None:
            bar.update()
            bar.set_postfix(loss=f"{loss:.3f}")

        for f in range(cfg.folds):
            held = [n for n, i in fold.items() if i == f]
            model = fit_settings_model(data.subset(~np.isin(data.setting, held)), cfg.model, tick)
            for name in held:
                run, run_dir = by_name[name]
                row = {"setting": name, "describe": _describe(run_dir), "fold": f,
                       **_accuracy(model, data.subset(data.setting == name), run)}
                real = grid_rows(run, audits, tuple(cfg.tune_seeds)) if audits else {}
                if len(real) >= 3:
                    row["ranking"] = _ranking(model, run, real, tuple(cfg.fixed_rules))
                rows.append(row)
        final = fit_settings_model(data, cfg.model, tick)
    out = REPO_ROOT / cfg.out
    final.meta |= {"config": dataclasses.asdict(cfg.model), "data": list(cfg.data), "runs": names}
    final.save(out)
    rows.sort(key=lambda r: names.index(next(n for n in names if Path(n).name == r["setting"])))
    report = {"version": REPORT_VERSION, "config": to_dict(cfg), "settings": rows, "summary": _summary(rows)}
    atomic_write_json(out / "report.json", report)
    atomic_write(out / "report.md", lambda p: p.write_text(_markdown(report)))
    _plot(rows, out / "ranks.png")
    return report


def _summary(rows: list[dict]) -> dict:
    ranked = [r["ranking"] for r in rows if "ranking" in r]
    keys = ("bpb_source", "bpb_target", "score_source", "score_target", "bpb_source_last_change",
            "bpb_target_last_change")
    out = {k: float(np.nanmean([r[k] for r in rows])) for k in keys}
    out |= {f"{k}_median": float(np.nanmedian([r[k] for r in rows])) for k in keys[:4]}  # one bad setting moves a mean
    if ranked:
        out |= {"ranked_settings": len(ranked), "spearman_mean": float(np.mean([r["spearman"] for r in ranked])),
                "spearman_min": float(np.min([r["spearman"] for r in ranked])),
                "regret_mean": float(np.mean([r["regret"] for r in ranked])),
                "fixed_regret_mean": {k: float(np.mean([r["fixed_regret"][k] for r in ranked]))
                                      for k in ranked[0]["fixed_regret"]
                                      if all(k in r["fixed_regret"] for r in ranked)},
                "spread_mean": float(np.mean([r["real_spread"] for r in ranked]))}
    return out


def _markdown(report: dict) -> str:
    cfg, s = report["config"], report["summary"]
    lines = [f"# World model across settings ({len(report['settings'])} settings, {cfg['folds']} folds)", "",
             "Each setting is measured by an ensemble fitted without it (leave settings out). R²: one step, "
             "ensemble mean; in brackets, repeating each domain's last change. Ranking: the audit's grid rows on "
             f"the tuning seeds {cfg['tune_seeds']}, real final score against the model's rollout; regret: the real "
             "best row's score minus that of the row the model ranks first (the setting's reward scale).", "",
             "| setting | transitions | R² bpb source | R² bpb target | R² score source | R² score target | rows | "
             "Spearman | regret | fixed rules' regret | real spread |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for r in report["settings"]:
        rk = r.get("ranking")
        fixed = ", ".join(f"{k} {v:.3f}" for k, v in rk["fixed_regret"].items()) if rk else ""
        rank = (f"{rk['rows']} | {rk['spearman']:+.2f} | {rk['regret']:.3f} | {fixed} | {rk['real_spread']:.3f}" if rk
                else "| | | |")
        lines.append(f"| {r['setting']} ({r['describe']}) | {r['transitions']} | {r['bpb_source']:.2f} "
                     f"({r['bpb_source_last_change']:.2f}) | {r['bpb_target']:.2f} ({r['bpb_target_last_change']:.2f})"
                     f" | {r['score_source']:.2f} | {r['score_target']:.2f} | {rank} |")
    lines += ["", f"Mean over settings: R² bpb source {s['bpb_source']:.2f} (last change "
              f"{s['bpb_source_last_change']:.2f}), target {s['bpb_target']:.2f} ({s['bpb_target_last_change']:.2f}); "
              f"score source {s['score_source']:.2f}, target {s['score_target']:.2f}. Median: bpb source "
              f"{s['bpb_source_median']:.2f}, target {s['bpb_target_median']:.2f}; score source "
              f"{s['score_source_median']:.2f}, target {s['score_target_median']:.2f}."]
    if "spearman_mean" in s:
        lines.append(f"Ranking over {s['ranked_settings']} settings: Spearman mean {s['spearman_mean']:+.2f} (min "
                     f"{s['spearman_min']:+.2f}), regret mean {s['regret_mean']:.3f} against a mean spread of "
                     f"{s['spread_mean']:.3f}; the fixed rules' regret: "
                     + ", ".join(f"{k} {v:.3f}" for k, v in s["fixed_regret_mean"].items()) + ".")
    return "\n".join(lines) + "\n"


def _plot(rows: list[dict], path: Path) -> None:
    """One panel per ranked setting: real against predicted final score of every grid row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ranked = [r for r in rows if "ranking" in r]
    if not ranked:
        return
    cols = min(4, len(ranked))
    nrows = -(-len(ranked) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.2 * cols, 3.0 * nrows), squeeze=False)
    for ax, r in zip(axes.flat, ranked):
        pts = r["ranking"]["points"]
        ax.scatter([p["real"] for p in pts], [p["model"] for p in pts], s=12)
        lo = min(min(p["real"], p["model"]) for p in pts)
        hi = max(max(p["real"], p["model"]) for p in pts)
        ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls="--")
        ax.set_title(f"{r['setting'][:8]}: Spearman {r['ranking']['spearman']:+.2f}", fontsize=9)
        ax.set_xlabel("real final score", fontsize=8)
        ax.set_ylabel("model's rollout", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(ranked):]:
        ax.axis("off")
    fig.suptitle("World model across settings: grid rows of settings it never saw", fontsize=10)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, dpi=110, format="png"))
    plt.close(fig)
