"""The evaluation environment: per-domain held-out bits per byte and per-field task benchmarks scored by
log-likelihood, at a fixed token budget.

* **Bits per byte** on fixed validation windows of every domain (tokenizer-independent).
* **Benchmarks**, one per field, multiple choice scored by the log-likelihood of each candidate
  continuation: ``champ_mc`` (held-out CHAMP problem -> gold answer vs distractor answers of similar
  length) and ``cloze`` (held-out text -> the true next sentence/line vs others of similar length).
  A field's *score* is the mean probability the model puts on the gold choice among the candidates
  (continuous; chance = 1/choices); accuracy is reported beside it.
* ``champ_solution``: the held-out CHAMP problems' reference solutions given their problem (no
  distractors). The score is the per-byte likelihood of the gold solutions, ``2 ** -bpb`` with ``bpb`` the
  bits per byte of all gold solution tokens: continuous, higher is better, and far less noisy over a few
  dozen items than a multiple-choice probability (its accuracy field repeats the score).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Collection
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mixagent.config import is_number
from mixagent.data.build import read_split, read_tasks
from mixagent.data.domain_data import DomainData
from mixagent.data.sources import unknown_corpora
from mixagent.domains import FIELDS, DomainSpace
from mixagent.env.judge import JudgeEvaluation, JudgeSpec, cut_prefixes, judge_cache_dir, load_judge
from mixagent.errors import ConfigError, suggest

__all__ = ["BenchmarkSpec", "EvalSpec", "EvalResult", "Evaluator", "MCItem", "build_items", "eval_json_problem"]

BENCHMARK_KINDS = ("champ_mc", "cloze", "champ_solution")
LOSS_UNITS = ("byte", "token")  # EvalResult.bpb is in bits per byte or bits per token


@dataclasses.dataclass(frozen=True)
class BenchmarkSpec:
    """A field's task benchmark.

    Args:
        kind: ``champ_mc`` (math problems, gold answer vs distractors) or ``cloze`` (true continuation).
        corpora: corpora whose ``split`` supplies the items.
        unit: cloze continuation unit: ``sentence`` (prose) or ``line`` (code).
        choices: candidates per item, the gold one included.
        max_items: upper bound on items (the token budget may allow fewer).
        scoring: ``loglik`` (log-likelihood of the candidate after the context) or ``pmi`` (minus its
            log-likelihood after a bare EOS: how much the context helps, which removes the bias toward
            intrinsically likely text that makes raw cloze scores fall below chance for small models).
        split: ``val`` (what collection and training see) or ``test`` (held-out items, to check that an
            agent did not fit the validation items).
    """

    kind: str = "cloze"
    corpora: tuple[str, ...] = ()
    unit: str = "sentence"
    choices: int = 4
    max_items: int = 48
    scoring: str = "pmi"
    split: str = "val"

    def check(self) -> list[str]:
        problems = [] if self.split in ("val", "test") else [f"split must be 'val' or 'test', got {self.split!r}"]
        if self.kind not in BENCHMARK_KINDS:
            problems.append(f"kind {self.kind!r} unknown{suggest(self.kind, BENCHMARK_KINDS)}; "
                            f"use one of {BENCHMARK_KINDS}")
        if self.unit not in ("sentence", "line"):
            problems.append(f"unit must be 'sentence' or 'line', got {self.unit!r}")
        if self.scoring not in ("loglik", "pmi"):
            problems.append(f"scoring must be 'loglik' or 'pmi', got {self.scoring!r}")
        if self.kind == "champ_solution" and self.scoring != "loglik":
            problems.append("kind champ_solution is scored by log-likelihood only: set scoring: loglik")
        if self.choices < 2 or self.max_items < 1:
            problems.append("choices must be >= 2 and max_items >= 1")
        if not self.corpora:
            problems.append("corpora must name at least one corpus")
        problems += unknown_corpora(self.corpora)
        return problems


@dataclasses.dataclass(frozen=True)
class EvalSpec:
    """Args:
        token_budget: tokens processed per evaluation (bits-per-byte windows + benchmark candidates).
        bpb_share: share of the budget spent on bits-per-byte windows (split evenly over domains).
        batch_size: sequences per forward pass.
        source: the source field's benchmark.
        target: the target field's benchmark.
        text_split: where the bits-per-byte windows come from: ``val`` (what collection and training see)
            or ``test`` (held-out text; with the benchmarks' ``split: test``, an evaluation no agent was
            fitted on).
        judge: an optional judge evaluation (:class:`~mixagent.env.judge.JudgeSpec`): a post-trained model
            compares the model's continuations of each field's held-out prefixes (from its benchmark's
            corpora) with the real text; results carry its per-field score in ``judge``.
    """

    source: BenchmarkSpec
    target: BenchmarkSpec
    token_budget: int = 65536
    bpb_share: float = 0.5
    batch_size: int = 32
    text_split: str = "val"
    judge: JudgeSpec | None = None

    ADDED_FIELDS = ("text_split", "judge")  # added after specs were hashed: one without it keeps its hash

    def check(self) -> list[str]:
        problems = []
        if self.token_budget < 1024:
            problems.append(f"token_budget must be >= 1024, got {self.token_budget}")
        if not 0 < self.bpb_share < 1:
            problems.append(f"bpb_share must be in (0, 1), got {self.bpb_share}")
        if self.batch_size < 1:
            problems.append(f"batch_size must be >= 1, got {self.batch_size}")
        if self.text_split not in ("val", "test"):
            problems.append(f"text_split must be 'val' or 'test', got {self.text_split!r}")
        return problems


@dataclasses.dataclass
class EvalResult:
    """Raw evaluation numbers after one segment (never normalised; rewards derive from these).

    Attributes:
        bpb: held-out loss per domain name, in bits per ``unit``: bits per byte (tokenizer-independent) in
            the environment; bits per token in deployments that give no byte lengths.
        scores: per field, mean probability on the gold choice of its benchmark.
        accuracy: per field, benchmark accuracy.
        tokens_seen: training tokens consumed so far in the run.
        eval_tokens: tokens processed by this evaluation.
        unit: ``"byte"`` or ``"token"``, what ``bpb`` is per (JSON omits the default ``"byte"``, so
            trajectory files keep their format).
        judge: per field, the judge's score in [0, 1] (:mod:`mixagent.env.judge`; empty without a judge).
        judge_marked: fields where the judge failed its validity check but was kept (``on_invalid: mark``).
        judge_at: the tokens seen when ``judge`` was measured, where that was an earlier evaluation (a judge that
            runs every n-th evaluation repeats its last scores in between); None when it is this evaluation's.
    """

    bpb: dict[str, float]
    scores: dict[str, float]
    accuracy: dict[str, float]
    tokens_seen: int = 0
    eval_tokens: int = 0
    unit: str = "byte"
    judge: dict[str, float] = dataclasses.field(default_factory=dict)
    judge_marked: tuple[str, ...] = ()
    judge_at: int | None = None

    def __post_init__(self) -> None:
        if self.unit not in LOSS_UNITS:
            raise ValueError(f"EvalResult.unit must be one of {LOSS_UNITS}, got {self.unit!r}")

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["judge_marked"] = list(self.judge_marked)
        # files keep their format: what is at its default is left out
        for key, default in (("unit", "byte"), ("judge", {}), ("judge_marked", []), ("judge_at", None)):
            if d[key] == default:
                del d[key]
        return d

    @classmethod
    def from_json(cls, d: dict) -> EvalResult:
        return cls(**{**d, "judge_marked": tuple(d.get("judge_marked", ()))})

    def field_bpb(self, space: DomainSpace, field: str) -> float:
        """Mean bits per byte over the field's domains."""
        return float(np.mean([self.bpb[n] for n, f in zip(space.names, space.fields) if f == field]))

    def is_finite(self) -> bool:
        return all(math.isfinite(v) for v in [*self.bpb.values(), *self.scores.values()])


