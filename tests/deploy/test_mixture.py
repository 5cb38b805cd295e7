"""The mixture dataset under every DataLoader worker start method (fork, spawn, forkserver), with and without
persistent workers: the dataset reaches the workers, a change of weights made after the loader started
reaches them through the shared schedule, and a second pass continues the stream. Tiny token arrays, no
model."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from mixagent.deploy.mixture import MixtureDataset, default_lag
from mixagent.domains import Domain, DomainSpace, DomainWeights

SPACE = DomainSpace("two", [Domain("web", "source", ["web"]), Domain("math", "target", ["math"])])
SEQ, BATCH = 4, 2


def tiny_dataset() -> MixtureDataset:
    """Two domains of 64 windows each; web's tokens are below 1000, math's above, so a window names its domain."""
    streams = [np.arange(64 * SEQ, dtype=np.int64), 1000 + np.arange(64 * SEQ, dtype=np.int64)]
    web_only = DomainWeights.from_mapping(SPACE, {"web": 1.0})
    return MixtureDataset.from_token_streams(streams, SPACE, SEQ, BATCH, seed=5, initial=web_only)


def in_process(changes: list[tuple[dict[str, float], int]], batches: int) -> list[torch.Tensor]:
    """The stream's first ``batches`` batches, read without workers, under the same schedule changes."""
    ds = tiny_dataset()
    for mix, first in changes:
        ds.schedule.set(DomainWeights.from_mapping(SPACE, mix), first)
    it = iter(ds)
    return [torch.stack([next(it)["input_ids"] for _ in range(BATCH)]) for _ in range(batches)]


def take(it, n: int) -> list[torch.Tensor]:
    return [next(it)["input_ids"].clone() for _ in range(n)]


@pytest.mark.parametrize("persistent", [False, True], ids=["fresh", "persistent"])
@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_workers_of_every_start_method_read_the_shared_schedule(method, persistent):
    workers = 1
    lag = default_lag(workers)  # batches the worker may have prepared before a change is made
    ds = tiny_dataset()
    loader = DataLoader(ds, batch_size=BATCH, num_workers=workers, multiprocessing_context=method,
                        persistent_workers=persistent, prefetch_factor=2)
    it = iter(loader)  # the worker starts (and, for spawn and forkserver, receives a pickled dataset) here
    first = take(it, 1)
    # a change made after the worker started: it must see it through the shared-memory schedule
    ds.schedule.set(DomainWeights.from_mapping(SPACE, {"math": 1.0}), 1 + lag)
    first += take(it, 2 + lag)
    changes = [({"math": 1.0}, 1 + lag)]
    whole = in_process(changes + [({"web": 0.5, "math": 0.5}, 12 + lag)], 24 + 2 * lag)
    for b, (got, want) in enumerate(zip(first, whole)):
        assert torch.equal(got, want), f"batch {b}"
    assert bool((first[-1] >= 1000).all())  # math only after the change
    assert ds.schedule.late == 0
    del it
    # the next pass continues after what the first pass's worker had prepared, under a change made between passes
    ds.schedule.set(DomainWeights.from_mapping(SPACE, {"web": 0.5, "math": 0.5}), 12 + lag)
    second = take(iter(loader), 12)
    start = next(b for b in range(len(first), len(first) + lag + 1) if torch.equal(second[0], whole[b]))
    for i, got in enumerate(second):
        assert torch.equal(got, whole[start + i]), f"second pass, batch {start + i}"
    assert ds.schedule.late == 0


def test_a_copy_of_the_dataset_outside_a_worker_start_is_its_own_dataset():
    ds = tiny_dataset()
    for clone in (pickle.loads(pickle.dumps(ds)), copy.deepcopy(ds)):
        want = in_process([], 3)
        it = iter(clone)
        got = [torch.stack([next(it)["input_ids"] for _ in range(BATCH)]) for _ in range(3)]
        assert all(torch.equal(a, b) for a, b in zip(got, want))
        clone.schedule.set(DomainWeights.from_mapping(SPACE, {"math": 1.0}), 9)
        assert ds.schedule.rows == 1  # the copy's schedule is its own
