"""Behaviour policies: valid seeded mixtures, the schedules they promise, config validation."""

from __future__ import annotations

import numpy as np
import pytest

from mixagent.domains import DomainSpace
from mixagent.errors import ConfigError
from mixagent.paths import CONFIGS_DIR
from mixagent.policies.behaviour import BEHAVIOURS, BehaviourMix, BehaviourSpec, RandomWalkPolicy

T = 8


@pytest.fixture(scope="module")
def space():
    return DomainSpace.from_yaml(CONFIGS_DIR / "spaces/math-natural.yaml")


@pytest.fixture(scope="module")
def natural(space):
    return np.linspace(1, 2, space.k) / np.linspace(1, 2, space.k).sum()


def obs_at(space, t, weights=None):
    obs = np.zeros(3 * space.k + 5, np.float32)
    obs[: space.k] = weights if weights is not None else 1.0 / space.k
    obs[-1] = t / T
    return obs


def run(policy, space, steps=T):
    out, w = [], None
    for t in range(steps):
        w = policy.act(obs_at(space, t, w)).values
        out.append(w)
    return np.array(out)


@pytest.mark.parametrize("name", sorted(BEHAVIOURS))
def test_every_behaviour_gives_valid_seeded_mixtures(name, space, natural):
    a = BehaviourMix.build({"name": name, "params": {}, "seed": 1}, space, natural, T)
    b = BehaviourMix.build({"name": name, "params": {}, "seed": 1}, space, natural, T)
    wa, wb = run(a, space), run(b, space)
    assert wa.shape == (T, space.k)
    assert np.all(wa >= 0) and np.allclose(wa.sum(axis=1), 1.0)
    np.testing.assert_array_equal(wa, wb)  # same seed, same mixtures


def test_seeds_change_random_behaviours(space, natural):
    for name in ("dirichlet", "random_walk", "epsilon"):
        params = {"epsilon": 1.0} if name == "epsilon" else {}
        a = run(BehaviourMix.build({"name": name, "params": params, "seed": 1}, space, natural, T), space)
        b = run(BehaviourMix.build({"name": name, "params": params, "seed": 2}, space, natural, T), space)
        assert not np.allclose(a, b), name


def test_dirichlet_is_constant_and_concentration_controls_spread(space, natural):
    w = run(BehaviourMix.build({"name": "dirichlet", "params": {"concentration": 5.0}, "seed": 0}, space, natural, T),
            space)
    assert np.all(w == w[0])
    dev = {c: np.mean([np.abs(run(BehaviourMix.build({"name": "dirichlet", "params": {"concentration": c}, "seed": s},
                                                      space, natural, T), space, 1)[0] - natural).sum()
                       for s in range(30)]) for c in (1.0, 1000.0)}
    assert dev[1000.0] < 0.1 < dev[1.0]  # large concentration stays near the natural shares


def test_random_walk_drifts_from_the_current_mixture(space, natural):
    policy = RandomWalkPolicy(natural, 8.0, 50.0, seed=0)
    policy.reset(space)
    w = run(policy, space)
    steps = np.abs(np.diff(w, axis=0)).sum(axis=1)
    assert np.all(steps > 0)  # it moves every step, by less than a fresh draw would

    def first_draw(seed):
        p = RandomWalkPolicy(natural, 8.0, 50.0, seed=seed)
        p.reset(space)
        return p.act(obs_at(space, 0)).values

    assert np.mean(steps) < np.mean([np.abs(first_draw(s) - w[0]).sum() for s in range(1, 20)])
    # mid-episode it starts from the weights in the observation, not from a fresh draw
    current = np.zeros(space.k)
    current[0] = 1.0
    tight = RandomWalkPolicy(natural, 8.0, 1e5, seed=0)
    tight.reset(space)
    assert tight.act(obs_at(space, 4, current)).values[0] > 0.99