def eval_json_problem(d: Any, domains: Collection[str] | None = None,
                      domains_of: str = "the run's start") -> str | None:
    """What is wrong with an :class:`EvalResult` read back from JSON (``None`` when it is valid): an object
    of known keys whose ``bpb`` and ``scores`` map names to finite numbers, with ``bpb`` over exactly
    ``domains`` (those of ``domains_of``, for the message) when given. For every reader of stored
    evaluations (trajectories, episodes, deployment states)."""
    if not isinstance(d, dict):
        return f"not an evaluation object: {d!r}"
    unknown = set(d) - {f.name for f in dataclasses.fields(EvalResult)}
    if unknown:
        return f"unknown keys {sorted(unknown)}"
    for part in ("bpb", "scores"):
        vals = d.get(part)
        if not (isinstance(vals, dict) and vals and all(is_number(v) for v in vals.values())):
            return f"{part} must map names to finite numbers, got {vals!r}"
    if d.get("unit", "byte") not in LOSS_UNITS:
        return f"unit must be one of {LOSS_UNITS}, got {d['unit']!r}"
    if domains is not None and set(d["bpb"]) != set(domains):
        return f"bpb has domains {sorted(d['bpb'])}, {domains_of} has {sorted(domains)}"
    return None


@dataclasses.dataclass(frozen=True)
class MCItem:
    """A multiple-choice item: ``context`` followed by one of ``choices``; ``gold`` indexes the right one."""

    context: str
    choices: tuple[str, ...]
    gold: int


