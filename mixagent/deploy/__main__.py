"""``python -m mixagent.deploy --config configs/deploy/<name>.yaml [key=value ...]``

Continual pre-training of your model on your data with a Hugging Face Trainer, the data mixture driven by
a mixing policy (a trained agent, a baseline or a registered method). One YAML names the model, the data,
the policy, the evaluation and the Trainer arguments (``mixagent.deploy.job_config.DeployConfig``);
``key=value`` overrides any field (``trainer.max_steps=500``, ``policy.spec=uniform``, ``resume=true``).
The output directory gets ``report.md`` with the mixture and held-out loss plots. See
``configs/deploy/`` for the shipped jobs (``configs/deploy/cpt.yaml`` is the Trainer CPT run on mixagent's
corpora that the legacy flag-driven ``python -m mixagent.deploy.cpt`` maps onto). Under
``torchrun --nproc_per_node N -m mixagent.deploy ...`` the run is DDP through accelerate.
"""

from __future__ import annotations

import argparse
import logging
import sys

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mixagent.deploy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="deploy config YAML (configs/deploy/*.yaml)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    parser.add_argument("--check-config", action="store_true",
                        help="validate the config and the overrides (every problem at once), then exit; loads nothing")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. trainer.max_steps=200")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from mixagent.deploy.job import run_config

    return run_config(args.config, args.overrides, progress=not args.no_progress, check_only=args.check_config)


if __name__ == "__main__":
    sys.exit(main())
