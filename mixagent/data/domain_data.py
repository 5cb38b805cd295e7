"""Token streams of every domain of a :class:`~mixagent.domains.DomainSpace`: training streams for the
mixture sampler and fixed held-out windows (the validation split, or the test split) for the evaluation
environment."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from mixagent.data.build import check_corpora, corpora_dir, read_split
from mixagent.data.labeller import ClusterLabels, cluster_labels
from mixagent.data.tokens import TokenizedSplit, load_tokenized
from mixagent.domains import DomainSpace
from mixagent.errors import ConfigError
from mixagent.paths import data_root

__all__ = ["DomainData"]

log = logging.getLogger(__name__)
MIN_CLUSTER_VAL_TOKENS = 16384  # a cluster's evaluation stream is topped up to at least this many tokens


class DomainData:
    """Per-domain tokens of a space.

    Attributes:
        train: one uint16 token stream per domain (passages EOS-separated).
        val_parts: per domain, the validation streams it draws evaluation windows from, with their shares.
        test_parts: the same from the test split (never seen by collection or training; the generalization
            protocol's held-out text).
        natural: the natural mixture — each domain's share of training tokens.
    """

    def __init__(self, space: DomainSpace, tokenizer, tokenizer_hash: str, root: Path | None = None) -> None:
        root = root or data_root()
        check_corpora(space.corpora, corpora_dir(root))
        self.space = space
        tok: dict[str, dict[str, TokenizedSplit]] = {c: load_tokenized(c, tokenizer, tokenizer_hash, root)
                                                     for c in space.corpora}
        labels: dict[tuple[str, ...], ClusterLabels] = {}
        for group in {tuple(d.corpora) for d in space.domains if d.cluster is not None}:
            k = sum(1 for d in space.domains if d.cluster is not None and tuple(d.corpora) == group)
            labels[group] = cluster_labels(list(group), k, root)
        self.train: list[np.ndarray] = []
        self.val_parts: list[list[tuple[np.ndarray, float]]] = []
        self.test_parts: list[list[tuple[np.ndarray, float]]] = []
        for d in space.domains:
            if d.match is not None:
                pattern = re.compile(d.match)
                split_parts = {}
                for split in ("train", "val", "test"):
                    split_parts[split] = [tok[c][split].select(self._matching(c, split, pattern, root))
                                          for c in d.corpora]
                sizes = np.array([len(t) for t in split_parts["train"]], dtype=np.float64)
                if not sizes.sum():
                    raise ConfigError(space.name, [f"domain {d.name!r}: no training passage of {d.corpora} has an id "
                                                   f"matching {d.match!r}; check the pattern against the ids in "
                                                   f"data/corpora/<corpus>/train.jsonl"])
                self.train.append(np.concatenate(split_parts["train"]))
                for split, parts in (("val", self.val_parts), ("test", self.test_parts)):
                    parts.append([(v, s) for v, s in zip(split_parts[split], sizes / sizes.sum()) if len(v)])
            elif d.cluster is None:
                train = [tok[c]["train"].tokens for c in d.corpora]
                sizes = np.array([len(t) for t in train], dtype=np.float64)
                self.train.append(np.concatenate(train) if len(train) > 1 else train[0])
                self.val_parts.append([(tok[c]["val"].tokens, s) for c, s in zip(d.corpora, sizes / sizes.sum())])
                self.test_parts.append([(tok[c]["test"].tokens, s) for c, s in zip(d.corpora, sizes / sizes.sum())])
            else:
                lab = labels[tuple(d.corpora)]
                runs = lab.members("train", d.cluster)
                self.train.append(np.concatenate([tok[c]["train"].select(i) for c, i in runs]))
                self.val_parts.append([(self._cluster_val(tok, lab, d.cluster), 1.0)])
                test = [tok[c]["test"].select(i) for c, i in lab.members("test", d.cluster)]  # its own, file order
                self.test_parts.append([(np.concatenate(test), 1.0)] if test else [])
        sizes = np.array([len(t) for t in self.train], dtype=np.float64)
        self.natural = sizes / sizes.sum()

    @staticmethod
    def _matching(corpus: str, split: str, pattern: re.Pattern, root: Path) -> np.ndarray:
        ids = [p["id"] for p in read_split(corpus, split, corpora_dir(root))]
        return np.array([i for i, pid in enumerate(ids) if pattern.search(pid)], dtype=np.int64)

    @staticmethod
    def _cluster_val(tok: dict[str, dict[str, TokenizedSplit]], lab: ClusterLabels, cluster: int) -> np.ndarray:
        """A cluster's held-out passages; topped up with the field's nearest others when they are few."""
        own = int((lab.labels["val"] == cluster).sum())
        ordered = [(corpus, int(i)) for corpus, idx in lab.members("val", cluster) for i in idx]
        parts, size = [], 0
        for n, (corpus, i) in enumerate(ordered):  # its own passages first, then the nearest others
            if n >= own and size >= MIN_CLUSTER_VAL_TOKENS:
                break
            parts.append(tok[corpus]["val"].select(np.array([i])))
            size += len(parts[-1])
        return np.concatenate(parts)

    def capped_train(self, field_mask: np.ndarray, tokens: int, length: int, seed: int = 0) -> list[np.ndarray]:
        """Training streams with the masked domains' unique tokens capped at ``tokens`` in all: scarce data
        that a data-hungry mixture must repeat (Muennighoff et al., arXiv 2305.16264).

        The cap is split over the masked domains by natural share (a domain smaller than its share keeps
        all of it) and each keeps a fixed random subset of whole ``length``-token windows (``seed``), so the
        sampler's windows stay aligned. The natural mixture is not changed.

        Raises:
            ConfigError: the cap leaves a masked domain with no whole window.
        """
        mask = np.asarray(field_mask, dtype=bool)
        shares = np.where(mask, self.natural, 0.0)
        shares = shares / shares.sum()
        rng = np.random.Generator(np.random.PCG64(seed))
        out = list(self.train)
        for d in np.flatnonzero(mask):
            have = len(self.train[d]) // length
            keep = min(have, int(tokens * shares[d]) // length)
            if keep < 1:
                raise ConfigError(self.space.name, [
                    f"target_tokens={tokens} leaves domain {self.space.names[d]!r} (share {shares[d]:.3f}) less than "
                    f"one {length}-token window; raise target_tokens to at least {int(np.ceil(length / shares[d]))}"])
            if keep < have:
                windows = np.sort(rng.choice(have, keep, replace=False))
                out[d] = self.train[d][: have * length].reshape(have, length)[windows].reshape(-1)
        return out

    def val_windows(self, domain: int, n_windows: int, length: int, split: str = "val") -> np.ndarray:
        """``(n, length)`` fixed held-out windows of one domain: split across its corpora by share and
        spaced evenly over each held-out stream (so they cover many documents, not the first one); fewer
        (down to none) when the domain's held-out text is short.

        Args:
            split: ``val`` (what collection and training are scored on) or ``test`` (held out from both).

        Raises:
            ValueError: another ``split``.
        """
        if split not in ("val", "test"):
            raise ValueError(f"split must be 'val' or 'test', got {split!r}")
        parts = (self.val_parts if split == "val" else self.test_parts)[domain]
        shares = np.array([s for _, s in parts])
        counts = np.floor(shares * n_windows).astype(int)
        counts[np.argsort(-(shares * n_windows - counts), kind="stable")[: n_windows - counts.sum()]] += 1
        rows = []
        for (stream, _), n in zip(parts, counts):
            n = min(int(n), len(stream) // length)
            if n:
                starts = np.linspace(0, len(stream) - length, n).astype(np.int64)
                rows.append(np.stack([stream[s: s + length] for s in starts]))
        return np.concatenate(rows).astype(np.int64) if rows else np.zeros((0, length), np.int64)
