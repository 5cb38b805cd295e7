"""``make demo``: the whole pipeline at demo scale on embedded defaults. Builds data, tokenizer and base
model (cached); collects a small branching set of behaviour trajectories (``configs/collect/demo.yaml``);
trains the agent on them (``configs/agent/demo.yaml``: BC then CQL); rolls the agent and three baselines
out on a held-out seed and prints source, target and balanced scores. Every stage resumes, so a rerun
only prints what is already done."""

from __future__ import annotations

import argparse
import logging
import sys
import time

from mixagent.config import load_config
from mixagent.data.build import DataConfig, build
from mixagent.errors import MixagentError
from mixagent.paths import CONFIGS_DIR

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mixagent.demo", description=__doc__)
    parser.add_argument("--collect", default=str(CONFIGS_DIR / "collect/demo.yaml"), help="collect config")
    parser.add_argument("--agent", default=str(CONFIGS_DIR / "agent/demo.yaml"), help="agent config")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the agent config")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    t0 = time.time()
    try:
        from mixagent.agent.config import AgentConfig
        from mixagent.agent.train import train_agent
        from mixagent.trajectories.collect import CollectConfig, collect

        build(load_config(DataConfig, CONFIGS_DIR / "data/default.yaml"))
        cfg = load_config(CollectConfig, args.collect)
        agent_cfg = load_config(AgentConfig, args.agent, args.overrides)
        print(f"\n[1/2] collecting behaviour trajectories ({args.collect}): {cfg.trees} branching trees")
        print(collect(cfg, resume=True).format())
        print(f"\n[2/2] training the agent ({args.agent}), then the online comparison")
        result = train_agent(agent_cfg, resume=True)
    except MixagentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"\nheld-out seeds {agent_cfg.eval.seeds}; scores = mean gold-choice probability of each field's "
          f"benchmark; balanced = change of the balanced score (final minus start, higher is better):\n")
    print(result.table)
    print(f"\ntable: {result.run_dir / 'table.md'}; policy artifacts: "
          f"{', '.join(str(p) for p in result.artifacts.values())}")
    print(f"demo done in {time.time() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
