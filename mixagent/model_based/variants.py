"""The agent variants in one table: ``mixagent variants --config
configs/agent/variants.yaml``.

Each variant is selected by config: an agent config and stage (``train_agent``: BC, BC then CQL on real
data, CQL on real + synthetic transitions, online SAC in the surrogate), the world-model planner (MPC), or
a committed policy artifact (the per-domain reference agent). The job trains what is not trained (each run
resumes; a finished run is checked against its config as a resume is, so an edited training config is
refused, not scored under the old run; a committed copy trained under the config's exact training identity
is scored as it is, so a fresh clone retrains nothing), copies every learned policy into ``out`` (small,
committed), rolls them out in the **real** env on the held-out seeds through the comparison (every
baseline of ``compare`` on the same seeds; cached episodes are not rerun), and writes ``out/table.md`` /
``table.json``: each variant against the best non-oracle baseline in pooled seed standard deviations, and
its share of the oracle schedule's gain over the best static mixture (the agent's bar).
"""

from __future__ import annotations

import dataclasses
import math
import shutil
from pathlib import Path

import numpy as np

from mixagent.paths import REPO_ROOT, atomic_write, atomic_write_json

__all__ = ["Variant", "VariantsConfig", "run_variants"]

STAGES = ("sft", "rl")


@dataclasses.dataclass(frozen=True)
class Variant:
    """One variant: exactly one of ``config`` (an agent config; ``stage`` picks its policy), ``planner`` (a
    world-model artifact: MPC) or ``artifact`` (a committed policy).

    Args:
        name: plain name (its artifact directory under ``out``).
        label: the table's description.
        config: agent config YAML (``configs/agent/*.yaml``); stage: ``sft`` or ``rl``.
        planner: world-model directory; trials and penalty: the planner's search (``mixagent.model_based.planning``);
            planner_out: where its real-env episodes are kept (one directory per planner key, one JSON per seed:
            :func:`mixagent.model_based.planning.evaluate_planner`).
        artifact: a policy artifact directory.
    """

    name: str
    label: str
    config: str = ""
    stage: str = "rl"
    planner: str = ""
    trials: int = 64
    penalty: float = 0.05
    planner_out: str = "audits/agent-v1/mpc"
    artifact: str = ""

    def check(self) -> list[str]:
        problems = [] if _plain(self.name) else [f"name must be a plain directory name, got {self.name!r}"]
        if sum(bool(x) for x in (self.config, self.planner, self.artifact)) != 1:
            problems.append(f"variant {self.name!r}: give exactly one of config, planner or artifact")
        if self.stage not in STAGES:
            problems.append(f"variant {self.name!r}: stage must be sft or rl, got {self.stage!r}")
        for key, path, marker in (("config", self.config, ""), ("planner", self.planner, "meta.json"),
                                  ("artifact", self.artifact, "meta.json")):
            if path and not (REPO_ROOT / path / marker).is_file():
                what = "an agent config file" if key == "config" else "an artifact directory (with meta.json)"
                problems.append(f"variant {self.name!r}: {key} {path!r} is not {what}; fix the path")
        if self.trials < 1 or not self.penalty >= 0:
            problems.append(f"variant {self.name!r}: trials must be >= 1 and penalty >= 0, got {self.trials}, "
                            f"{self.penalty}")
        return problems


def _plain(name: str) -> bool:
    return bool(name) and "/" not in name and not name.startswith(".")


