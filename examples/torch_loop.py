"""A mixing policy drives continual pre-training in a plain PyTorch loop (no transformers Trainer).

    python examples/torch_loop.py --policy replay:0.5 --steps 200 --every 25
    python examples/torch_loop.py --policy runs/agent/default/rl            # a trained agent
    torchrun --nproc_per_node 2 examples/torch_loop.py --steps 40           # DDP (gloo on CPU, nccl on GPU)

The loop: the base model (pre-trained on the source field) trains on batches from a MixtureDataset;
every ``--every`` steps the Mixer evaluates it, asks the policy for a mixture and publishes it to the
data. ``--save-every`` writes model, optimizer and mixing state to ``--out/checkpoint-<step>`` (each
directory appears whole or not at all); ``--resume`` continues from the latest bit for bit.
``--report`` writes what happened as JSON (used by the tests). The same run with a Hugging Face Trainer is
the deploy job (``examples/hf_trainer_cpt.py``, ``python -m mixagent.deploy --config configs/deploy/cpt.yaml``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from mixagent.deploy.local import INITIAL_MIXTURES, build_local_run
from mixagent.deploy.loop import Mixer
from mixagent.deploy.mixture import default_lag
from mixagent.deploy.scheduler import MixingScheduler, SchedulerConfig
from mixagent.env.rewards import balanced_score


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--policy", default="replay:0.5", help="uniform|natural|target_only|replay:<rho>|artifact dir")
    p.add_argument("--base", default="configs/base_model/default.yaml", help="base-model config of the trained model")
    p.add_argument("--space", default="configs/spaces/math-sub.yaml", help="domain space (environment v1's)")
    p.add_argument("--env", default="envs/math-cpt.yaml", help="env spec whose eval block is used (v1's)")
    p.add_argument("--initial", default="natural", choices=INITIAL_MIXTURES, help="the starting mixture")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--every", type=int, default=25, help="optimizer steps between mixture updates")
    p.add_argument("--batch", type=int, default=8, help="sequences per step on each rank")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--floor", type=float, default=0.0, help="minimum weight of every domain")
    p.add_argument("--max-change", type=float, default=1.0, help="largest total-variation move per update")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/deploy/torch_loop")
    p.add_argument("--save-every", type=int, default=0, help="checkpoint every N steps (0: never)")
    p.add_argument("--stop-after", type=int, default=0, help="stop after N steps (to test --resume)")
    p.add_argument("--resume", action="store_true", help="continue from the latest --out/checkpoint-<step>")
    p.add_argument("--report", default="", help="write a JSON report here (rank-suffixed under DDP)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ddp = "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1
    device = torch.device("cpu")
    if ddp:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
        if backend == "nccl":
            device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
            torch.cuda.set_device(device)
    elif torch.cuda.is_available():
        device = torch.device("cuda")
    rank = torch.distributed.get_rank() if ddp else 0
    torch.manual_seed(args.seed)
    torch.set_num_threads(max(1, (os.cpu_count() or 2) // (2 if ddp else 1)))

    run = build_local_run(args.base, args.space, args.env)
    model = run.base.model.to(device)
    policy = run.policy(args.policy)
    initial = run.initial(args.initial, model, seed=args.seed)
    scheduler = MixingScheduler(policy, run.space, initial, SchedulerConfig(args.floor, args.max_change))
    dataset = run.dataset(args.batch, seed=args.seed, return_domain_ids=True)
    mixer = Mixer(scheduler, dataset, run.evaluator, lag=default_lag(args.workers, extra=1))
    train_model = torch.nn.parallel.DistributedDataParallel(model) if ddp else model
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    step = 0
    if args.resume:
        from safetensors.torch import load_model

        ckpts = sorted(Path(args.out).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
        if not ckpts:
            raise SystemExit(f"--resume: no checkpoint-* directory in {args.out}")
        ckpt = ckpts[-1]
        step = mixer.load(ckpt / "mixagent_state.json")
        load_model(model, str(ckpt / "model.safetensors"))
        opt.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=True))
        torch.set_rng_state(torch.load(ckpt / "rng.pt", weights_only=True))
    else:
        mixer.begin(model, lr=opt.param_groups[0]["lr"] / args.lr)  # the LR is seen by policies that observe it
    start_eval = scheduler.start_eval
    loader = DataLoader(dataset, batch_size=args.batch, num_workers=args.workers)
    digest, rows = hashlib.sha256(), []  # what this rank trained on, for the report
    last = args.stop_after or args.steps
    model.train()
    for batch in loader:
        if step >= last:
            break
        ids = batch["input_ids"].to(device)
        digest.update(batch["input_ids"].numpy().tobytes())
        rows.append([hashlib.sha1(r.tobytes()).hexdigest()[:12] for r in batch["input_ids"].numpy()])
        logits = train_model(input_ids=ids[:, :-1]).logits
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), ids[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % args.every == 0 and step < args.steps:
            mixer.update(model, consumed_batches=step, progress=step / args.steps,
                         lr=opt.param_groups[0]["lr"] / args.lr)
            model.train()
        if args.save_every and step % args.save_every == 0 and rank == 0:
            from safetensors.torch import save_model

            from mixagent.paths import staged_dir

            with staged_dir(Path(args.out) / f"checkpoint-{step}") as tmp:  # all files appear at once, or none
                save_model(model, str(tmp / "model.safetensors"))
                torch.save(opt.state_dict(), tmp / "optimizer.pt")
                torch.save(torch.get_rng_state(), tmp / "rng.pt")
                mixer.save(tmp / "mixagent_state.json", consumed_batches=step)
    final = run.evaluator(model, tokens_seen=step * mixer.tokens_per_batch)
    report = {"policy": args.policy, "steps": step, "rank": rank, "batches_sha256": digest.hexdigest(), "rows": rows,
              "weights": [h["weights"] for h in scheduler.history], "schedule": dataset.schedule.entries(),
              "start": start_eval.to_json(), "final": final.to_json(),
              "balanced": balanced_score("balanced", 0.5, start_eval, final, run.space)}
    if rank == 0:
        print(f"{args.policy}: {step} steps; source {start_eval.scores['source']:.4f} -> {final.scores['source']:.4f}, "
              f"target {start_eval.scores['target']:.4f} -> {final.scores['target']:.4f}, "
              f"balanced {report['balanced']:+.4f}")
    if args.report:
        path = Path(args.report)
        path = path.with_name(f"{path.stem}.rank{rank}{path.suffix}") if ddp else path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=1))
    if ddp:
        torch.distributed.destroy_process_group()
    return report


if __name__ == "__main__":
    main()
