"""Fine-grained domains: TF-IDF + k-means clusters of a field's training passages (scikit-learn).

Labels are deterministic (fixed ``random_state``) and cached as JSON by the hash of the corpora and
settings. Held-out passages are assigned to their nearest centroid; each cluster also gets an
*evaluation order* of held-out passages (its own first, then the field's others by distance) so every
domain has a validation slice even when few held-out passages fall in it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from mixagent.config import config_hash
from mixagent.data.build import corpora_dir, read_manifest, read_split
from mixagent.paths import atomic_write_json, data_root

__all__ = ["ClusterLabels", "cluster_labels"]

log = logging.getLogger(__name__)
LABELLER_VERSION = 1


class ClusterLabels:
    """Cluster ids of every passage of ``corpora`` (concatenated in corpus order) per split."""

    def __init__(self, corpora: list[str], sizes: dict[str, dict[str, int]], labels: dict[str, list[int]],
                 eval_order: list[list[int]], top_terms: list[list[str]]) -> None:
        self.corpora = corpora
        self.sizes = sizes  # split -> corpus -> passage count
        self.labels = {s: np.asarray(v, dtype=np.int64) for s, v in labels.items()}
        self.eval_order = [np.asarray(v, dtype=np.int64) for v in eval_order]  # indices into the val split
        self.top_terms = top_terms

    def members(self, split: str, cluster: int) -> list[tuple[str, np.ndarray]]:
        """Ordered runs ``(corpus, passage indices)`` of ``cluster``: train/test in file order, val in
        evaluation order."""
        idx = self.eval_order[cluster] if split == "val" else np.flatnonzero(self.labels[split] == cluster)
        bounds = np.cumsum([0] + [self.sizes[split][c] for c in self.corpora])
        owner = np.searchsorted(bounds, idx, side="right") - 1
        runs, start = [], 0
        for i in range(1, len(idx) + 1):
            if i == len(idx) or owner[i] != owner[start]:
                c = int(owner[start])
                runs.append((self.corpora[c], idx[start:i] - bounds[c]))
                start = i
        return runs


def cluster_labels(corpora: list[str], k: int, root: Path | None = None, seed: int = 0) -> ClusterLabels:
    """Cluster the training passages of ``corpora`` into ``k`` groups (cached)."""
    root = root or data_root()
    cdir = corpora_dir(root)
    hashes = {c: read_manifest(c, cdir)["files"] for c in corpora}
    file_hashes = {c: {f: m["sha256"] for f, m in h.items()} for c, h in hashes.items()}
    key = config_hash(LABELLER_VERSION, corpora, k, seed, file_hashes)
    path = root / "cache" / "labels" / f"{key}.json"
    if path.exists():
        try:
            d = json.loads(path.read_text())
            body = d["body"]
            if config_hash(body) != d["sha"]:
                raise ValueError("checksum mismatch")
            return ClusterLabels(body["corpora"], body["sizes"], body["labels"], body["eval_order"], body["top_terms"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("label cache %s is unusable (%s); relabelling", path, exc)
    from sklearn.cluster import KMeans
    from sklearn.feature_extraction.text import TfidfVectorizer

    log.info("clustering %s into %d domains (TF-IDF + k-means)", "+".join(corpora), k)
    splits = {s: {c: [p["text"] for p in read_split(c, s, cdir)] for c in corpora} for s in ("train", "val", "test")}
    texts = {s: [t for c in corpora for t in splits[s][c]] for s in splits}
    sizes = {s: {c: len(splits[s][c]) for c in corpora} for s in splits}
    vec = TfidfVectorizer(max_features=20000, sublinear_tf=True, stop_words="english", min_df=2, dtype=np.float32)
    x_train = vec.fit_transform(texts["train"])
    km = KMeans(n_clusters=k, n_init=3, random_state=seed).fit(x_train)
    labels = {"train": km.labels_.tolist()}
    for s in ("val", "test"):
        labels[s] = km.predict(vec.transform(texts[s])).tolist()
    dist = km.transform(vec.transform(texts["val"]))  # (n_val, k)
    val_labels = np.asarray(labels["val"])
    eval_order = []
    for j in range(k):
        own = np.flatnonzero(val_labels == j)
        rest = np.flatnonzero(val_labels != j)
        eval_order.append(np.concatenate([own[np.argsort(dist[own, j], kind="stable")],
                                          rest[np.argsort(dist[rest, j], kind="stable")]]).tolist())
    terms = np.asarray(vec.get_feature_names_out())
    top_terms = [terms[np.argsort(-c)[:5]].tolist() for c in km.cluster_centers_]
    body = {"corpora": corpora, "sizes": sizes, "labels": labels, "eval_order": eval_order, "top_terms": top_terms}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {"sha": config_hash(body), "body": body}, indent=None)
    return ClusterLabels(corpora, sizes, labels, eval_order, top_terms)