@dataclasses.dataclass(frozen=True)
class VariantsConfig:
    """The variants table.

    Args:
        name: the comparison's name (``<compare out>/<name>``).
        compare: the comparison config whose baselines and seeds the variants are scored with;
            compare_overrides: ``key=value`` overrides of it (``out=runs/compare`` keeps it out of ``audits``).
        variants: the variants, in table order.
        out: where learned policies are copied and the table written (committed).
    """

    name: str = "v1-variants"
    compare: str = "configs/compare/v1.yaml"
    compare_overrides: tuple[str, ...] = ()
    variants: tuple[Variant, ...] = ()
    out: str = "audits/agent-v1/variants"

    def check(self) -> list[str]:
        problems = [] if self.variants else ["variants is empty"]
        if not _plain(self.name):
            problems.append(f"name must be a plain directory name, got {self.name!r}")
        if not (REPO_ROOT / self.compare).is_file():
            problems.append(f"compare {self.compare!r} is not a file; give a comparison config (configs/compare/)")
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            problems.append(f"variant names repeat: {names}")
        return problems


def _committed_matches(committed: Path, stage: str, identity: dict) -> bool:
    """Whether the committed policy copy was trained at ``stage`` under exactly ``identity``
    (:func:`mixagent.agent.train.training_identity`, recorded in its ``meta.json`` as ``training.identity``)."""
    import json

    meta_path = committed / "meta.json"
    if not meta_path.is_file():
        return False
    meta = json.loads(meta_path.read_text())
    return meta.get("stage") == stage and meta.get("training", {}).get("identity") == identity


def _train(v: Variant, progress: bool, committed: Path | None = None) -> Path:
    """The variant's trained policy directory: ``committed`` (the copy under the job's ``out``) when the run
    directory holds no finished run and that copy was trained under exactly this config's training identity
    (so a fresh clone scores the committed policies and retrains nothing); otherwise the run, trained (or
    resumed) unless it finished, and a finished run checked against the config as a resume would be (an
    edited training config is never scored under the old run, nor under the committed copy).

    Raises:
        ResumeMismatchError: the run at the config's run directory was trained under other training settings.
    """
    from mixagent.agent.config import AgentConfig
    from mixagent.agent.train import _prepare_run_dir, train_agent, training_identity
    from mixagent.config import load_config
    from mixagent.errors import ResumeMismatchError
    from mixagent.model_based.synthetic import world_model_data

    cfg = load_config(AgentConfig, REPO_ROOT / v.config)
    run_dir = cfg.run_dir
    finished = (run_dir / v.stage / "meta.json").is_file() and (run_dir / "table.json").is_file()
    if not finished and not run_dir.exists() and committed is not None and \
            _committed_matches(committed, v.stage, training_identity(cfg)):
        print(f"\n== variant {v.name}: the committed {committed} was trained under {v.config} as it is now: "
              f"scored, not retrained", flush=True)
        return committed
    try:
        if finished and (run_dir / "state.json").is_file():  # the check train_agent makes on a resume, alone
            _prepare_run_dir(cfg, resume=True)
        else:
            print(f"\n== variant {v.name}: training {v.config} (resumes)", flush=True)
            train_agent(cfg, resume=run_dir.exists(), progress=progress, world_model=world_model_data(cfg))
    except ResumeMismatchError as exc:
        raise ResumeMismatchError(f"variant {v.name!r}: {exc}. The variants job scores the run in {run_dir}, trained "
                                  f"under another {v.config}: restore the config it was trained with, give the "
                                  f"edited config another name (name: ...) so it trains anew, or delete {run_dir} "
                                  f"to retrain it") from None
    return run_dir / v.stage


def _check_stored(cfg: VariantsConfig, seeds: list[int], out: Path) -> None:
    from mixagent.agent.config import AgentConfig
    from mixagent.agent.train import training_identity
    from mixagent.config import load_config
    from mixagent.errors import UsageError
    from mixagent.model_based.planning import planner_key

    missing = []
    for v in cfg.variants:
        if v.config:
            run_dir = load_config(AgentConfig, REPO_ROOT / v.config).run_dir
            identity = training_identity(load_config(AgentConfig, REPO_ROOT / v.config))
            if not (run_dir / v.stage / "meta.json").is_file() and \
                    not _committed_matches(out / v.name, v.stage, identity):
                missing.append(f"variant {v.name!r} would train (no committed policy under {v.config} as it is now)")
        elif v.planner:
            root = REPO_ROOT / v.planner_out / planner_key(v.planner, v.trials, v.penalty)["digest"]
            if not all((root / f"{s}.json").is_file() for s in seeds):
                missing.append(f"variant {v.name!r}: the planner's episodes are not all stored in {root}")
    if missing:
        raise UsageError("; ".join(missing) + ": run mixagent variants to train and roll them out")


