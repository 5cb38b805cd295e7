"""Tokenized corpora: one uint16 token array per corpus split plus passage offsets, cached on disk by the
tokenizer and corpus hashes. Loaded with ``np.load(allow_pickle=False)``."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import numpy as np

from mixagent.config import config_hash
from mixagent.data.build import SPLITS, corpora_dir, read_manifest, read_split
from mixagent.errors import CorruptArtifactError
from mixagent.paths import data_root, staged_dir

__all__ = ["TokenizedSplit", "load_tokenized"]

log = logging.getLogger(__name__)


class TokenizedSplit:
    """Tokens of one corpus split: passage ``i`` is ``tokens[offsets[i]:offsets[i+1]]`` (EOS-terminated)."""

    def __init__(self, tokens: np.ndarray, offsets: np.ndarray) -> None:
        self.tokens = tokens
        self.offsets = offsets

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def select(self, passages: np.ndarray) -> np.ndarray:
        """Concatenated tokens of the given passages, in the given order."""
        if len(passages) == len(self) and np.all(passages == np.arange(len(self))):
            return self.tokens
        parts = [self.tokens[self.offsets[i]: self.offsets[i + 1]] for i in passages]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint16)


def _digest(tokens: np.ndarray, offsets: np.ndarray) -> str:
    return hashlib.sha256(tokens.tobytes() + offsets.tobytes()).hexdigest()


def _encode(tokenizer, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    eos = tokenizer.eos_token_id
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    lengths = np.fromiter((len(x) + 1 for x in ids), dtype=np.int64, count=len(ids))
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    tokens = np.empty(offsets[-1], dtype=np.uint16)
    for i, x in enumerate(ids):
        tokens[offsets[i]: offsets[i + 1] - 1] = x
        tokens[offsets[i + 1] - 1] = eos
    return tokens, offsets


def load_tokenized(corpus: str, tokenizer, tokenizer_hash: str, root: Path | None = None) -> dict[str, TokenizedSplit]:
    """Every split of ``corpus`` tokenized (encoded once, then loaded from the cache and hash-checked)."""
    root = root or data_root()
    cdir = corpora_dir(root)
    files = read_manifest(corpus, cdir)["files"]
    key = config_hash(tokenizer_hash, {s: files[f"{s}.jsonl"]["sha256"] for s in SPLITS})
    out = root / "cache" / "tokens" / key / corpus
    if (out / "meta.json").exists():
        try:
            meta = json.loads((out / "meta.json").read_text())
            result = {}
            for s in SPLITS:
                tokens = np.load(out / f"{s}.tokens.npy", allow_pickle=False)
                offsets = np.load(out / f"{s}.offsets.npy", allow_pickle=False)
                if _digest(tokens, offsets) != meta[s]:
                    raise CorruptArtifactError(f"{out / (s + '.tokens.npy')} does not match its meta.json checksum")
                result[s] = TokenizedSplit(tokens, offsets)
            return result
        except (OSError, ValueError, KeyError, CorruptArtifactError) as exc:
            log.warning("tokenized cache %s is unusable (%s); re-encoding", out, exc)
            shutil.rmtree(out, ignore_errors=True)
    meta = {}
    result = {}
    with staged_dir(out) as tmp:
        for s in SPLITS:
            tokens, offsets = _encode(tokenizer, [p["text"] for p in read_split(corpus, s, cdir)])
            np.save(tmp / f"{s}.tokens.npy", tokens)
            np.save(tmp / f"{s}.offsets.npy", offsets)
            meta[s] = _digest(tokens, offsets)
            result[s] = TokenizedSplit(tokens, offsets)
        (tmp / "meta.json").write_text(json.dumps(meta))
    log.info("tokenized %s: %s tokens", corpus, {s: len(result[s].tokens) for s in SPLITS})
    return result
