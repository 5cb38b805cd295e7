"""Fit the world model and measure it:
``mixagent world-model --config configs/world_model/default.yaml [key=value ...]``.

1. Fit the ensemble (:mod:`mixagent.model_based.world_model`) on the collection trees not held out.
2. **One-step accuracy**: R² of every output on the held-out trees' transitions (whole trees, so no
   held-out step shares a prefix with a training one).
3. **Policy ranking**: every policy with real episodes on the evaluation seeds (the headroom audit's
   schedules and the comparison's methods, all on held-out seeds the data never saw) is rolled out in the
   surrogate env (ensemble mean), and the final balanced score it predicts is rank-correlated (Spearman)
   with the real one (mean over the seeds). The goal: >= 0.9.

The artifact (fitted on the training trees only, so the numbers describe what ships) and ``report.json``,
``report.md`` and ``ranks.png`` go to ``out``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np

from mixagent.config import to_dict
from mixagent.errors import ConfigError
from mixagent.model_based.world_model import (
    WorldModel,
    WorldModelConfig,
    fit_world_model,
    model_data,
    output_names,
    split_by_tree,
)
from mixagent.paths import REPO_ROOT, atomic_write, atomic_write_json

__all__ = ["WorldModelJobConfig", "run_world_model_job", "policy_ranks", "refresh_ranks"]

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class WorldModelJobConfig:
    """What ``mixagent world-model`` fits and measures.

    Args:
        data: trajectory run directories (one env spec and domain space).
        out: the artifact and report directory.
        model: the ensemble's fit (:class:`~mixagent.model_based.world_model.WorldModelConfig`).
        audit_root: where headroom audits live; the audit of the model's spec covering ``seeds`` gives the
            schedules ranked (empty: none).
        compare: the comparison cache roots whose methods are ranked (empty: none).
        regmix: the comparison's ``regmix.json`` (RegMix's fitted mixture; empty: RegMix is left out).
        tuning: the comparison's ``tuning.json``: each method is ranked with the hyperparameters its tuning
            chose, as in the comparison's table (empty or missing: the defaults).
        seeds: evaluation seeds of the real episodes (the audit's and the comparison's held-out seeds).
        tune_seed: the comparison's tuning seed (its reference run, which DoReMi and Velocitune read).
    """

    data: tuple[str, ...] = ("trajectories/reference/math-cpt-v1",)
    out: str = "runs/world_model/default"
    model: WorldModelConfig = WorldModelConfig()
    audit_root: str = "audits"
    compare: tuple[str, ...] = ("audits/compare",)
    regmix: str = "audits/compare/v1/regmix.json"
    tuning: str = "audits/compare/v1/tuning.json"
    seeds: tuple[int, ...] = (0, 1, 2)
    tune_seed: int = 100

    def check(self) -> list[str]:
        problems = [] if self.data else ["data is empty: name at least one trajectory run directory"]
        if not self.seeds:
            problems.append("seeds is empty: name the evaluation seeds of the real episodes (e.g. [0, 1, 2])")
        return problems


def one_step_r2(model: WorldModel, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """R² per output of the ensemble mean on ``(x, y)`` (sklearn's ``r2_score``)."""
    from sklearn.metrics import r2_score

    mean, _ = model.predict(x)
    r2 = r2_score(y, mean, multioutput="raw_values")
    return dict(zip(output_names(model.space), map(float, r2)))


def _final_score(env, weights_per_step) -> float:
    """Roll a weight sequence in ``env`` (seed 0); the final balanced score."""
    from mixagent.domains import DomainWeights

    _, info = env.reset(seed=0)
    for w in weights_per_step:
        _, _, _, _, info = env.step_weights(DomainWeights.normalised(env.space, np.asarray(w)))
    return float(info["balanced_score"])


def policy_ranks(model: WorldModel, cfg: WorldModelJobConfig) -> list[dict]:
    """Every policy with real episodes on ``cfg.seeds``: ``{"policy", "source", "real", "real_std", "real_seeds",
    "model"}``.

    Real: the mean over the seeds of the final balanced score (the env's reward score). Model: the same
    policy rolled out in the surrogate env (ensemble mean; a stochastic method averaged over the seeds).
    """
    from mixagent.env.evaluation import EvalResult
    from mixagent.env.rewards import balanced_score
    from mixagent.model_based.surrogate import make_surrogate_env
    from mixagent.policies.registry import METHODS, PROBING, build_policy
    from mixagent.rollout.cache import EpisodeCache
    from mixagent.rollout.episode import rollout
    from mixagent.rollout.identity import policy_context, policy_key
    from mixagent.rollout.schedules import Schedule
    from mixagent.study.compare import CompareConfig, audit_rows, reference_curve

    env = make_surrogate_env(model)
    spec, space, horizon = env.spec_, env.space, env.horizon
    natural = env.natural.values
    rows: list[dict] = []
    seen: set[str] = set()
    if cfg.audit_root:  # the headroom audit of the model's spec covering the seeds (none: logged, no rows)
        audit = audit_rows(CompareConfig(seeds=cfg.seeds, audit_root=cfg.audit_root), spec)
        start = model.start()
        for key, evals in sorted(audit.get("rows", {}).items()):
            real = [balanced_score(spec.reward.name, spec.reward.lam, start, EvalResult.from_json(e), space,
                                   env.reference) for e in evals]
            sched = Schedule.from_key(key)
            weights = [sched.weights(space, natural, t) for t in range(horizon)]
            label = {"rho:" + ",".join(["0.0000"] * horizon): "target_only",
                     "rho:" + ",".join(["1.0000"] * horizon): "source_only",
                     "rho:" + ",".join(["0.5000"] * horizon): "replay:0.5"}.get(key, key)
            rows.append({"policy": label, "source": "audit", "real": float(np.mean(real)),
                         "real_std": float(np.std(real)), "real_seeds": list(map(float, real)),
                         "model": _final_score(env, weights)})
            seen.add(label)
    if cfg.compare:
        cache = EpisodeCache(REPO_ROOT / cfg.compare[0], (spec.name, spec.version, model.meta["spec_hash"]),
                             tuple(REPO_ROOT / r for r in cfg.compare[1:]))
        context: dict = {}
        ref = cache.summary("natural", cfg.tune_seed)  # the comparison's reference run
        if ref is not None:
            context["reference"] = reference_curve(ref, space, horizon, f"natural, seed {cfg.tune_seed}").to_json()
        if cfg.regmix and (REPO_ROOT / cfg.regmix).is_file():
            context["regmix"] = json.loads((REPO_ROOT / cfg.regmix).read_text())["mixture"]
        ctx = policy_context(context, env)  # the comparison's context: same keys, same cached episodes
        tuned = (json.loads((REPO_ROOT / cfg.tuning).read_text()) if cfg.tuning and (REPO_ROOT / cfg.tuning).is_file()
                 else {})
        for name in METHODS:
            if name in seen or name in PROBING:  # the surrogate cannot train a probing method's probes
                continue
            spec = tuned.get(name, {}).get("chosen", name)
            try:
                key = policy_key(spec, ctx)
            except ConfigError:  # what the method needs (reference run, RegMix's fit) is not in the cache
                continue
            real = [cache.summary(key, s) for s in cfg.seeds]
            if any(r is None for r in real):
                continue
            model_scores = [rollout(env, build_policy(spec, ctx), seed=s).balanced for s in cfg.seeds]
            scores = [float(r["balanced"]) for r in real]
            rows.append({"policy": name, "source": "compare", "real": float(np.mean(scores)),
                         "real_std": float(np.std(scores)), "real_seeds": scores,
                         "model": float(np.mean(model_scores))})
    return rows


def seed_ceiling(rows: list[dict]) -> float | None:
    """How well the real env ranks the policies against itself: the mean over seeds ``s`` of the Spearman
    correlation between seed ``s``'s scores and the mean of the other seeds' (the surrogate, compared with
    the mean of all seeds, can hardly do better than seed noise allows). ``None`` with < 2 seeds or 3 rows."""
    from scipy.stats import spearmanr

    if len(rows) < 3 or len(rows[0]["real_seeds"]) < 2:
        return None
    real = np.array([r["real_seeds"] for r in rows])
    n = real.shape[1]
    return float(np.mean([spearmanr(real[:, s], np.delete(real, s, axis=1).mean(1)).statistic for s in range(n)]))


def run_world_model_job(cfg: WorldModelJobConfig, progress: bool = True) -> dict:
    """Fit, measure and save (see the module docstring); returns the report.

    Raises:
        ConfigError: bad config.
        WorldModelError: no transitions, or too few trees for the held-out split.
    """
    from scipy.stats import spearmanr
    from tqdm.auto import tqdm

    from mixagent.agent.dataset import load_trajectories

    problems = cfg.check() + [f"model.{p}" for p in cfg.model.check()]
    if problems:
        raise ConfigError("world_model", problems)
    tset = load_trajectories([REPO_ROOT / d for d in cfg.data])
    data = model_data(tset)
    train, test = split_by_tree(data, cfg.model.holdout_trees, cfg.model.seed)
    with tqdm(total=cfg.model.epochs, desc="world model", unit="epoch", disable=not progress) as bar:
        def tick(epoch: int, loss: float) -> None:
            bar.update()
            bar.set_postfix(loss=f"{loss:.3f}")

        model = fit_world_model(data.subset(train), tset, cfg.model, tick)
    r2 = one_step_r2(model, data.x[test], data.y[test]) if test.any() else {}
    rows = policy_ranks(model, cfg)
    rho = float(spearmanr([r["real"] for r in rows], [r["model"] for r in rows]).statistic) if len(rows) >= 3 else None
    k = model.space.k
    groups = {"bpb (source domains)": [n for n, f in zip(model.space.names, model.meta["fields"]) if f == "source"],
              "bpb (target domains)": [n for n, f in zip(model.space.names, model.meta["fields"]) if f == "target"]}
    summary = {g: float(np.mean([r2[f"bpb/{n}"] for n in names])) for g, names in groups.items() if r2}
    summary |= {o: r2[o] for o in output_names(model.space)[k:] if r2}
    report = {"config": to_dict(cfg), "transitions": {"train": int(train.sum()), "held_out": int(test.sum())},
              "held_out_trees": sorted(map(int, np.unique(data.tree[test]))), "r2": r2, "r2_summary": summary,
              "spearman": rho, "seed_ceiling": seed_ceiling(rows), "policies": rows, "goal_spearman": 0.9}
    model.meta["metrics"] = {"r2_summary": summary, "spearman": rho, "seed_ceiling": report["seed_ceiling"],
                             "policies": len(rows)}
    out = REPO_ROOT / cfg.out
    model.save(out)
    atomic_write_json(out / "report.json", report)
    _plot(rows, rho, out / "ranks.png")
    atomic_write(out / "report.md", lambda p: p.write_text(_markdown(report)))
    return report


def refresh_ranks(cfg: WorldModelJobConfig) -> dict:
    """Rank the policies again with the world model already at ``cfg.out`` (no refit): after a comparison's
    methods changed, the report's ``policies``, ``spearman`` and ``seed_ceiling`` (and ``report.md``,
    ``ranks.png``, the meta's ``metrics``) follow the current episodes; the model and the held-out R² stay.

    Raises:
        ConfigError: no fitted world model at ``cfg.out``.
    """
    from scipy.stats import spearmanr

    from mixagent.model_based.world_model import load_world_model

    out = REPO_ROOT / cfg.out
    if not (out / "report.json").is_file():
        raise ConfigError("world_model", [f"no world model report at {out}: fit one first (mixagent world-model)"])
    model = load_world_model(out)
    report = json.loads((out / "report.json").read_text())
    rows = policy_ranks(model, cfg)
    rho = float(spearmanr([r["real"] for r in rows], [r["model"] for r in rows]).statistic) if len(rows) >= 3 else None
    report |= {"spearman": rho, "seed_ceiling": seed_ceiling(rows), "policies": rows}
    report["config"] = {**report["config"], "tuning": cfg.tuning}
    meta = json.loads((out / "meta.json").read_text())
    meta["metrics"] = {**meta.get("metrics", {}), "spearman": rho, "seed_ceiling": report["seed_ceiling"],
                       "policies": len(rows)}
    atomic_write_json(out / "meta.json", meta)
    atomic_write_json(out / "report.json", report)
    _plot(rows, rho, out / "ranks.png")
    atomic_write(out / "report.md", lambda p: p.write_text(_markdown(report)))
    return report


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _markdown(report: dict) -> str:
    lines = ["# World model of the mixing environment", "",
             f"Fitted on {report['transitions']['train']} transitions; {report['transitions']['held_out']} held out "
             f"(collection trees {report['held_out_trees']}).", "", "| output | held-out R² |", "|---|---:|"]
    lines += [f"| {k} | {v:.3f} |" for k, v in report["r2_summary"].items()]
    lines += ["", f"Spearman rank correlation of the final balanced score, surrogate vs real, over "
              f"{len(report['policies'])} policies: **{_fmt(report['spearman'])}** (goal >= 0.9). The real env "
              f"against itself (one seed vs the mean of the others): {_fmt(report['seed_ceiling'])}.", "",
              "| policy | source | real (mean ± std over seeds) | surrogate |", "|---|---|---:|---:|"]
    for r in sorted(report["policies"], key=lambda r: -r["real"]):
        lines.append(f"| {r['policy']} | {r['source']} | {r['real']:+.4f} ± {r['real_std']:.4f} | {r['model']:+.4f} |")
    return "\n".join(lines + ["", "![surrogate vs real](ranks.png)", ""])


def _plot(rows: list[dict], rho: float | None, path: Path) -> None:
    """Surrogate vs real final score: every policy (left), and the cluster of sensible ones (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    named = ("natural", "uniform", "target_only", "source_only", "replay:0.5")
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.2))
    real = [r["real"] for r in rows] or [0.0, 1.0]
    zoom_lo = float(np.percentile(real, 10)) - 0.01  # the right panel: the top 90% of policies by real score
    for ax, zoom in zip(axes, (False, True)):
        shown = [r for r in rows if not zoom or r["real"] >= zoom_lo]
        for source, marker, label in (("audit", "o", "audit schedules"), ("compare", "s", "comparison methods")):
            pts = [r for r in shown if r["source"] == source]
            if pts:
                ax.errorbar([r["real"] for r in pts], [r["model"] for r in pts], xerr=[r["real_std"] for r in pts],
                            fmt=marker, ms=5, alpha=0.8, capsize=2, label=label)
        for r in shown:
            if r["source"] == "compare" or r["policy"] in named:
                ax.annotate(r["policy"], (r["real"], r["model"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        if shown:
            lo = min(min(r["real"] for r in shown), min(r["model"] for r in shown))
            hi = max(max(r["real"] for r in shown), max(r["model"] for r in shown))
            ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls="--", label="y = x")
        ax.set_xlabel("real final balanced score (mean ± std over seeds)")
        ax.set_ylabel("surrogate final balanced score (ensemble mean)")
        ax.set_title(f"real score >= {zoom_lo:.2f} (zoom)" if zoom else f"all {len(rows)} policies")
        ax.legend(fontsize=8, loc="upper left")
    fig.suptitle(f"World model: each policy's final score, surrogate vs real (Spearman {_fmt(rho)})")
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, dpi=110, format="png"))
    plt.close(fig)
