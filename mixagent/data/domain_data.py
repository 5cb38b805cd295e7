"""Token streams of every domain of a :class:`~mixagent.domains.DomainSpace`: training streams for the
mixture sampler and fixed validation windows for the evaluation environment."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from mixagent.data.build import check_corpora, corpora_dir
from mixagent.data.labeller import ClusterLabels, cluster_labels
from mixagent.data.tokens import TokenizedSplit, load_tokenized
from mixagent.domains import DomainSpace
from mixagent.paths import data_root

__all__ = ["DomainData"]

log = logging.getLogger(__name__)
MIN_CLUSTER_VAL_TOKENS = 16384  # a cluster's evaluation stream is topped up to at least this many tokens


class DomainData:
    """Per-domain tokens of a space.

    Attributes:
        train: one uint16 token stream per domain (passages EOS-separated).
        val_parts: per domain, the validation streams it draws evaluation windows from, with their shares.
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
        for d in space.domains:
            if d.cluster is None:
                train = [tok[c]["train"].tokens for c in d.corpora]
                sizes = np.array([len(t) for t in train], dtype=np.float64)
                self.train.append(np.concatenate(train) if len(train) > 1 else train[0])
                self.val_parts.append([(tok[c]["val"].tokens, s) for c, s in zip(d.corpora, sizes / sizes.sum())])
            else:
                lab = labels[tuple(d.corpora)]
                runs = lab.members("train", d.cluster)
                self.train.append(np.concatenate([tok[c]["train"].select(i) for c, i in runs]))
                self.val_parts.append([(self._cluster_val(tok, lab, d.cluster), 1.0)])
        sizes = np.array([len(t) for t in self.train], dtype=np.float64)
        self.natural = sizes / sizes.sum()

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

    def val_windows(self, domain: int, n_windows: int, length: int) -> np.ndarray:
        """``(n, length)`` fixed validation windows of one domain: split across its corpora by share and
        spaced evenly over each validation stream (so they cover many documents, not the first one)."""
        parts = self.val_parts[domain]
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
