"""Environment step time split into proxy training and evaluation, on the real LM backend.

    python benchmarks/bench_env_step.py [--specs math-natural math-2d math-52 code-natural] [--steps 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from mixagent.env.environment import MixingEnv
from mixagent.paths import ENVS_DIR, REPO_ROOT


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--specs", nargs="+", default=["math-natural", "math-2d", "math-52", "code-natural"])
    parser.add_argument("--steps", type=int, default=3, help="steps measured per spec")
    parser.add_argument("--out", default=str(REPO_ROOT / "runs/bench/env_step.json"))
    args = parser.parse_args()
    rows = []
    for name in args.specs:
        t0 = time.perf_counter()
        env = MixingEnv(ENVS_DIR / f"{name}.yaml")
        build_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        env.reset(seed=0)
        reset_s = time.perf_counter() - t0
        train, evals, total = [], [], []
        for _ in range(min(args.steps, env.horizon)):
            t0 = time.perf_counter()
            env.step(np.zeros(env.space.k, np.float32))
            total.append(time.perf_counter() - t0)
            train.append(env.timings["train_seconds"])
            evals.append(env.timings["eval_seconds"])
        ev = env.backend.evaluator.describe()
        row = {"spec": name, "K": env.space.k, "segment_tokens": env.spec_.segment_tokens,
               "eval_tokens": ev["eval_tokens"], "benchmark_items": ev["items"],
               "train_s": statistics.median(train), "eval_s": statistics.median(evals),
               "step_s": statistics.median(total), "train_tok_s": env.spec_.segment_tokens / statistics.median(train),
               "build_s": build_s, "reset_s": reset_s, "steps": len(total)}
        rows.append(row)
        print(f"{name:13s} K={row['K']:2d} step {row['step_s']:5.2f}s = train {row['train_s']:5.2f}s "
              f"({row['train_tok_s']:.0f} tok/s) + eval {row['eval_s']:4.2f}s ({row['eval_tokens']} tokens); "
              f"env build {build_s:.1f}s, reset {reset_s:.1f}s")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
