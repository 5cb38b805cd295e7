"""``python -m mixagent.agent train --config configs/agent/<name>.yaml [key=value ...] [--resume]``

Trains the data-mixing agent on collected trajectories: behaviour cloning of the best trajectories
("SFT"), then offline RL (CQL by default, IQL or TD3+BC); exports both as policy artifacts; logs offline
estimates (FQE, TD error, action difference); rolls both out against the baselines on held-out seeds and
prints the table. See :mod:`mixagent.agent.train` for the run directory.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from mixagent.errors import MixagentError
from mixagent.paths import CONFIGS_DIR

__all__ = ["main", "cli", "COMMANDS"]


def main(argv: list[str] | None = None, prog: str = "python -m mixagent.agent train") -> int:
    """Run the ``train`` command; ``argv`` excludes the command word."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(CONFIGS_DIR / "agent/default.yaml"), help="agent config YAML")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in the config's run directory from its last checkpoint")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. rl.algo=iql rl.steps=2000")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    t0 = time.time()
    try:
        from mixagent.agent.config import AgentConfig
        from mixagent.agent.train import train_agent
        from mixagent.config import load_config
        from mixagent.model_based.synthetic import world_model_data

        cfg = load_config(AgentConfig, args.config, args.overrides)
        result = train_agent(cfg, resume=args.resume, progress=not args.no_progress, world_model=world_model_data(cfg))
    except MixagentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    off = result.offline
    print(f"\nagent run {result.run_dir}")
    for stage, metrics in off.items():
        print(f"  offline {stage}: " + ", ".join(f"{k}={v:+.4f}" if v is not None else f"{k}=n/a (diverged)"
                                                  for k, v in metrics.items()))
    print(f"\nonline evaluation, seeds {cfg.eval.seeds} (mean ± std over seeds; balanced = the env's reward score at "
          f"the end: the gain over the start for relative rewards, the normalised score for normalised ones):\n")
    print(result.table)
    print(f"\nartifacts: {', '.join(str(p) for p in result.artifacts.values())}; table: {result.run_dir / 'table.md'}")
    print("seconds per stage: " + ", ".join(f"{k} {v:.0f}" for k, v in result.seconds.items())
          + f"; this call {time.time() - t0:.0f}s")
    return 0


def per_domain(argv: list[str] | None = None) -> int:
    """Run the ``per-domain`` command: behaviour cloning of the per-domain policy (any domain space)."""
    from mixagent.agent.train_per_domain import main as per_domain_main

    return per_domain_main(argv)


def _model_based(command: str):
    def run(argv: list[str] | None = None) -> int:
        from mixagent.model_based.__main__ import COMMANDS as MODEL_BASED

        return MODEL_BASED[command](argv)
    return run


# world-model, plan and variants live in mixagent.model_based; kept here so the older commands keep working
COMMANDS = {"train": main, "per-domain": per_domain,
            **{c: _model_based(c) for c in ("world-model", "plan", "variants")}}


def cli(argv: list[str] | None = None) -> int:
    """``python -m mixagent.agent <command> ...``: ``train``, ``world-model``, ``plan``, ``per-domain`` or
    ``variants``."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print("usage: python -m mixagent.agent train --config configs/agent/<name>.yaml [key=value ...] [--resume]\n"
              "       python -m mixagent.agent world-model [--config configs/world_model/<name>.yaml] [key=value ...]\n"
              "       python -m mixagent.agent plan [--world-model DIR] [--seeds 0 1 2] [--penalty 0.05]\n"
              "       python -m mixagent.agent per-domain [--data RUN ...] [--out DIR] [--steps N]\n"
              "       python -m mixagent.agent variants [--config configs/agent/variants.yaml]\n"
              "       (python -m mixagent.train_agent ... is the train command)", file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(cli())
