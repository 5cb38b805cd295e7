"""Side-by-side comparison of mixing policies: per-episode summaries and the markdown table (mean ±
standard deviation over seeds) that the demo and the agent's online evaluation print."""

from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np
from tqdm import tqdm

from mixagent.domains import DomainSpace
from mixagent.env.environment import MixingEnv
from mixagent.env.evaluation import EvalResult
from mixagent.policies import MixingPolicy
from mixagent.rollout.episode import rollout, summarize

__all__ = ["roll_all", "format_table", "bpb_balanced", "METRICS"]

METRICS = ("source_score", "target_score", "source_bpb", "target_bpb", "balanced", "balanced_bpb")


def roll_all(env: MixingEnv, policies: Mapping[str, MixingPolicy], seeds: list[int]) -> dict[str, list[dict]]:
    """Roll every policy out on every seed in this process, with one progress bar over all segments."""
    results: dict[str, list[dict]] = {}
    with tqdm(total=len(policies) * len(seeds) * env.horizon, desc="rollouts", unit="segment") as bar:
        for name, policy in policies.items():
            bar.set_postfix_str(name)
            results[name] = [summarize(rollout(env, policy, seed, progress=lambda _: bar.update()), env.space, seed)
                             for seed in seeds]
    return results


def bpb_balanced(summary: dict, space: DomainSpace, lam: float) -> float:
    """The balanced score measured in held-out bits per byte (``balanced_bpb`` at the episode's end): a
    second, much less noisy lens on the same episode than the benchmark-based score."""
    start = EvalResult.from_json(summary["start"])
    b0s, b0t = start.field_bpb(space, "source"), start.field_bpb(space, "target")
    return lam * (b0t - summary["target_bpb"]) / b0t + (1 - lam) * (b0s - summary["source_bpb"]) / b0s


def format_table(results: Mapping[str, list[dict]], space: DomainSpace, lam: float = 0.5,
                 start_score: float = 0.0) -> tuple[str, list[dict]]:
    """A markdown table and its rows (mean, sample standard deviation (ddof 1, as the audit and the
    comparison) and per-seed values of each metric). ``start_score``: the reward's balanced score of the
    base model (0 for relative rewards; ``B_0`` for normalised ones), shown on the start row."""
    rows = []
    for name, runs in results.items():
        runs = [{**r, "balanced_bpb": bpb_balanced(r, space, lam)} for r in runs]
        per_seed = {key: [r[key] for r in runs] for key in METRICS}
        diverged = sum(r["truncated"] for r in runs)
        label = f"{name} ({diverged} of {len(runs)} diverged)" if diverged else name
        row: dict = {"policy": label, "seeds": [r["seed"] for r in runs], "diverged": diverged, "per_seed": per_seed}
        for key, values in per_seed.items():
            row[key] = float(np.mean(values))
            row[key + "_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        rows.append(row)

    def cell(row: dict, key: str, fmt: str) -> str:
        return f"{row[key]:{fmt}}" + (f" ± {row[key + '_std']:.4f}" if len(row["seeds"]) > 1 else "")

    lines = ["| policy | source score | target score | source bpb | target bpb | balanced score | balanced (bpb) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    starts = {json.dumps(r["start"], sort_keys=True) for runs in results.values() for r in runs}
    if len(starts) == 1:  # one start state (the base model) for every episode: show it once
        start = EvalResult.from_json(next(iter(results.values()))[0]["start"])
        lines.append(f"| (base model, start) | {start.scores['source']:.4f} | {start.scores['target']:.4f} | "
                     f"{start.field_bpb(space, 'source'):.4f} | {start.field_bpb(space, 'target'):.4f} | "
                     f"{start_score:+.4f} | 0 |")
    lines += [f"| {r['policy']} | {cell(r, 'source_score', '.4f')} | {cell(r, 'target_score', '.4f')} | "
              f"{cell(r, 'source_bpb', '.4f')} | {cell(r, 'target_bpb', '.4f')} | {cell(r, 'balanced', '+.4f')} | "
              f"{cell(r, 'balanced_bpb', '+.4f')} |"
              for r in rows]
    return "\n".join(lines), rows