def test_piecewise_schedules(space, natural):
    target = space.field_mask("target")
    share = lambda w: w[:, target].sum(axis=1)  # noqa: E731
    w = run(BehaviourMix.build({"name": "target_then_replay", "params": {"switch": 0.5, "rho": 0.25}, "seed": 0},
                               space, natural, T), space)
    np.testing.assert_allclose(share(w), [1, 1, 1, 1, 0.75, 0.75, 0.75, 0.75])
    w = run(BehaviourMix.build({"name": "target_warmup", "params": {"warmup": 0.5, "start_target": 0.2,
                                                                     "end_target": 0.6}, "seed": 0},
                               space, natural, T), space)
    np.testing.assert_allclose(share(w), [0.2, 0.3, 0.4, 0.5, 0.6, 0.6, 0.6, 0.6])
    w = run(BehaviourMix.build({"name": "two_stage_replay", "params": {"switch": 0.25, "rho1": 0.0, "rho2": 0.5},
                                "seed": 0}, space, natural, T), space)
    np.testing.assert_allclose(share(w), [1, 1, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5])
    # within the source field, replay keeps the natural proportions
    src = ~target
    np.testing.assert_allclose(w[-1][src] / w[-1][src].sum(), natural[src] / natural[src].sum())


def test_epsilon_explores_at_its_rate(space, natural):
    base = run(BehaviourMix.build({"name": "epsilon", "params": {"base": "uniform", "epsilon": 0.0}, "seed": 0},
                                  space, natural, T), space)
    np.testing.assert_allclose(base, 1.0 / space.k)
    policy = BehaviourMix.build({"name": "epsilon", "params": {"base": "uniform", "epsilon": 0.3}, "seed": 0},
                                space, natural, 400)
    w = np.array([policy.act(obs_at(space, 0)).values for _ in range(400)])
    rate = np.mean(~np.all(np.isclose(w, 1.0 / space.k), axis=1))
    assert 0.22 < rate < 0.38


def test_mix_samples_by_weight_and_records_resolved_params(space, natural):
    mix = BehaviourMix([BehaviourSpec("dirichlet", 3.0, {"concentration": {"log_range": [1, 10]}}),
                        BehaviourSpec("target_then_replay", 1.0, {"rho": {"range": [0.2, 0.4]},
                                                                   "switch": {"choice": [0.25, 0.5]}})])
    records = [mix.sample(space, natural, T, np.random.SeedSequence([0, i]))[1] for i in range(400)]
    share = np.mean([r["name"] == "dirichlet" for r in records])
    assert 0.68 < share < 0.82
    for r in records:
        if r["name"] == "dirichlet":
            assert 1 <= r["params"]["concentration"] <= 10
        else:
            assert 0.2 <= r["params"]["rho"] <= 0.4 and r["params"]["switch"] in (0.25, 0.5)
    # a record rebuilds the same policy
    policy, rec = mix.sample(space, natural, T, np.random.SeedSequence([5]))
    np.testing.assert_array_equal(run(policy, space), run(BehaviourMix.build(rec, space, natural, T), space))


def test_bad_behaviour_configs_list_every_problem():
    with pytest.raises(ConfigError) as err:
        BehaviourMix([BehaviourSpec("dirichlett"), BehaviourSpec("epsilon", 1.0, {"epsilonn": 0.1, "base": "greedy"}),
                      BehaviourSpec("target_then_replay", -1.0, {"rho": 1.5, "switch": {"range": [0.8, 0.2]}}),
                      BehaviourSpec("random_walk", 1.0, {"concentration": {"log_range": [0, 5]}})])
    text = str(err.value)
    for fragment in ("did you mean 'dirichlet'", "params.epsilonn unknown (did you mean 'epsilon'",
                     "base 'greedy' unknown", "weight must be >= 0", "rho must be a number in [0, 1], got 1.5",
                     "range needs [lo, hi] with lo <= hi", "log_range needs lo > 0"):
        assert fragment in text
    with pytest.raises(ConfigError, match="at least one behaviour with weight > 0"):
        BehaviourMix([BehaviourSpec("dirichlet", 0.0)])