def _keep_episodes(base, policies: list[str]) -> None:
    """Copy the policies' episodes that agent training rolled out into ``runs/compare`` (the shipped agent
    configs' ``eval.cache``) into the comparison's cache (committed), so a fresh clone reruns none."""
    from mixagent.env.spec import load_spec
    from mixagent.rollout.cache import EpisodeCache
    from mixagent.rollout.identity import policy_key
    from mixagent.rollout.seeds import resolve_env

    spec = load_spec(resolve_env(base.env, "compare"), base.env_overrides)
    ident = (spec.name, spec.version, spec.spec_hash())
    src, dst = EpisodeCache(REPO_ROOT / "runs/compare", ident), EpisodeCache(REPO_ROOT / base.out, ident)
    for p in policies:
        key = policy_key(p, None)
        for seed in base.seeds:
            record = src.summary(key, seed)
            if record is not None and dst.summary(key, seed) is None:
                dst.put_summary(key, seed, record)


def run_variants(cfg: VariantsConfig, progress: bool = True, launcher=None, stored_only: bool = False) -> dict:
    """Train, copy, roll out and tabulate every variant (see the module docstring); returns the table.

    Args:
        launcher: the comparison's launcher (:func:`mixagent.study.compare.run_compare`).
        stored_only: rebuild from what is stored: refuse, before anything runs, a variant that would train (no
            finished run and no committed copy under its config's training identity) or a planner whose
            episodes are not stored under its key (``scripts/rebuild_results.py``).

    Raises:
        ConfigError: a bad config, before anything runs.
        UsageError: ``stored_only`` and something would train or plan.
    """
    from mixagent.agent.config import AgentConfig
    from mixagent.config import load_config
    from mixagent.model_based.planning import evaluate_planner
    from mixagent.study.compare import CompareConfig, run_compare
    from mixagent.study.compare_report import make_compare_report

    base = load_config(CompareConfig, REPO_ROOT / cfg.compare, cfg.compare_overrides)
    for v in cfg.variants:  # every agent config valid before the first trains
        if v.config:
            load_config(AgentConfig, REPO_ROOT / v.config)
    out = (REPO_ROOT / cfg.out).resolve()
    if stored_only:
        _check_stored(cfg, list(base.seeds), out)
    policies, planned = {}, {}
    for v in cfg.variants:
        if v.planner:
            planned[v.name] = evaluate_planner(v.planner, list(base.seeds), v.planner_out, v.trials, v.penalty,
                                               progress)
            continue
        dst = out / v.name
        src = REPO_ROOT / v.artifact if v.artifact else _train(v, progress, committed=dst)
        if v.config and src.resolve() != dst.resolve():  # learned here: the committed copy is what is scored
            tmp = out / f".{v.name}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(src, tmp)
            shutil.rmtree(dst, ignore_errors=True)
            tmp.rename(dst)
        chosen = (dst if v.config else src).resolve()
        policies[v.name] = str(chosen.relative_to(REPO_ROOT) if chosen.is_relative_to(REPO_ROOT) else chosen)
    _keep_episodes(base, list(policies.values()))
    run = run_compare(dataclasses.replace(base, name=cfg.name, policies=(*base.policies, *policies.values())),
                      launcher=launcher)
    table = make_compare_report(run)
    return _table(cfg, table, policies, planned, out, f"{base.out}/{cfg.name}")


