"""Training the proxy LM on a mixture: the learning-rate schedule and the flat training-segment loop (fp32,
a few threads, micro-batches of ~8 sequences). Batches come from :class:`mixagent.sampling.MixtureSampler`,
the sampler deployment uses too."""

from __future__ import annotations

import dataclasses
import math
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

from mixagent.errors import ConfigError
from mixagent.sampling import MixtureSampler

SCHEDULES = ("cosine", "wsd")

__all__ = ["OptimConfig", "SCHEDULES", "SegmentStats", "train_segment", "lr_at", "make_optimizer", "torch_threads"]


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """AdamW over a run with a linear warm-up, then one of two learning-rate schedules:

    * ``cosine``: cosine decay from ``lr`` to ``min_lr_ratio * lr`` over the rest of the run;
    * ``wsd``: warmup-stable-decay (Hu et al. 2024, MiniCPM, arXiv 2404.06395): hold ``lr``, then decay
      linearly to ``min_lr_ratio * lr`` over the last ``decay_fraction`` of the run. Over a continual
      pre-training run this is the re-warm / hold / re-decay of Ibrahim et al. (arXiv 2403.08763).

    Args:
        lr: peak learning rate.
        min_lr_ratio: final learning rate as a fraction of ``lr``.
        warmup_fraction: share of the run's steps spent warming up.
        schedule: ``cosine`` or ``wsd``.
        decay_fraction: ``wsd`` only: share of the run's steps in the final decay.
        weight_decay: AdamW weight decay.
        grad_clip: global gradient-norm clip (0 disables it).
        micro_batch: sequences per optimizer step.
        threads: torch intra-op threads.
        device: where the proxy trains and is evaluated: ``cpu`` (the reference setting) or ``cuda``
            (``cuda:<i>``); results differ in the last bits, so a CUDA env has its own spec hash.
    """

    lr: float = 2e-3
    min_lr_ratio: float = 0.1
    warmup_fraction: float = 0.05
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    micro_batch: int = 8
    threads: int = 2
    schedule: str = "cosine"
    decay_fraction: float = 0.25
    device: str = "cpu"

    ADDED_FIELDS = ("schedule", "decay_fraction", "device")  # later knobs: configs from before them keep their hash

    def check(self) -> list[str]:
        problems = []
        if self.schedule not in SCHEDULES:
            problems.append(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if not 0 < self.decay_fraction <= 1:
            problems.append(f"decay_fraction must be in (0, 1], got {self.decay_fraction}")
        elif self.schedule == "wsd" and self.warmup_fraction + self.decay_fraction > 1:
            problems.append(f"warmup_fraction + decay_fraction must be <= 1, got {self.warmup_fraction} + "
                            f"{self.decay_fraction}")
        if not self.lr > 0:
            problems.append(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.min_lr_ratio <= 1:
            problems.append(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if not 0 <= self.warmup_fraction < 1:
            problems.append(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        if not (self.device == "cpu" or self.device == "cuda" or self.device.startswith("cuda:")):
            problems.append(f"device must be cpu, cuda or cuda:<index>, got {self.device!r}")
        if self.micro_batch < 1 or self.threads < 1:
            problems.append("micro_batch and threads must be >= 1")
        if self.weight_decay < 0 or self.grad_clip < 0:
            problems.append(f"weight_decay and grad_clip must be >= 0 (grad_clip 0 disables clipping), got "
                            f"{self.weight_decay}, {self.grad_clip}")
        return problems


def lr_at(step: int, total: int, cfg: OptimConfig) -> float:
    """Learning rate of optimizer step ``step`` (0-based) of a ``total``-step run."""
    warm = max(1, int(total * cfg.warmup_fraction))
    if step < warm:
        return cfg.lr * (step + 1) / warm
    if cfg.schedule == "wsd":
        decay = max(1, round(total * cfg.decay_fraction))
        start = total - decay
        if step < start:
            return cfg.lr
        frac = min(1.0, (step - start + 1) / decay)
        return cfg.lr * (1 - (1 - cfg.min_lr_ratio) * frac)
    frac = min(1.0, (step - warm) / max(1, total - warm))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))


def make_optimizer(model: torch.nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95),
                             foreach=True)


@dataclasses.dataclass
class SegmentStats:
    """What one training segment did."""

    tokens: int
    steps: int
    mean_loss: float
    seconds: float
    nonfinite: bool


def torch_threads(threads: int) -> int:
    """The torch intra-op threads a proxy trains with: ``MIXAGENT_THREADS`` where set (a cap for every segment this
    process trains, e.g. ``MIXAGENT_THREADS=1`` for jobs that share the cores: a 2-thread process on a core
    another job also uses ran a segment 5-7x slower, 2026-12-07), else ``threads`` (the spec's or the worker's).
    Like ``optim.threads`` it changes results only at rounding level.

    Raises:
        ConfigError: ``MIXAGENT_THREADS`` is not a positive integer.
    """
    raw = os.environ.get("MIXAGENT_THREADS", "").strip()
    if not raw:
        return threads
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError("MIXAGENT_THREADS", [f"must be a positive integer (torch threads per process), got {raw!r}; "
                                               f"unset it to use the spec's optim.threads"])
    return int(raw)


def train_segment(model: torch.nn.Module, optimizer: torch.optim.Optimizer, sampler: MixtureSampler,
                  weights: np.ndarray, steps: int, first_step: int, total_steps: int, cfg: OptimConfig) -> SegmentStats:
    """Train ``steps`` optimizer steps on batches drawn under ``weights``; stops early on a NaN/Inf loss."""
    torch.set_num_threads(torch_threads(cfg.threads))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    device = params[0].device
    t0 = time.perf_counter()
    losses = torch.zeros(steps, device=device)
    for i in range(steps):
        lr = lr_at(first_step + i, total_steps, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = torch.from_numpy(sampler.sample(weights, cfg.micro_batch)).to(device)
        logits = model(input_ids=batch[:, :-1]).logits
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), batch[:, 1:].reshape(-1))
        if not torch.isfinite(loss):
            return SegmentStats(i * batch[:, 1:].numel(), i, float("nan"), time.perf_counter() - t0, True)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip, foreach=True)
        optimizer.step()
        losses[i] = loss.detach()
    tokens = steps * cfg.micro_batch * (sampler.length - 1)
    return SegmentStats(tokens, steps, float(losses.mean()), time.perf_counter() - t0, False)
