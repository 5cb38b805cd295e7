import numpy as np

from mixagent.data.build import read_split
from mixagent.labeller import cluster_labels


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