def _table(cfg: VariantsConfig, table: dict, policies: dict[str, str], planned: dict[str, list[dict]],
           out: Path, comparison: str) -> dict:
    rows = {r["policy"]: r for r in table["rows"]}
    baselines = [r for r in table["rows"] if r["kind"] not in ("agent", "oracle")]
    best = max(baselines, key=lambda r: r["mean"])
    static = rows.get("oracle: best static (hindsight)")
    schedule = rows.get("oracle: best schedule (hindsight)")
    headroom = schedule["mean"] - static["mean"] if static and schedule else None
    scored = []
    for v in cfg.variants:
        scores = [e["balanced"] for e in planned[v.name]] if v.name in planned else rows[policies[v.name]]["scores"]
        std = float(np.std(scores, ddof=1)) if len(scores) > 1 else float("nan")
        where = f"{v.planner_out}/{planned[v.name][0]['key']['digest']}" if v.name in planned else ""
        scored.append({"name": v.name, "label": v.label, "policy": policies.get(v.name, where),
                       "scores": [float(s) for s in scores], "mean": float(np.mean(scores)), "std": std})
    # pooled over every non-oracle row of the comparison (baselines and the artifact variants, as its report
    # does) and the planner's episodes, which the comparison cannot roll out itself
    methods = [r for r in table["rows"] if r["kind"] != "oracle"]
    pooled = math.sqrt(np.mean([r["std"] ** 2 for r in methods] + [s["std"] ** 2 for s in scored
                                                                    if s["name"] in planned]))
    lines = [f"| variant | normalised score (mean ± std) | gap to {best['policy']} [pooled std] | share of the "
             f"oracle schedule's gain over the best static |", "|---|---:|---:|---:|"]
    for s in scored:
        s["gap_std"] = (s["mean"] - best["mean"]) / pooled
        s["oracle_share"] = ((s["mean"] - static["mean"]) / headroom if headroom and headroom > 0 else None)
        share = "n/a (no headroom)" if s["oracle_share"] is None else f"{100 * s['oracle_share']:.0f}%"
        lines.append(f"| {s['label']} | {s['mean']:+.4f} ± {s['std']:.4f} | {s['mean'] - best['mean']:+.4f} "
                     f"[{s['gap_std']:+.1f}] | {share} |")
    lines.append(f"| best non-oracle baseline: {best['policy']} | {best['mean']:+.4f} ± {best['std']:.4f} | — | — |")
    if headroom is not None:
        lines.append(f"| oracle: best schedule (hindsight) | {schedule['mean']:+.4f} | "
                     f"{schedule['mean'] - best['mean']:+.4f} | gain over best static {headroom:+.4f} |")
    top = max(scored, key=lambda s: s["mean"])
    verdict = (f"closest to the bar: {top['label']}, {top['mean'] - best['mean']:+.4f} ({top['gap_std']:+.1f} pooled "
               f"std) from {best['policy']}; the bar is +2 pooled std and >= 70% of the oracle schedule's gain"
               + ("" if headroom and headroom > 0 else
                  ", and no audit oracle covers these seeds: the oracle share is undefined" if headroom is None else
                  f", and the oracle schedule's gain over the best static mixture is {headroom:+.4f}: no schedule "
                  f"headroom to take"))
    md = "\n".join(lines) + f"\n\nPooled seed std {pooled:.4f} (seeds {table['seeds']}). {verdict}.\n"
    out.mkdir(parents=True, exist_ok=True)
    result = {"version": 1, "name": cfg.name, "env_id": table["env_id"], "spec_hash": table["spec_hash"],
              "seeds": table["seeds"], "pooled_seed_std": pooled, "best_baseline": best["policy"],
              "best_baseline_mean": best["mean"], "oracle_schedule_gain": headroom, "variants": scored,
              "verdict": verdict, "comparison": comparison}
    atomic_write(out / "table.md", lambda tmp: tmp.write_text(md))
    atomic_write_json(out / "table.json", result)
    return result

