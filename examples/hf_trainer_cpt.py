"""Continual pre-training of a larger model than the proxy on the math field with a Hugging Face Trainer, its
data mixture driven by a mixing policy through ``MixAgentCallback``: the YAML deploy job, called from Python.

    python examples/hf_trainer_cpt.py                                          # configs/deploy/cpt.yaml as it is
    python examples/hf_trainer_cpt.py policy.spec=runs/agent/default/rl        # the trained agent
    python examples/hf_trainer_cpt.py policy.spec=uniform                      # a baseline, same length
    python examples/hf_trainer_cpt.py model.path=configs/base_model/8m.yaml    # the ~8M base (long pre-training)
    torchrun --nproc_per_node 2 examples/hf_trainer_cpt.py trainer.max_steps=40   # DDP through accelerate
    python examples/hf_trainer_cpt.py model.kind=smollm2_gguf eval.kind=held_out \\
        data.corpora=configs/spaces/math-natural.yaml                          # SmolLM2-135M (GPU-scale)
    python examples/hf_trainer_cpt.py --config configs/deploy/user-jsonl.yaml  # your model and your data

``configs/deploy/cpt.yaml``: the 2m base (pre-trained on the source field and cached, 3x the proxy)
trained for 200 steps on environment v1's domains, scored on the env's benchmarks before every decision.
Every ``key=value`` overrides a field of :class:`mixagent.deploy.DeployConfig`; ``resume=true`` continues
from the last Trainer checkpoint in ``trainer.output_dir`` (the mixing state is restored with it);
``report=<file>`` also writes the report there (and each rank's, rank-suffixed, under DDP). The same run
from the shell: ``python -m mixagent.deploy --config configs/deploy/cpt.yaml key=value ...``.
"""

from __future__ import annotations

import argparse
import logging
import os

from mixagent.config import load_config
from mixagent.deploy import DeployConfig, run_deploy
from mixagent.paths import CONFIGS_DIR


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(CONFIGS_DIR / "deploy/cpt.yaml"), help="deploy config YAML")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. policy.spec=uniform trainer.max_steps=40")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = load_config(DeployConfig, args.config, args.overrides)  # every problem at once, before anything loads
    report = run_deploy(cfg, progress=False)  # the Trainer, the callback, the report in cfg.output_dir
    if int(os.environ.get("RANK", "0")) == 0:  # every decision: when, and the mixture the policy chose
        for h in report["history"]:
            print(f"  progress {h['progress']:.2f}: " + ", ".join(
                f"{d} {w:.3f}" for d, w in zip(report["domains"], h["weights"])))
    return report


if __name__ == "__main__":
    main()
