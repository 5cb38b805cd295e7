"""Roll a mixing policy out in a registered mixagent environment and print what happens each step.

    .venv/bin/python examples/rollout_policy.py [--env mixagent/math-natural-v0] [--rho 0.5] [--seed 0]

``--rho`` picks a replay policy (share of source-field data); ``--rho 0`` is target-only.
"""

from __future__ import annotations

import argparse

import gymnasium

from mixagent.policies import ReplayPolicy
from mixagent.rollout.episode import rollout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="mixagent/math-natural-v0")
    parser.add_argument("--rho", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    env = gymnasium.make(args.env if ":" in args.env else f"mixagent.envs:{args.env}").unwrapped
    policy = ReplayPolicy(args.rho, env.natural.to_mapping())

    def show(info: dict) -> None:
        if info["nonfinite_loss"]:
            print("  the proxy diverged (NaN/Inf loss): episode truncated")
            return
        e = info["eval"]
        print(f"  source score {e['scores']['source']:.4f}  target score {e['scores']['target']:.4f}  "
              f"balanced {info['balanced_score']:+.4f}  train loss {info['train_loss']:.3f}")

    r = rollout(env, policy, seed=args.seed, progress=show)
    print(f"return {r.ret:+.4f} over {len(r.steps)} steps (truncated: {r.truncated})")


if __name__ == "__main__":
    main()
