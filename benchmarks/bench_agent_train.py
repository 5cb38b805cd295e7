"""Agent training throughput (gradient steps per second) of the SFT (BC) and RL (CQL) stages on a device,
and the check that an artifact trained there loads on CPU and acts like the d3rlpy policy.

    python benchmarks/bench_agent_train.py [--runs trajectories/default] [--device cpu|cuda:0] [--steps 500]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mixagent.agent.algos import actor_tensors, import_d3rlpy, make_rl, make_sft
from mixagent.agent.config import RLConfig, SFTConfig
from mixagent.agent.dataset import build_transitions, load_trajectories, to_d3rlpy
from mixagent.paths import REPO_ROOT
from mixagent.policies.artifact import load_policy, write_artifact


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", default=[str(REPO_ROOT / "trajectories/default")])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--hidden", type=int, nargs="+", default=[64, 64])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", default=str(REPO_ROOT / "runs/bench/agent_train.json"))
    args = parser.parse_args()
    d3rlpy = import_d3rlpy()
    tset = load_trajectories(args.runs)
    tr = build_transitions(tset, "balanced", 0.5)
    ds = to_d3rlpy(tr, tset.space.k)
    mean, std = tr.observations.mean(0), tr.observations.std(0)
    rows = {"device": args.device, "gpu": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else None,
            "transitions": len(tr), "hidden": args.hidden, "batch_size": args.batch_size, "steps": args.steps}
    stages = {"sft": make_sft(SFTConfig(batch_size=args.batch_size, hidden=args.hidden), mean, std, args.device),
              "rl": make_rl(RLConfig(batch_size=args.batch_size, hidden=args.hidden), mean, std, args.device)}
    for name, algo in stages.items():
        d3rlpy.seed(0)
        algo.create_impl((tr.observations.shape[1],), tset.space.k)
        for _ in range(20):  # warm-up (CUDA context, allocator)
            algo.update(ds.sample_transition_batch(args.batch_size))
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(args.steps):
            algo.update(ds.sample_transition_batch(args.batch_size))
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        rate = args.steps / (time.perf_counter() - t0)
        with tempfile.TemporaryDirectory() as tmp:
            meta = {"algo": name, "domains": {"names": list(tset.space.names), "fields": list(tset.space.fields)},
                    "observation": {"version": 1, "dim": tr.observations.shape[1]},
                    "action": {"temperature": 0.25, "floor": 0.0}, "network": {"hidden": args.hidden}}
            policy = load_policy(write_artifact(Path(tmp), actor_tensors(algo), meta), device="cpu")
            cpu = np.stack([policy.action(o) for o in tr.observations])
        diff = float(np.abs(cpu - algo.predict(tr.observations)).max())
        rows[name] = {"steps_per_second": rate, "artifact_max_abs_diff_vs_d3rlpy": diff}
        print(f"{name}: {rate:.0f} steps/s on {args.device} ({len(tr)} transitions, batch {args.batch_size}, "
              f"hidden {args.hidden}); CPU-loaded artifact vs d3rlpy predict: max |diff| {diff:.2e}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
