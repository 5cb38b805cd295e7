"""``make demo``: the whole pipeline at demo scale on embedded defaults. Builds data, tokenizer and base
model (cached); collects a small branching set of behaviour trajectories (``configs/collect/demo.yaml``);
trains the agent on them (``configs/agent/demo.yaml``: BC then CQL); rolls the agent and three baselines
out on a held-out seed and prints source, target and balanced scores. Then deploys: the best available
policy (the default agent when ``make train-agent`` made it, else the demo's) drives a short Hugging Face
Trainer run of continual pre-training of a larger model (``configs/base_model/2m.yaml``, 4x the proxy;
``python -m mixagent.deploy.cpt``) next to a uniform-mixture run of the same length. Every stage resumes,
so a rerun only prints what is already done."""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

from mixagent.config import load_config
from mixagent.data.build import DataConfig, build
from mixagent.errors import MixagentError
from mixagent.paths import CONFIGS_DIR, REPO_ROOT

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mixagent.demo", description=__doc__)
    parser.add_argument("--collect", default=str(CONFIGS_DIR / "collect/demo.yaml"), help="collect config")
    parser.add_argument("--agent", default=str(CONFIGS_DIR / "agent/demo.yaml"), help="agent config")
    parser.add_argument("--deploy-steps", type=int, default=120, help="Trainer steps of each deployment run")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the agent config")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    t0 = time.time()
    try:
        from mixagent.agent import AgentConfig, train_agent
        from mixagent.trajectories import CollectConfig, collect

        build(load_config(DataConfig, CONFIGS_DIR / "data/default.yaml"))
        cfg = load_config(CollectConfig, args.collect)
        agent_cfg = load_config(AgentConfig, args.agent, args.overrides)
        print(f"\n[1/3] collecting behaviour trajectories ({args.collect}): {cfg.trees} branching trees")
        print(collect(cfg, resume=True).format())
        print(f"\n[2/3] training the agent ({args.agent}), then the online comparison")
        result = train_agent(agent_cfg, resume=True)
    except MixagentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"\nheld-out seeds {agent_cfg.eval.seeds}; scores = mean gold-choice probability of each field's "
          f"benchmark; balanced = change of the balanced score (final minus start, higher is better):\n")
    print(result.table)
    print(f"\ntable: {result.run_dir / 'table.md'}; policy artifacts: "
          f"{', '.join(str(p) for p in result.artifacts.values())}")
    default = REPO_ROOT / "runs/agent/default/rl"
    best = default if (default / "meta.json").exists() else result.artifacts["rl"]
    print(f"\n[3/3] deployment: {best} drives a Trainer run of the 2m base model ({args.deploy_steps} steps), "
          f"next to a uniform mixture")
    rows = [deploy(str(best), args.deploy_steps), deploy("uniform", args.deploy_steps)]
    if any(r is None for r in rows):
        return 2
    print(deploy_table(rows, ["agent", "uniform"]))
    print(f"demo done in {time.time() - t0:.0f}s")
    return 0


def deploy(policy: str, steps: int) -> dict | None:
    """One ``python -m mixagent.deploy.cpt`` run in a fresh process (its report is reused when it already
    exists)."""
    label = "agent" if Path(policy).is_dir() else policy
    report = REPO_ROOT / f"runs/deploy/demo/{label}-{steps}.json"
    cached = json.loads(report.read_text()) if report.exists() else {}
    if cached.get("policy") == policy:
        return cached
    cmd = [sys.executable, "-m", "mixagent.deploy.cpt", "--policy", policy, "--steps", str(steps),
           "--every", str(max(1, steps // 6)), "--out", str(REPO_ROOT / f"runs/deploy/demo/{label}"),
           "--report", str(report)]
    print("$ python " + " ".join(cmd[1:]), flush=True)
    if subprocess.run(cmd, cwd=REPO_ROOT).returncode != 0:
        print(f"error: the deployment run of {policy} failed (see above)", file=sys.stderr)
        return None
    return json.loads(report.read_text())


def deploy_table(rows: list[dict], labels: list[str]) -> str:
    lines = ["| policy | source score (start -> end) | target score (start -> end) | balanced | final mixture |",
             "|---|---|---|---:|---|"]
    for label, r in zip(labels, rows):
        s, f = r["start"]["scores"], r["final"]["scores"]
        top = sorted(zip(r["domains"], r["weights"][-1]), key=lambda x: -x[1])[:3]
        lines.append(f"| {label} | {s['source']:.4f} -> {f['source']:.4f} | {s['target']:.4f} -> {f['target']:.4f} "
                     f"| {r['balanced']:+.4f} | {', '.join(f'{n} {w:.2f}' for n, w in top)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
