"""Per-domain held-out loss of the model being trained, as an :class:`~mixagent.env.evaluation.EvalResult`.

The light evaluation for deployment: fixed validation windows per domain, their mean loss in bits per
byte (with ``byte_lengths``) or bits per token. Field scores come from a benchmark callable when given;
otherwise each field's score is ``2 ** -(mean bits of its domains)`` — the geometric-mean probability of
its held-out tokens — so the policy's score features (changes relative to the start) still track each
field. Under torch.distributed every rank evaluates a shard of the windows and the sums are all-reduced,
so every rank gets the same numbers.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from mixagent.deploy.distributed import all_reduce_sum, dist_info
from mixagent.domains import FIELDS, DomainSpace
from mixagent.env.evaluation import EvalResult
from mixagent.env.judge import JudgeEvaluation
from mixagent.errors import ConfigError

__all__ = ["HeldOutLoss", "WithJudge", "field_scores_from_bits"]


def field_scores_from_bits(bits: Mapping[str, float], space: DomainSpace) -> dict[str, float]:
    """Per field, ``2 ** -mean bits`` over its domains (a probability-like score that rises as loss falls)."""
    return {f: float(2.0 ** -np.mean([bits[n] for n, g in zip(space.names, space.fields) if g == f])) for f in FIELDS}


class HeldOutLoss:
    """Evaluates a causal LM on fixed held-out windows of every domain.

    Args:
        windows: per domain name, an ``(n, L + 1)`` array of token windows (inputs ``[:, :-1]``).
        space: the domain space (every domain needs windows).
        byte_lengths: bytes per token id; when given the loss is in bits per byte (tokenizer-independent),
            else in bits per token.
        batch_size: windows per forward pass.
        benchmark: optional ``model -> {"source": score, "target": score}``.
    """

    def __init__(self, windows: Mapping[str, np.ndarray], space: DomainSpace, byte_lengths: np.ndarray | None = None,
                 batch_size: int = 16,
                 benchmark: Callable[[torch.nn.Module], Mapping[str, float]] | None = None) -> None:
        missing = [n for n in space.names if n not in windows or len(windows[n]) == 0]
        if missing:
            raise ConfigError("HeldOutLoss", [f"no held-out windows for domains {missing}; every domain of space "
                                              f"{space.name!r} needs evaluation data (e.g. DomainData.val_windows)"])
        self.space = space
        self.batch_size = batch_size
        self.benchmark = benchmark
        arrays = [np.asarray(windows[n], dtype=np.int64) for n in space.names]
        self.windows = torch.from_numpy(np.concatenate(arrays))
        self.owner = np.concatenate([np.full(len(a), d) for d, a in enumerate(arrays)])
        targets = self.windows[:, 1:].numpy()
        weight = byte_lengths[targets].astype(np.float64) if byte_lengths is not None else np.ones(targets.shape)
        self.unit = "byte" if byte_lengths is not None else "token"
        per_domain = np.bincount(np.repeat(self.owner, targets.shape[1]), weights=weight.ravel(), minlength=space.k)
        empty = [n for n, units in zip(space.names, per_domain) if not units > 0]
        if empty:  # their loss would be 0/0 = NaN at every evaluation, and every decision would fall back
            what = "bytes (only tokens of byte length 0, e.g. EOS)" if byte_lengths is not None else "target tokens"
            raise ConfigError("HeldOutLoss", [f"the held-out windows of domains {empty} hold no {what}; give them "
                                              f"windows of real text"])
        self.weight = torch.from_numpy(weight)
        self.mask = self.weight > 0  # EOS separators have no bytes: they do not count

    @torch.inference_mode()
    def __call__(self, model: torch.nn.Module, tokens_seen: int = 0) -> EvalResult:
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        rank, world = dist_info()
        sums = np.zeros(2 * self.space.k)  # nll per domain, then units per domain
        rows = np.arange(rank, len(self.windows), world)
        # every rank runs the same number of forward passes (sharded models run collectives inside forward)
        per_rank = -(-len(self.windows) // world)
        for i in range(0, per_rank, self.batch_size):
            idx = rows[i: i + self.batch_size]
            if len(idx) == 0:
                model(input_ids=self.windows[:1, :-1].to(device))  # padding pass, not counted
                continue
            batch = self.windows[idx].to(device)
            logits = model(input_ids=batch[:, :-1]).logits.float()
            nll = F.cross_entropy(logits.transpose(1, 2), batch[:, 1:], reduction="none").cpu().double()
            np.add.at(sums, self.owner[idx], (nll * self.mask[idx]).sum(1).numpy())
            np.add.at(sums, self.space.k + self.owner[idx], self.weight[idx].sum(1).numpy())
        model.train(was_training)
        sums = all_reduce_sum(sums)
        bits = sums[: self.space.k] / math.log(2) / sums[self.space.k:]
        bpb = {n: float(b) for n, b in zip(self.space.names, bits)}
        scores = dict(self.benchmark(model)) if self.benchmark else field_scores_from_bits(bpb, self.space)
        return EvalResult(bpb, scores, {}, tokens_seen, int(self.windows[:, 1:].numel()), unit=self.unit)


class WithJudge:
    """An evaluation (``model, tokens_seen -> EvalResult``) with the judge's per-field scores added
    (:class:`~mixagent.env.judge.JudgeEvaluation`; a run's first evaluation is the one at 0 tokens).

    Under torch.distributed every rank judges the same prefixes with the same seed, so every rank gets the same
    scores; the model must be whole on each rank (not sharded)."""

    def __init__(self, evaluate: Callable[..., EvalResult], judge: JudgeEvaluation) -> None:
        self.evaluate, self.judge = evaluate, judge
        self._judged_at = 0  # tokens seen at the last judged evaluation

    def __call__(self, model: torch.nn.Module, tokens_seen: int = 0) -> EvalResult:
        result = self.evaluate(model, tokens_seen=tokens_seen)
        scores = self.judge(model, start=tokens_seen == 0)
        if self.judge.last_judged:
            self._judged_at = tokens_seen
        return dataclasses.replace(result, judge=scores, judge_marked=self.judge.marked,
                                   judge_at=None if self.judge.last_judged else self._judged_at)