_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")


def _pick_distractors(conts: list[str], i: int, n: int) -> list[int]:
    """Indices of the ``n`` other continuations closest in length to ``conts[i]`` (distinct texts)."""
    order = sorted((j for j in range(len(conts)) if j != i and conts[j] != conts[i]),
                   key=lambda j: (abs(len(conts[j]) - len(conts[i])), j))
    picked: list[int] = []
    for j in order:
        if conts[j] not in {conts[k] for k in picked}:
            picked.append(j)
        if len(picked) == n:
            break
    return picked


def _with_distractors(pairs: list[tuple[str, str]], choices: int) -> list[MCItem]:
    conts = [c for _, c in pairs]
    rng = np.random.Generator(np.random.PCG64(1234))
    items = []
    for i, (ctx, cont) in enumerate(pairs):
        cands = [cont] + [conts[j] for j in _pick_distractors(conts, i, choices - 1)]
        if len(cands) < choices:
            continue
        perm = rng.permutation(choices)
        items.append(MCItem(ctx, tuple(cands[p] for p in perm), int(np.flatnonzero(perm == 0)[0])))
    return items


def _cloze_pair(text: str, unit: str) -> tuple[str, str] | None:
    parts = _SENTENCE.split(text) if unit == "sentence" else text.split("\n")
    for k in range(1, len(parts)):
        cont = parts[k].strip() if unit == "sentence" else parts[k].rstrip()
        ctx = (" " if unit == "sentence" else "\n").join(parts[:k])[-400:]
        if len(ctx) >= 120 and 25 <= len(cont.strip()) <= 160:
            return ctx, (" " + cont if unit == "sentence" else "\n" + cont)
    return None


def build_items(spec: BenchmarkSpec) -> list[MCItem]:
    """Deterministic benchmark items from the spec's split (at most ``max_items``)."""
    if spec.kind == "champ_solution":
        items = []
        for c in spec.corpora:
            for p in read_split(c, spec.split):
                if p["id"].endswith("-ref#0") and "\nSolution:" in p["text"]:
                    ctx, sol = p["text"].split("\nSolution:", 1)
                    items.append(MCItem(ctx + "\nSolution:", (sol,), 0))
        return items[: spec.max_items]
    if spec.kind == "champ_mc":
        tasks = [t for c in spec.corpora for t in read_tasks(c, spec.split)]
        pairs = [(f"Problem: {t['problem']}\nAnswer:", f" {t['answer']}") for t in tasks]
        return _with_distractors(pairs, spec.choices)[: spec.max_items]
    per_corpus = []
    for c in spec.corpora:
        found = [p for p in (_cloze_pair(x["text"], spec.unit) for x in read_split(c, spec.split)) if p]
        per_corpus.append(found)
    pairs = []  # round-robin over corpora so every corpus is represented
    for k in range(max((len(x) for x in per_corpus), default=0)):
        pairs += [x[k] for x in per_corpus if k < len(x)]
    return _with_distractors(pairs[: 4 * spec.max_items], spec.choices)[: spec.max_items]


