"""A byte-level BPE trained locally with ``tokenizers`` on the training splits, loaded as a transformers
fast tokenizer and cached by the hash of the corpora it was trained on."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from mixagent.config import config_hash, to_dict
from mixagent.data.build import corpora_dir, read_manifest, read_split
from mixagent.errors import ConfigError, CorruptArtifactError
from mixagent.paths import data_root, staged_dir

__all__ = ["TokenizerConfig", "get_tokenizer", "token_byte_lengths", "EOS"]

log = logging.getLogger(__name__)
EOS = "<|endoftext|>"


@dataclasses.dataclass(frozen=True)
class TokenizerConfig:
    """Args:
        vocab_size: BPE vocabulary size including the byte alphabet and the EOS token.
        corpora: corpora whose training splits the BPE is fitted on.
        sample_bytes: at most this many bytes per corpus (first passages in file order) go into training.
    """

    vocab_size: int = 4096
    corpora: tuple[str, ...] = ("wiki", "news", "fiction", "politics", "foldoc", "gcide", "wordnet", "code", "math")
    sample_bytes: int = 1_500_000

    def check(self) -> list[str]:
        return [] if 300 <= self.vocab_size <= 65535 else [f"vocab_size must be in [300, 65535] (uint16 token "
                                                          f"arrays), got {self.vocab_size}"]


def _sample(cfg: TokenizerConfig, cdir: Path) -> Iterator[str]:
    for corpus in cfg.corpora:
        size = 0
        for p in read_split(corpus, "train", cdir):
            if size >= cfg.sample_bytes:
                break
            size += len(p["text"])
            yield p["text"]


def tokenizer_dir(cfg: TokenizerConfig, root: Path | None = None) -> Path:
    root = root or data_root()
    cdir = corpora_dir(root)
    corpus_hashes = {c: read_manifest(c, cdir)["files"]["train.jsonl"]["sha256"] for c in cfg.corpora}
    return root / "cache" / "tokenizer" / config_hash(to_dict(cfg), corpus_hashes)


def get_tokenizer(cfg: TokenizerConfig | None = None, root: Path | None = None):  # -> PreTrainedTokenizerFast
    """Train (or load the cached) tokenizer; a cache whose file hash does not match is rebuilt."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    cfg = cfg or TokenizerConfig()
    if cfg.check():
        raise ConfigError("TokenizerConfig", cfg.check())
    out = tokenizer_dir(cfg, root)
    meta_path = out / "meta.json"
    if meta_path.exists():
        try:
            meta = json.loads(meta_path.read_text())
            if config_hash((out / "tokenizer.json").read_text()) != meta["file_hash"]:
                raise CorruptArtifactError(f"{out / 'tokenizer.json'} does not match its meta.json hash")
            return PreTrainedTokenizerFast(tokenizer_file=str(out / "tokenizer.json"), eos_token=EOS)
        except (OSError, ValueError, KeyError, CorruptArtifactError) as exc:
            log.warning("cached tokenizer in %s is unusable (%s); retraining", out, exc)
            shutil.rmtree(out, ignore_errors=True)
    log.info("training byte-level BPE (vocab %d) on %s", cfg.vocab_size, ", ".join(cfg.corpora))
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=cfg.vocab_size, special_tokens=[EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_sample(cfg, corpora_dir(root or data_root())), trainer=trainer)
    with staged_dir(out) as tmp:
        tok.save(str(tmp / "tokenizer.json"))
        meta = {"config": to_dict(cfg), "file_hash": config_hash((tmp / "tokenizer.json").read_text()),
                "vocab_size": tok.get_vocab_size()}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
    return PreTrainedTokenizerFast(tokenizer_file=str(out / "tokenizer.json"), eos_token=EOS)


def token_byte_lengths(tokenizer) -> np.ndarray:
    """UTF-8 byte length of every token id (0 for special tokens): the denominator of bits per byte."""
    lengths = np.zeros(len(tokenizer), dtype=np.int64)
    special = set(tokenizer.all_special_ids)
    for token, idx in tokenizer.get_vocab().items():
        if idx not in special:
            lengths[idx] = len(token)  # byte-level BPE: one alphabet character per byte
    return lengths
