"""``make demo``: build data, tokenizer and base model (cached), then roll out uniform, replay rho=0.5 and
target-only mixing in the default math spec and print source, target and balanced scores per policy;
then collect a small branching set of behaviour trajectories (``configs/collect/demo.yaml``)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mixagent.config import load_config
from mixagent.data.build import DataConfig, build
from mixagent.env import MixingEnv
from mixagent.errors import MixagentError
from mixagent.paths import CONFIGS_DIR, ENVS_DIR, REPO_ROOT
from mixagent.policies import MixingPolicy, ReplayPolicy, UniformPolicy
from mixagent.rollout import Rollout, rollout

__all__ = ["main", "compare", "format_table"]

log = logging.getLogger(__name__)


def compare(env: MixingEnv, policies: dict[str, MixingPolicy], seeds: list[int]) -> dict[str, list[Rollout]]:
    """Roll every policy out on every seed, with one progress bar over all segments."""
    results: dict[str, list[Rollout]] = {}
    with tqdm(total=len(policies) * len(seeds) * env.horizon, desc="rollouts", unit="segment") as bar:
        for name, policy in policies.items():
            bar.set_postfix_str(name)
            results[name] = [rollout(env, policy, seed, progress=lambda _: bar.update()) for seed in seeds]
    return results


def format_table(env: MixingEnv, results: dict[str, list[Rollout]]) -> tuple[str, list[dict]]:
    """A markdown table (mean ± standard deviation over seeds) and its rows (with per-seed values)."""
    rows = []
    for name, runs in results.items():
        per_seed = {
            "source_score": [r.final.scores["source"] for r in runs],
            "target_score": [r.final.scores["target"] for r in runs],
            "source_bpb": [r.final.field_bpb(env.space, "source") for r in runs],
            "target_bpb": [r.final.field_bpb(env.space, "target") for r in runs],
            "balanced": [r.balanced for r in runs],
        }
        diverged = sum(r.truncated for r in runs)
        label = f"{name} ({diverged} of {len(runs)} diverged)" if diverged else name
        row: dict = {"policy": label, "seeds": len(runs), "diverged": diverged, "per_seed": per_seed}
        for key, values in per_seed.items():
            row[key], row[key + "_std"] = float(np.mean(values)), float(np.std(values))
        rows.append(row)

    def cell(row: dict, key: str, fmt: str) -> str:
        return f"{row[key]:{fmt}}" + (f" ± {row[key + '_std']:.4f}" if row["seeds"] > 1 else "")

    start = next(iter(results.values()))[0].start
    lines = ["| policy | source score | target score | source bpb | target bpb | balanced score |",
             "|---|---:|---:|---:|---:|---:|",
             f"| (base model, start) | {start.scores['source']:.4f} | {start.scores['target']:.4f} | "
             f"{start.field_bpb(env.space, 'source'):.4f} | {start.field_bpb(env.space, 'target'):.4f} | 0 |"]
    lines += [f"| {r['policy']} | {cell(r, 'source_score', '.4f')} | {cell(r, 'target_score', '.4f')} | "
              f"{cell(r, 'source_bpb', '.4f')} | {cell(r, 'target_bpb', '.4f')} | {cell(r, 'balanced', '+.4f')} |"
              for r in rows]
    return "\n".join(lines), rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mixagent.demo", description=__doc__)
    parser.add_argument("--spec", default=str(ENVS_DIR / "math-natural.yaml"), help="environment spec YAML")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="episode seeds")
    parser.add_argument("--out", default=str(REPO_ROOT / "runs" / "demo"), help="where the table is written")
    parser.add_argument("--collect", default=str(CONFIGS_DIR / "collect/demo.yaml"),
                        help="collect config run after the rollouts (resumed if it exists; '' skips it)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the spec, e.g. steps=4")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    t0 = time.time()
    try:
        build(load_config(DataConfig, CONFIGS_DIR / "data/default.yaml"))
        env = MixingEnv(args.spec, overrides=args.overrides)
        natural = env.natural.to_mapping()
        policies: dict[str, MixingPolicy] = {
            "uniform": UniformPolicy(),
            "replay rho=0.5": ReplayPolicy(0.5, natural),
            "target-only": ReplayPolicy(0.0, natural),
        }
        log.info("spec %s: %d domains, %d steps x %d tokens; evaluation %s", env.spec_.name, env.space.k,
                 env.horizon, env.spec_.segment_tokens, getattr(env.backend, "evaluator", None) and
                 env.backend.evaluator.describe())
        results = compare(env, policies, args.seeds)
    except MixagentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    table, rows = format_table(env, results)
    out = Path(args.out) / env.spec_.name
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(table + "\n")
    (out / "table.json").write_text(json.dumps({"spec": env.spec_.name, "spec_hash": env.spec_.spec_hash(),
                                                "seeds": args.seeds, "rows": rows}, indent=2))
    print(f"\n{env.spec_.env_id}: {env.horizon} segments x {env.spec_.segment_tokens:,} tokens, seeds {args.seeds}; "
          f"scores = mean gold-choice probability (source: cloze, target: {env.spec_.eval.target.kind}); "
          f"balanced = {env.spec_.reward.name} (lam={env.spec_.reward.lam})\n")
    print(table)
    print(f"\nwritten to {out}/table.md  ({time.time() - t0:.0f}s so far)")
    if args.collect:
        from mixagent.trajectories.collect import CollectConfig, collect

        try:
            cfg = load_config(CollectConfig, args.collect)
            print(f"\ncollecting behaviour trajectories ({args.collect}): {cfg.trees} branching trees")
            print(collect(cfg, resume=True).format())
        except MixagentError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    print(f"\ndemo done in {time.time() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
