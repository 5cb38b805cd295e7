import numpy as np

from mixagent.data.build import read_split
from mixagent.data.labeller import cluster_labels


def test_clusters_are_deterministic_cached_and_complete():
    a = cluster_labels(["news", "wiki"], 5)
    b = cluster_labels(["news", "wiki"], 5)
    for s in ("train", "val", "test"):
        np.testing.assert_array_equal(a.labels[s], b.labels[s])
    n_train = len(read_split("news", "train")) + len(read_split("wiki", "train"))
    assert len(a.labels["train"]) == n_train and set(a.labels["train"].tolist()) == set(range(5))
    n_val = len(a.labels["val"])
    for j in range(5):  # every cluster orders every held-out passage, its own first
        order = a.eval_order[j]
        assert sorted(order.tolist()) == list(range(n_val))
        own = (a.labels["val"] == j).sum()
        assert np.all(a.labels["val"][order[:own]] == j)
    runs = a.members("train", 0)
    assert sum(len(i) for _, i in runs) == (a.labels["train"] == 0).sum()


def test_corrupt_label_cache_is_rebuilt(caplog):
    import json
    import logging

    from mixagent.config import config_hash
    from mixagent.data.build import read_manifest
    from mixagent.data.labeller import LABELLER_VERSION
    from mixagent.paths import data_root

    good = cluster_labels(["news"], 3)
    hashes = {"news": {f: m["sha256"] for f, m in read_manifest("news")["files"].items()}}
    path = data_root() / "cache" / "labels" / f"{config_hash(LABELLER_VERSION, ['news'], 3, 0, hashes)}.json"
    d = json.loads(path.read_text())
    d["body"]["labels"]["train"][0] = (d["body"]["labels"]["train"][0] + 1) % 3
    path.write_text(json.dumps(d))
    with caplog.at_level(logging.WARNING):
        again = cluster_labels(["news"], 3)
    assert "relabelling" in caplog.text
    np.testing.assert_array_equal(again.labels["train"], good.labels["train"])
