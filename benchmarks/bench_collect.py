"""Collection throughput: the branching gain and the 1 -> 2 worker scaling of both launchers.

    python benchmarks/bench_collect.py [--part branching|scaling|all]

* branching: logged transitions per CPU-hour of one default-shape tree (forks at steps 2, 4, 6, 7, factor 2)
  vs independent rollouts (no forks), both on the default spec (math-natural, 8 x 131k-token segments),
  the same launcher and worker (local, 1 worker x 2 threads) and the same behaviour mix.
* scaling: segments per second with 1 and 2 single-thread workers, for the local and the Ray launcher, on
  4 independent 4-step episodes of the default spec (work both workers can use); 1 worker x 2 threads is
  the single-process reference. Reported end to end (start-up included) and after start-up.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil

from mixagent.config import load_config
from mixagent.paths import CONFIGS_DIR, REPO_ROOT
from mixagent.rollout.tree import TreeConfig
from mixagent.trajectories.collector import CollectConfig, collect

OUT = REPO_ROOT / "runs/bench/collect"


def _run(cfg: CollectConfig) -> dict:
    shutil.rmtree(OUT / cfg.run, ignore_errors=True)
    s = collect(cfg, progress=False)
    session = json.loads((s.run_dir / "manifest.json").read_text())["sessions"][-1]
    cpu_hours = s.seconds * s.workers * s.threads / 3600
    row = {"run": cfg.run, "launcher": cfg.launcher, "workers": s.workers, "threads": s.threads,
           "seconds": round(s.seconds, 1), "startup_s": session.get("ready_s"), "segments": s.segments,
           "trajectories": s.new_trajectories, "transitions": s.new_transitions,
           "unique_transitions": s.stats["unique_transitions"],
           "transitions_per_cpu_hour": s.new_transitions / cpu_hours,
           "unique_per_cpu_hour": s.stats["unique_transitions"] / cpu_hours,
           "segments_per_s": s.segments / s.seconds,
           "segments_per_s_after_startup": s.segments / (s.seconds - session.get("ready_s", 0.0))}
    print(json.dumps(row), flush=True)
    shutil.rmtree(OUT / cfg.run, ignore_errors=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--part", choices=["branching", "scaling", "all"], default="all")
    parser.add_argument("--scaling-steps", type=int, default=4, help="steps of each of the 4 scaling episodes")
    args = parser.parse_args()
    base = load_config(CollectConfig, CONFIGS_DIR / "collect/v0.yaml",
                       [f"out_dir={OUT}", "launcher=local"])
    results: dict = {}
    if args.part in ("branching", "all"):
        indep = _run(dataclasses.replace(base, run="independent", trees=3, tree=TreeConfig(), workers=1,
                                         threads_per_worker=2))
        tree = _run(dataclasses.replace(base, run="branching", trees=1, workers=1, threads_per_worker=2))
        gain = tree["transitions_per_cpu_hour"] / indep["transitions_per_cpu_hour"]
        results["branching"] = {"independent": indep, "branching": tree, "gain": gain,
                                "unique_gain": tree["unique_per_cpu_hour"] / indep["unique_per_cpu_hour"]}
        print(f"branching gain: {gain:.2f}x logged transitions per CPU-hour "
              f"({tree['transitions_per_cpu_hour']:.0f} vs {indep['transitions_per_cpu_hour']:.0f}); "
              f"unique transitions {results['branching']['unique_gain']:.2f}x", flush=True)
    if args.part in ("scaling", "all"):
        work = dataclasses.replace(base, trees=4, tree=TreeConfig(), env_overrides=(f"steps={args.scaling_steps}",))
        rows = {"local_1x2": _run(dataclasses.replace(work, run="s-local-1x2", workers=1, threads_per_worker=2))}
        for launcher in ("local", "ray"):
            for w in (1, 2):
                cfg = dataclasses.replace(work, run=f"s-{launcher}-{w}", launcher=launcher, workers=w,
                                          threads_per_worker=1)
                rows[f"{launcher}_{w}x1"] = _run(cfg)
        results["scaling"] = rows
        for launcher in ("local", "ray"):
            one, two = rows[f"{launcher}_1x1"], rows[f"{launcher}_2x1"]
            ref = rows["local_1x2"]["segments_per_s"]
            print(f"{launcher}: 2 workers / 1 worker = {two['segments_per_s'] / one['segments_per_s']:.2f}x end to "
                  f"end, {two['segments_per_s_after_startup'] / one['segments_per_s_after_startup']:.2f}x after "
                  f"start-up; vs 1 worker x 2 threads {two['segments_per_s'] / ref:.2f}x", flush=True)
    out = REPO_ROOT / f"runs/bench/collect_{args.part}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
