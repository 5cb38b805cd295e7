"""Proxy backends behind the environment: the real LM, and a closed-form stand-in for fast control-flow
tests. Every default spec, the demo and the benchmarks use :class:`LMBackend`."""

from __future__ import annotations

import copy
from typing import Protocol

import numpy as np
import torch

from mixagent.data.domain_data import DomainData
from mixagent.data.tokenizer import token_byte_lengths
from mixagent.domains import FIELDS, DomainSpace
from mixagent.env.base_model import get_base_model
from mixagent.env.evaluation import EvalResult, Evaluator
from mixagent.env.proxy import SegmentStats, make_optimizer, train_segment
from mixagent.env.spec import EnvSpec
from mixagent.errors import ConfigError
from mixagent.sampling import MixtureSampler

__all__ = ["ProxyBackend", "ProbingBackend", "LMBackend", "AnalyticBackend", "make_backend"]


class ProxyBackend(Protocol):
    """What the environment needs from a proxy: restart from the base model, train, evaluate."""

    space: DomainSpace
    natural: np.ndarray  # natural token shares of the domains

    def reset(self, seed: int) -> EvalResult:
        """Restore the base model (data order from ``seed``) and return its evaluation."""

    def train(self, weights: np.ndarray, step: int) -> SegmentStats:
        """Train re-weighting step ``step`` (0-based) of the episode under ``weights``."""

    def evaluate(self) -> EvalResult:
        """Evaluate the current proxy."""

    def state(self) -> dict:
        """An in-memory copy of everything :meth:`train` mutates (weights, optimizer, data cursors), so a
        run can fork: branching collection restores it to continue one prefix with several actions."""

    def load_state(self, state: dict) -> None:
        """Restore a :meth:`state` copy exactly (the continuation is bit-identical to an unforked run)."""


class ProbingBackend(ProxyBackend, Protocol):
    """A backend that can train probe mixtures inside a segment (``MixingEnv.probe``; Aioli's LearnParams)."""

    def probe(self, mixtures: np.ndarray, batches: int, windows: int, step: int) -> np.ndarray:
        """Train each of ``mixtures`` (``(P, K)``) for ``batches`` optimizer batches, taken from segment
        ``step``'s budget (its :meth:`train` then trains that many fewer), and return ``(P + 1, K)``
        per-domain bits per byte on ``windows`` held-out windows per domain: before, then after each
        probe. A row of NaN after a probe that diverged (the rest are not trained).

        Raises:
            ConfigError: probes that would take the whole segment."""