class Evaluator:
    """Evaluates a model on a space's held-out windows (``spec.text_split``) and the two field benchmarks.

    Args:
        data: the space's domain data (held-out windows).
        spec: budget and benchmarks.
        tokenizer: the proxy's tokenizer.
        byte_lengths: bytes per token id (``mixagent.data.tokenizer.token_byte_lengths``).
        seq_len: the model's context length.
    """

    def __init__(self, data: DomainData, spec: EvalSpec, tokenizer, byte_lengths: np.ndarray, seq_len: int) -> None:
        self.space = data.space
        self.spec = spec
        k = self.space.k
        bpb_tokens = int(spec.token_budget * spec.bpb_share)
        per_domain = max(1, bpb_tokens // (k * seq_len))
        windows, owners = [], []
        for d in range(k):
            w = data.val_windows(d, per_domain, seq_len + 1, spec.text_split)
            if len(w) == 0:
                raise ConfigError("eval", [f"domain {self.space.names[d]!r} has no {spec.text_split} tokens "
                                           f"for a {seq_len + 1}-token window; use "
                                           f"{'eval.text_split=val or ' if spec.text_split == 'test' else ''}"
                                           f"a coarser space"])
            windows.append(w)
            owners.append(np.full(len(w), d))
        self.windows = torch.from_numpy(np.concatenate(windows))
        self.owner = np.concatenate(owners)
        # bits per byte counts only tokens that are bytes of text: EOS separators (0 bytes) are masked out
        target_bytes = byte_lengths[self.windows[:, 1:].numpy()]
        self.text_mask = torch.from_numpy(target_bytes > 0)
        self.window_bytes = np.zeros(k)
        self.window_bytes_each = target_bytes.sum(1).astype(np.float64)
        np.add.at(self.window_bytes, self.owner, self.window_bytes_each)
        # benchmark candidates: (token ids, continuation start) and (field, item, choice, sign); a pmi
        # field adds each candidate once more after a bare EOS with sign -1
        eos = tokenizer.eos_token_id
        self.seqs: list[tuple[list[int], int]] = []
        self.seq_meta: list[tuple[int, int, int, float]] = []
        self.items: dict[str, list[MCItem]] = {}
        field_budget = (spec.token_budget - bpb_tokens) // 2
        for fi, field in enumerate(FIELDS):
            bench = getattr(spec, field)
            used, kept = 0, []
            solution = bench.kind == "champ_solution"
            for item in build_items(bench):
                ctx = tokenizer(item.context, add_special_tokens=False)["input_ids"]
                conts = [tokenizer(c, add_special_tokens=False)["input_ids"] for c in item.choices]
                if solution:  # the solution's first seq_len - 16 tokens after at least 16 of the problem
                    conts = [c[: seq_len - 16] for c in conts]
                elif max(len(c) for c in conts) > seq_len // 2:
                    continue
                seqs = [((ctx[-(seq_len - len(c)):] + c, min(len(ctx), seq_len - len(c))), ci, 1.0)
                        for ci, c in enumerate(conts)]
                if bench.scoring == "pmi":
                    seqs += [(([eos] + c, 1), ci, -1.0) for ci, c in enumerate(conts)]
                cost = sum(len(s) for (s, _), _, _ in seqs)
                if used + cost > field_budget:
                    break
                used += cost
                for seq, ci, sign in seqs:
                    self.seqs.append(seq)
                    self.seq_meta.append((fi, len(kept), ci, sign))
                kept.append(item)
            if not kept:
                raise ConfigError("eval", [f"the {field} benchmark has no items within the token budget; raise "
                                           f"eval.token_budget or lower eval.bpb_share"])
            self.items[field] = kept
        # bytes of each field's gold continuations (bits per byte of champ_solution)
        self.item_bytes = [np.array([byte_lengths[np.asarray(seq[start:])].sum() for (seq, start), (f, _, c, sign)
                                     in zip(self.seqs, self.seq_meta) if f == fi and c == 0 and sign > 0],
                                    dtype=np.float64) for fi in range(len(FIELDS))]
        # per-item values of the last call, for bootstraps over items: "windows" -> (nats, bytes, domain) per
        # bits-per-byte window; per field -> (gold probability,) or, for champ_solution, (nats, bytes) per item
        self.last_items: dict[str, tuple[np.ndarray, ...]] = {}
        self.eval_tokens = int(self.windows[:, 1:].numel() + sum(len(s) for s, _ in self.seqs))
        self.judge = self._judge(spec.judge, tokenizer, seq_len) if spec.judge is not None else None

    def _judge(self, judge: JudgeSpec, tokenizer, seq_len: int) -> JudgeEvaluation:
        """The judge over each field's held-out prefixes, from the documents of its benchmark's corpora."""
        prefixes = {}
        for field in FIELDS:
            corpora = getattr(self.spec, field).corpora
            docs = [d["text"] for c in corpora for d in read_split(c, judge.split)]
            prefixes[field] = cut_prefixes(docs, judge.prefixes, judge.prefix_chars, judge.suffix_chars, judge.seed,
                                           where=f"the {field} field's corpora {list(corpora)} ({judge.split})")
        return JudgeEvaluation(judge, load_judge(judge), prefixes, tokenizer, seq_len, judge_cache_dir())

    @torch.inference_mode()
    def __call__(self, model: torch.nn.Module, tokens_seen: int = 0) -> EvalResult:
        model.eval()
        dev = next(model.parameters()).device
        bs = self.spec.batch_size
        window_nll = self._window_nll(model, np.arange(len(self.windows)))
        nll = np.zeros(self.space.k)
        np.add.at(nll, self.owner, window_nll)
        bpb = nll / math.log(2) / self.window_bytes
        self.last_items = {"windows": (window_nll, self.window_bytes_each, self.owner.astype(np.float64))}
        loglik = np.zeros(len(self.seqs))
        order = sorted(range(len(self.seqs)), key=lambda j: len(self.seqs[j][0]))  # similar lengths batch well
        for i in range(0, len(order), bs):
            idx = order[i: i + bs]
            width = max(len(self.seqs[j][0]) for j in idx)
            ids = torch.zeros((len(idx), width), dtype=torch.long)
            mask = torch.zeros((len(idx), width - 1), dtype=torch.bool)
            for r, j in enumerate(idx):
                s, start = self.seqs[j]
                ids[r, : len(s)] = torch.tensor(s)
                mask[r, start - 1: len(s) - 1] = True  # positions predicting continuation tokens
            ids, mask = ids.to(dev), mask.to(dev)
            logp = torch.log_softmax(model(input_ids=ids).logits[:, :-1].float(), -1)
            tok = logp.gather(-1, ids[:, 1:, None]).squeeze(-1)
            loglik[idx] = (tok * mask).sum(1).double().cpu().numpy()
        scores, accuracy = {}, {}
        for fi, field in enumerate(FIELDS):
            items = self.items[field]
            if getattr(self.spec, field).kind == "champ_solution":
                ll_items = np.array([v for (f, _, _, _), v in zip(self.seq_meta, loglik) if f == fi])
                scores[field] = accuracy[field] = float(math.exp(ll_items.sum() / self.item_bytes[fi].sum()))  # 2**-bpb
                self.last_items[field] = (ll_items, self.item_bytes[fi])
                continue
            ll = np.zeros((len(items), max(len(it.choices) for it in items)))
            for (f, item, choice, sign), value in zip(self.seq_meta, loglik):
                if f == fi:
                    ll[item, choice] += sign * value
            gold = np.array([it.gold for it in items])
            prob = np.exp(ll - ll.max(1, keepdims=True))
            prob /= prob.sum(1, keepdims=True)
            scores[field] = float(prob[np.arange(len(items)), gold].mean())
            self.last_items[field] = (prob[np.arange(len(items)), gold],)
            accuracy[field] = float((ll.argmax(1) == gold).mean())
        judged = self.judge(model, start=tokens_seen == 0) if self.judge is not None else {}
        return EvalResult({n: float(b) for n, b in zip(self.space.names, bpb)}, scores, accuracy,
                          tokens_seen, self.eval_tokens, judge=judged,
                          judge_marked=self.judge.marked if self.judge is not None else ())

    @torch.inference_mode()
    def probe_bpb(self, model: torch.nn.Module, windows: int) -> np.ndarray:
        """``(K,)`` bits per byte of each domain on its first ``windows`` held-out windows: the cheap loss a
        probing method (Aioli) measures around its probe trainings. Forward passes only."""
        model.eval()
        idx = np.concatenate([np.flatnonzero(self.owner == d)[:windows] for d in range(self.space.k)])
        nll, nbytes = np.zeros(self.space.k), np.zeros(self.space.k)
        np.add.at(nll, self.owner[idx], self._window_nll(model, idx))
        np.add.at(nbytes, self.owner[idx], self.window_bytes_each[idx])
        return nll / math.log(2) / nbytes

    def _window_nll(self, model: torch.nn.Module, idx: np.ndarray) -> np.ndarray:
        """``(len(idx),)`` summed nats over the text tokens of held-out windows ``idx``, in batches."""
        dev = next(model.parameters()).device
        bs = self.spec.batch_size
        out = np.zeros(len(idx))
        for i in range(0, len(idx), bs):
            rows = idx[i: i + bs]
            batch = self.windows[rows].to(dev)
            logits = model(input_ids=batch[:, :-1]).logits
            loss = F.cross_entropy(logits.transpose(1, 2), batch[:, 1:], reduction="none")
            out[i: i + bs] = (loss * self.text_mask[rows].to(dev)).sum(1).double().cpu().numpy()
        return out

    def describe(self) -> dict[str, object]:
        out = {"windows_per_domain": int(np.bincount(self.owner).min()), "items": {f: len(v) for f, v in
               self.items.items()}, "eval_tokens": self.eval_tokens}
        return out | ({"judge": self.judge.describe()} if self.judge is not None else {})

