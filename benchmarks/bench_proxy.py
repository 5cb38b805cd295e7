"""Proxy training throughput: mixagent's training segment vs a bare torch loop over the same model and
the same token batches (same AdamW and gradient clipping; the bare loop has no sampler, no learning-rate
schedule and no NaN check). Both run in this process, interleaved, so machine noise hits both alike.

    python benchmarks/bench_proxy.py [--sizes 0.5m 2m] [--steps 60] [--repeats 7]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mixagent.config import load_config
from mixagent.data.domain_data import DomainData
from mixagent.data.tokenizer import get_tokenizer, tokenizer_dir
from mixagent.domains import DomainSpace
from mixagent.env.base_model import BaseModelConfig
from mixagent.env.lm import build_model, resolve_size
from mixagent.env.proxy import OptimConfig, make_optimizer, train_segment
from mixagent.paths import CONFIGS_DIR, REPO_ROOT
from mixagent.sampling import MixtureSampler


def bare_loop(model, optimizer, batches, clip):
    params = [p for p in model.parameters() if p.requires_grad]
    model.train()
    t0 = time.perf_counter()
    for batch in batches:
        logits = model(input_ids=batch[:, :-1]).logits
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), batch[:, 1:].reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, clip, foreach=True)
        optimizer.step()
    return time.perf_counter() - t0


def run_ours(mcfg, cfg, streams, weights, steps, seed) -> float:
    model = build_model(mcfg, seed=0)
    sampler = MixtureSampler(streams, mcfg.seq_len + 1, seed=seed)
    stats = train_segment(model, make_optimizer(model, cfg), sampler, weights, steps, 0, steps, cfg)
    return stats.tokens / stats.seconds


def run_bare(mcfg, cfg, batches) -> float:
    model = build_model(mcfg, seed=0)
    seconds = bare_loop(model, make_optimizer(model, cfg), batches, cfg.grad_clip)
    return len(batches) * cfg.micro_batch * mcfg.seq_len / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", nargs="+", default=["0.5m", "2m"])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default=str(REPO_ROOT / "runs/bench/proxy.json"))
    args = parser.parse_args()
    base = load_config(BaseModelConfig, CONFIGS_DIR / "base_model/default.yaml")
    tok = get_tokenizer(base.tokenizer)
    space = DomainSpace.from_yaml(CONFIGS_DIR / "spaces/math-natural.yaml")
    data = DomainData(space, tok, tokenizer_dir(base.tokenizer).name)
    weights = np.full(space.k, 1 / space.k)
    cfg = OptimConfig()
    torch.set_num_threads(cfg.threads)
    results = []
    for size in args.sizes:
        mcfg = dataclasses.replace(resolve_size(size), seq_len=base.seq_len, vocab_size=len(tok))
        ours, bare = [], []
        for rep in range(args.repeats + 1):  # the first round warms up and is discarded
            replay = MixtureSampler(data.train, mcfg.seq_len + 1, seed=rep)  # the very same batches
            batches = [torch.from_numpy(replay.sample(weights, cfg.micro_batch)) for _ in range(args.steps)]
            if rep % 2:  # alternate the order so neither side always runs on a warmer machine
                b = run_bare(mcfg, cfg, batches)
                o = run_ours(mcfg, cfg, data.train, weights, args.steps, rep)
            else:
                o = run_ours(mcfg, cfg, data.train, weights, args.steps, rep)
                b = run_bare(mcfg, cfg, batches)
            if rep:
                ours.append(o)
                bare.append(b)
        ratios = sorted(o / b for o, b in zip(ours, bare))
        ratio = statistics.median(ratios)
        row = {"size": size, "ours_tok_s": statistics.median(ours), "bare_tok_s": statistics.median(bare),
               "ratio": ratio, "ratio_min": ratios[0], "ratio_max": ratios[-1], "steps": args.steps,
               "repeats": args.repeats, "micro_batch": cfg.micro_batch,
               "seq_len": mcfg.seq_len, "threads": cfg.threads}
        results.append(row)
        print(f"{size:5s} segment {row['ours_tok_s']:8.0f} tok/s   bare loop {row['bare_tok_s']:8.0f} tok/s   "
              f"ratio {ratio:.3f} (median of {args.repeats} paired runs; range {ratios[0]:.3f}-{ratios[-1]:.3f})")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