class LMBackend:
    """The real thing: a Llama-style proxy continually pre-trained on real text.

    Args:
        spec: the environment spec.
        space: its loaded domain space.
    """

    def __init__(self, spec: EnvSpec, space: DomainSpace) -> None:
        self.spec = spec
        self.space = space
        base = get_base_model(spec.base_config())
        self.model_config = base.model_config
        self.tokenizer = base.tokenizer
        self.data = DomainData(space, base.tokenizer, base.tokenizer_hash)
        self.natural = self.data.natural
        self.train_streams = self.data.train
        if spec.target_tokens:
            self.train_streams = self.data.capped_train(space.field_mask("target"), spec.target_tokens,
                                                        base.model_config.seq_len + 1)
        self.evaluator = Evaluator(self.data, spec.eval, base.tokenizer, token_byte_lengths(base.tokenizer),
                                   base.model_config.seq_len)
        if spec.optim.device != "cpu":
            if not torch.cuda.is_available():
                raise ConfigError(spec.name, [f"optim.device={spec.optim.device} but torch sees no CUDA device: use "
                                              f"optim.device=cpu"])
            base.model.to(spec.optim.device)
        self.base_state = {k: v.clone() for k, v in base.model.state_dict().items()}
        self.base_id = base.base_id
        self.model = base.model
        per_step = spec.optim.micro_batch * base.model_config.seq_len
        if spec.segment_tokens % per_step:
            fit = max(1, round(spec.segment_tokens / per_step)) * per_step
            raise ConfigError(spec.name, [f"segment_tokens ({spec.segment_tokens}) must be a multiple of "
                                          f"micro_batch x seq_len = {per_step}; use e.g. segment_tokens={fit}"])
        self.steps_per_segment = spec.segment_tokens // per_step
        self.total_steps = self.steps_per_segment * spec.steps
        self._base_eval: EvalResult | None = None
        self.tokens_seen = 0
        self._probed = 0  # batches of the current segment that probes used

    def reset(self, seed: int) -> EvalResult:
        self.model.load_state_dict(self.base_state)
        self.optimizer = make_optimizer(self.model, self.spec.optim)
        self.sampler = MixtureSampler(self.train_streams, self.model_config.seq_len + 1, seed, self.space.names)
        self.tokens_seen = 0
        self._probed = 0
        if self._base_eval is None:  # the base model's evaluation does not depend on the seed
            self._base_eval = self.evaluator(self.model, 0)
            self._base_items = dict(self.evaluator.last_items)
        self.evaluator.last_items = dict(self._base_items)  # per-item values match the evaluation returned
        return copy.deepcopy(self._base_eval)

    def train(self, weights: np.ndarray, step: int) -> SegmentStats:
        used, self._probed = self._probed, 0
        stats = train_segment(self.model, self.optimizer, self.sampler, weights, self.steps_per_segment - used,
                              step * self.steps_per_segment + used, self.total_steps, self.spec.optim)
        self.tokens_seen += stats.tokens
        return stats

    def probe(self, mixtures: np.ndarray, batches: int, windows: int, step: int) -> np.ndarray:
        mixtures = np.asarray(mixtures, dtype=np.float64)
        if self._probed + len(mixtures) * batches >= self.steps_per_segment:
            raise ConfigError(self.spec.name, [
                f"{len(mixtures)} probes of {batches} batches (after {self._probed} probe batches already in this "
                f"segment) would take the whole {self.steps_per_segment}-batch segment: lower the probes' batches "
                f"or raise segment_tokens"])
        out = np.full((len(mixtures) + 1, self.space.k), np.nan)
        out[0] = self.evaluator.probe_bpb(self.model, windows)
        for i, m in enumerate(mixtures):
            stats = train_segment(self.model, self.optimizer, self.sampler, m, batches,
                                  step * self.steps_per_segment + self._probed, self.total_steps, self.spec.optim)
            self._probed += batches
            self.tokens_seen += stats.tokens
            if stats.nonfinite:
                break
            out[i + 1] = self.evaluator.probe_bpb(self.model, windows)
        return out

    def evaluate(self) -> EvalResult:
        return self.evaluator(self.model, self.tokens_seen)

    def state(self) -> dict:
        return {"model": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
                "optimizer": copy.deepcopy(self.optimizer.state_dict()),
                "sampler": self.sampler.state(),
                "tokens_seen": self.tokens_seen, "probed": self._probed}

    def load_state(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
        self.sampler.restore(state["sampler"])
        self.tokens_seen = state["tokens_seen"]
        self._probed = state.get("probed", 0)


class AnalyticBackend:
    """A closed-form proxy for unit tests of the env's control flow (no LM, microseconds per step).

    Domain ``d``'s loss falls with the tokens it receives and rises slowly with tokens of the other
    field (forgetting); benchmark scores follow the field losses. ``nan_at_step`` injects a failed step.
    A segment is ``steps_per_segment`` batches (probes take theirs from it). Its start evaluation carries
    the seed's noise (``seeded_start``), unlike a real base model's.
    """

    steps_per_segment = 10
    seeded_start = True

    def __init__(self, space: DomainSpace, segment_tokens: int = 1000, nan_at_step: int | None = None) -> None:
        self.space = space
        self.natural = np.full(space.k, 1.0 / space.k)
        self.segment_tokens = segment_tokens
        self.nan_at_step = nan_at_step
        self.base = 2.0 + 0.1 * np.arange(space.k)
        self.target = space.field_mask("target")
        self.base_id = "analytic"

    def reset(self, seed: int) -> EvalResult:
        self.rng = np.random.Generator(np.random.PCG64(seed))
        self.seen = np.zeros(self.space.k)
        self.tokens_seen = 0
        self._probed = 0
        return self.evaluate()

    def train(self, weights: np.ndarray, step: int) -> SegmentStats:
        if self.nan_at_step == step:
            return SegmentStats(0, 0, float("nan"), 0.0, True)
        used, self._probed = self._probed, 0
        tokens = self.segment_tokens * (self.steps_per_segment - used) // self.steps_per_segment
        self.seen += weights * tokens
        self.tokens_seen += tokens
        return SegmentStats(tokens, 1, 1.0, 0.0, False)

    def probe(self, mixtures: np.ndarray, batches: int, windows: int, step: int) -> np.ndarray:
        if self._probed + len(mixtures) * batches >= self.steps_per_segment:
            raise ConfigError("analytic", [f"{len(mixtures)} probes of {batches} batches take the whole segment"])
        out = [self._bpb()]
        for m in np.asarray(mixtures, dtype=np.float64):
            tokens = self.segment_tokens * batches // self.steps_per_segment
            self.seen += m * tokens
            self.tokens_seen += tokens
            self._probed += batches
            out.append(self._bpb())
        return np.array(out)

    def _bpb(self) -> np.ndarray:
        own = self.seen / self.segment_tokens
        other_field = np.where(self.target, own[~self.target].sum(), own[self.target].sum())
        return self.base * (1 - 0.3 * (1 - np.exp(-own / 2))) * (1 + 0.05 * (1 - np.exp(-other_field / 4)))

    def evaluate(self) -> EvalResult:
        bpb = self._bpb() * (1 + 1e-3 * self.rng.standard_normal(self.space.k))
        scores = {}
        for f in FIELDS:
            mask = self.space.field_mask(f)
            scores[f] = float(0.25 + 0.5 * (1 - bpb[mask].mean() / self.base[mask].mean()))
        return EvalResult(dict(zip(self.space.names, bpb.tolist())), scores, dict(scores), self.tokens_seen, 0)

    def state(self) -> dict:
        return {"rng": copy.deepcopy(self.rng.bit_generator.state), "seen": self.seen.copy(),
                "tokens_seen": self.tokens_seen, "probed": self._probed}

    def load_state(self, state: dict) -> None:
        self.rng.bit_generator.state = copy.deepcopy(state["rng"])
        self.seen = state["seen"].copy()
        self.tokens_seen = state["tokens_seen"]
        self._probed = state.get("probed", 0)


def make_backend(spec: EnvSpec, space: DomainSpace) -> ProxyBackend:
    if spec.backend == "analytic":
        return AnalyticBackend(space, spec.segment_tokens)
    return LMBackend(spec, space)
