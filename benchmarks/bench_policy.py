"""Decision latency of a trained policy artifact (goal: <= 1 ms per decision on this CPU), and the agent's
training throughput (gradient steps per second) read from its run log.

    python benchmarks/bench_policy.py [--artifact runs/agent/default/rl] [--calls 5000]

A decision is ``AgentPolicy.act(observation)``: the MLP forward pass in plain torch plus the action map
to validated DomainWeights. Timed per call (median, p99) with 1 torch thread and with the default.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from mixagent.agent.dataset import space_from_meta
from mixagent.paths import REPO_ROOT
from mixagent.policies.artifact import load_policy


def time_calls(fn, inputs: np.ndarray) -> list[float]:
    for x in inputs[:200]:  # warm-up
        fn(x)
    out = []
    for x in inputs:
        t0 = time.perf_counter()
        fn(x)
        out.append(time.perf_counter() - t0)
    return out


def random_artifact() -> Path:
    """No trained artifact yet: latency does not depend on the weights' values, so time a randomly
    initialised policy of the default shape (math-natural: K=8, hidden [64, 64])."""
    from mixagent.domains import DomainSpace
    from mixagent.policies.artifact import random_artifact as make_random

    print("no trained policy artifact found (make train-agent or make demo makes one): timing a random one")
    space = DomainSpace.from_yaml(REPO_ROOT / "configs/spaces/math-natural.yaml")
    return make_random(REPO_ROOT / "runs/bench/random_policy", space)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifact", default="", help="artifact directory (default: the first of "
                        "runs/agent/{default,demo}/rl that exists)")
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--out", default=str(REPO_ROOT / "runs/bench/policy.json"))
    args = parser.parse_args()
    candidates = ([Path(args.artifact)] if args.artifact
                  else [REPO_ROOT / f"runs/agent/{n}/rl" for n in ("default", "demo")])
    path = next((p for p in candidates if (p / "meta.json").is_file()), None) or random_artifact()
    t0 = time.perf_counter()
    policy = load_policy(path)
    load_s = time.perf_counter() - t0
    policy.reset(space_from_meta({"names": policy.names, "fields": policy.fields}))
    obs = np.random.default_rng(0).normal(size=(args.calls, policy.obs_dim)).astype(np.float32)
    rows = {"artifact": str(path), "hidden": policy.meta["network"]["hidden"], "obs_dim": policy.obs_dim,
            "k": len(policy.names), "load_s": load_s}
    default_threads = torch.get_num_threads()
    for threads in (1, default_threads):
        torch.set_num_threads(threads)
        act, net = time_calls(policy.act, obs), time_calls(policy.action, obs)
        rows[f"threads_{threads}"] = {
            "act_median_us": 1e6 * statistics.median(act), "act_p99_us": 1e6 * float(np.percentile(act, 99)),
            "forward_median_us": 1e6 * statistics.median(net)}
        r = rows[f"threads_{threads}"]
        print(f"{path} ({rows['hidden']}, K={rows['k']}), {threads} torch thread(s): act() median "
              f"{r['act_median_us']:.0f} us, p99 {r['act_p99_us']:.0f} us (forward alone "
              f"{r['forward_median_us']:.0f} us)")
    log = path.parent / "log.jsonl"
    if log.is_file():
        speeds = {x["stage"]: x["steps_per_second"] for x in map(json.loads, log.read_text().splitlines())
                  if "steps_per_second" in x}
        rows["train_steps_per_second"] = speeds
        print("training throughput from its log: " + ", ".join(f"{k} {v:.0f} steps/s" for k, v in speeds.items()))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
