"""The one weights -> windows sampler: the environment's proxy training and deployment's MixtureDataset draw
the same windows for the same seed and weights."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from mixagent.deploy.mixture import MixtureDataset
from mixagent.domains import Domain, DomainSpace, DomainWeights
from mixagent.env import backends, proxy
from mixagent.sampling import MixtureSampler, MixtureStream, cumulative


def _space() -> DomainSpace:
    return DomainSpace("t", [Domain("a", "source", ["wiki"]), Domain("b", "source", ["news"]),
                             Domain("c", "target", ["math"])])


def _streams() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [rng.integers(0, 500, size=n) for n in (1700, 900, 2300)]


def test_the_environment_trains_through_the_shared_sampler():
    assert backends.MixtureSampler is MixtureSampler and proxy.MixtureSampler is MixtureSampler


def test_stream_is_numpy_choice_and_counter_addressable():
    w = np.array([0.2, 0.0, 0.5, 0.3])
    rng = np.random.Generator(np.random.PCG64(11))
    orders = [rng.permutation(n) for n in (5, 7, 3, 9)]
    expected = rng.choice(4, size=300, p=w)  # what the environment drew before the sampler was shared
    stream = MixtureStream([5, 7, 3, 9], seed=11)
    assert all(np.array_equal(a, b) for a, b in zip(orders, stream.orders))
    assert np.array_equal(stream.domains(0, 300, cumulative(w)), expected)
    for start in (250, 7, 0, 123):  # any sample, in any order
        assert np.array_equal(stream.domains(start, 20, cumulative(w)), expected[start: start + 20])


def _env_batches(weights: list[np.ndarray], per_batch: int, seed: int, length: int) -> list[np.ndarray]:
    sampler = MixtureSampler(_streams(), length, seed=seed)
    return [sampler.sample(w, per_batch) for w in weights]


@pytest.mark.parametrize("workers", [0, 2])
def test_same_seed_and_weights_give_the_environments_windows_in_deployment(workers):
    space, length, batch, seed = _space(), 16, 8, 5
    first, second = DomainWeights(space, [0.5, 0.2, 0.3]), DomainWeights(space, [0.1, 0.1, 0.8])
    ds = MixtureDataset.from_token_streams(_streams(), space, seq_len=length, batch_size=batch, seed=seed,
                                           initial=first)
    ds.schedule.set(second, first_batch=6)  # a mixture change at batch 6, as the scheduler writes it
    loader = DataLoader(ds, batch_size=batch, num_workers=workers)
    got = [b["input_ids"].numpy() for _, b in zip(range(12), loader)]
    want = _env_batches([first.values] * 6 + [second.values] * 6, batch, seed, length)
    for b, (g, w) in enumerate(zip(got, want)):
        assert np.array_equal(g, w), f"batch {b} differs"


def test_ranks_split_the_environments_stream():
    space, length, batch, seed = _space(), 16, 4, 9
    w = DomainWeights(space, [0.3, 0.3, 0.4])
    ranks = [MixtureDataset.from_token_streams(_streams(), space, seq_len=length, batch_size=batch, seed=seed,
                                               initial=w, rank=r, world_size=2) for r in (0, 1)]
    per_rank = [[b["input_ids"].numpy() for _, b in zip(range(5), DataLoader(ds, batch_size=batch))]
                for ds in ranks]
    want = _env_batches([w.values] * 5, 2 * batch, seed, length)
    for b in range(5):
        assert np.array_equal(np.concatenate([per_rank[0][b], per_rank[1][b]]), want[b])


def test_resumed_dataset_continues_the_environments_stream():
    space, length, batch, seed = _space(), 16, 8, 2
    w = DomainWeights(space, [0.2, 0.5, 0.3])
    ds = MixtureDataset.from_token_streams(_streams(), space, seq_len=length, batch_size=batch, seed=seed, initial=w)
    state = ds.state_dict(consumed_batches=4)
    resumed = MixtureDataset.from_token_streams(_streams(), space, seq_len=length, batch_size=batch, seed=seed,
                                                initial=w)
    resumed.load_state_dict(state)
    got = [b["input_ids"] for _, b in zip(range(3), DataLoader(resumed, batch_size=batch))]
    want = _env_batches([w.values] * 7, batch, seed, length)[4:]
    assert all(torch.equal(g, torch.from_numpy(x)) for g, x in zip(got, want))


@pytest.mark.parametrize("weights", [[0.0, 0.0, 0.0], [np.nan, 0.5, 0.5], [1.0, 1.0, 1.0], [0.5, -0.1, 0.6], [1.0]])
def test_invalid_weights_are_refused_before_anything_is_drawn(weights):
    from mixagent.errors import WeightsError

    sampler = MixtureSampler(_streams(), 16, seed=0)
    with pytest.raises(WeightsError):
        sampler.sample(np.array(weights), 4)
    assert sampler.drawn == 0 and not sampler.cursors.any()
