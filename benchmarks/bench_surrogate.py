"""Episodes per minute of the surrogate env (goal: thousands on one CPU core), beside the real
env's seconds per step from ``bench_env_step.py``.

    python benchmarks/bench_surrogate.py [--world-model checkpoints/world_models/math-cpt-v1] [--episodes 500]

An episode is ``reset`` then ``T`` steps with random actions through ``gymnasium.make``'s env (the
committed world model, ensemble mean), and the same with ``mode="sample"`` and the uncertainty penalty.
One torch and one BLAS thread.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from mixagent.model_based.surrogate import make_surrogate_env  # noqa: E402
from mixagent.paths import REPO_ROOT  # noqa: E402


def episodes_per_minute(env, episodes: int) -> float:
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for ep in range(episodes):
        env.reset(seed=ep)
        done = False
        while not done:
            _, _, terminated, truncated, _ = env.step(rng.uniform(-1, 1, env.action_space.shape))
            done = terminated or truncated
    return 60 * episodes / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--world-model", default=str(REPO_ROOT / "checkpoints/world_models/math-cpt-v1"))
    parser.add_argument("--episodes", type=int, default=500)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    for label, kwargs in (("mean", {}), ("sample + penalty 0.5", {"mode": "sample", "penalty": 0.5})):
        env = make_surrogate_env(args.world_model, **kwargs)
        episodes_per_minute(env, 20)  # warm-up
        rate = episodes_per_minute(env, args.episodes)
        print(f"surrogate ({label}): {rate:,.0f} episodes/min, {60 / rate / env.unwrapped.horizon * 1e3:.2f} ms/step "
              f"({args.episodes} episodes of {env.unwrapped.horizon} steps)")


if __name__ == "__main__":
    main()
