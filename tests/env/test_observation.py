"""The observation layouts: version 2 (one policy across settings) has scale-free score features, the LR
always, and the stated setting; checked by hand on a 3-domain space."""

import math

import numpy as np
import pytest

from mixagent.domains import Domain, DomainSpace
from mixagent.env.evaluation import EvalResult
from mixagent.env.observation import (
    CLIP,
    SCORE_SCALE,
    SettingObservationBuilder,
    observation_names_v2,
    setting_features,
)
from mixagent.errors import ConfigError

SPACE = DomainSpace("t", (Domain("wiki", "source", ("wiki",)), Domain("fiction", "source", ("fiction",)),
                          Domain("math", "target", ("math",))))
STATED = {"lam": 0.35, "steps": 8, "segment_tokens": 65536, "lr": 0.002, "wsd": 1.0, "decay_fraction": 0.25,
          "target_tokens": 32768}


def ev(bpb, source, target):
    return EvalResult(dict(zip(SPACE.names, bpb, strict=True)), {"source": source, "target": target}, {})


def test_the_layout_by_hand():
    build = SettingObservationBuilder(SPACE, STATED)
    start, prev, now = ev([2.0, 3.0, 4.0], 0.40, 0.05), ev([1.8, 3.0, 3.0], 0.39, 0.08), ev([1.6, 3.3, 2.0], 0.38, 0.12)
    obs = build(np.array([0.2, 0.3, 0.5]), start, prev, now, progress=0.25, lr=0.5)
    assert obs.shape == (3 * 3 + 11,) == (build.dim,) and len(observation_names_v2(SPACE.names)) == build.dim
    expected = [0.2, 0.3, 0.5,                     # weights
                -0.2, 0.1, -0.5,                   # loss over the start, minus 1
                -0.1, 0.1, -0.25,                  # loss change since the last step, over the start
                -0.2, 0.7,                         # score change since the start, over 0.1
                -0.1, 0.4,                         # score change since the last step, over 0.1
                0.25, 0.5,                         # progress, LR over the peak
                0.35, math.log2(8 * 65536 / 32768), 1.0, 1.0, 0.25]  # lam, 16 epochs, known, WSD, decay share
    np.testing.assert_allclose(obs, expected, rtol=1e-6, atol=1e-6)


def test_a_target_score_starting_near_zero_stays_in_range():
    """Version 1 divided by the start score: a base at 0.053 rising to 0.145 read +1.73. Version 2 reads the
    change over a fixed 0.1: +0.92, the same as a base at 0.5 rising to 0.592."""
    build = SettingObservationBuilder(SPACE, STATED)
    flat = np.ones(3) / 3
    low = build(flat, ev([2, 3, 4], 0.4, 0.053), ev([2, 3, 4], 0.4, 0.053), ev([2, 3, 4], 0.4, 0.145), 0.5, 1.0)
    high = build(flat, ev([2, 3, 4], 0.4, 0.5), ev([2, 3, 4], 0.4, 0.5), ev([2, 3, 4], 0.4, 0.592), 0.5, 1.0)
    names = observation_names_v2(SPACE.names)
    i = names.index("target_score")
    assert low[i] == pytest.approx(0.092 / SCORE_SCALE) == pytest.approx(high[i])
    assert np.all(np.abs(build(np.ones(3) / 3, ev([2, 3, 4], 0.4, 0.0), ev([2, 3, 4], 0.4, 0.0),
                               ev([2, 3, 4], 0.4, 9.0), 0.5, 1.0)) <= CLIP)  # clipped, never inf


@pytest.mark.parametrize("change, expected", [
    ({}, [0.35, 4.0, 1.0, 1.0, 0.25]),
    ({"target_tokens": 0}, [0.35, 0.0, 0.0, 1.0, 0.25]),   # unknown unique target tokens: flagged, not guessed
    ({"target_tokens": 2 ** 40}, [0.35, -10.0, 1.0, 1.0, 0.25]),  # far more data than the run reads: clipped
    ({"wsd": 0.0}, [0.35, 4.0, 1.0, 0.0, 0.0]),            # cosine has no decay share
])
def test_setting_features(change, expected):
    np.testing.assert_allclose(setting_features({**STATED, **change}), expected)


@pytest.mark.parametrize("change, match", [
    ({"lam": 1.5}, "lam in \\[0, 1\\]"),
    ({"target_tokens": -1}, "target_tokens >= 0"),
    ({"steps": float("nan")}, "finite numbers"),
])
def test_bad_stated_settings_are_typed_errors(change, match):
    with pytest.raises(ConfigError, match=match):
        setting_features({**STATED, **change})
    with pytest.raises(ConfigError, match="missing \\['wsd'\\]"):
        setting_features({k: v for k, v in STATED.items() if k != "wsd"})


def test_an_env_observes_version_2_when_its_spec_asks():
    """``observation: 2`` changes what the env observes, not its runs: the same actions give the same rewards,
    the observation carries the spec's stated setting, and held-out seed guards see the same runs."""
    from mixagent.env.environment import MixingEnv
    from mixagent.env.setting import stated_from_spec
    from mixagent.env.spec import load_spec
    from mixagent.paths import ENVS_DIR
    from mixagent.rollout.seeds import run_key

    path = ENVS_DIR / "tiny-cpt.yaml"
    one, two = (MixingEnv(path, overrides=["backend=analytic", *extra]) for extra in ([], ["observation=2"]))
    k = one.space.k
    assert one.observation_space.shape == (3 * k + 6,) and two.observation_space.shape == (3 * k + 11,)
    o1, _ = one.reset(seed=5)
    o2, _ = two.reset(seed=5)
    np.testing.assert_allclose(o2[-5:], setting_features(stated_from_spec(two.spec_)), rtol=1e-6)
    np.testing.assert_allclose(o2[:3 * k], o1[:3 * k])
    action = np.linspace(-1, 1, k).astype(np.float32)
    (s1, r1, *_), (s2, r2, *_) = one.step(action), two.step(action)
    assert r1 == r2 and s2.shape == (3 * k + 11,)
    np.testing.assert_allclose(s2[:3 * k], s1[:3 * k])
    # the layout is a view of the same runs: one spec hash (shared reference runs, audits, caches), one run key
    assert run_key(one.spec_.mdp_dict()) == run_key(two.spec_.mdp_dict()) and \
        one.spec_.spec_hash() == two.spec_.spec_hash() and one.spec_.mdp_dict() != two.spec_.mdp_dict()
    with pytest.raises(ConfigError, match="observation 2 observes the learning rate: set observe_lr: true"):
        load_spec(path, ["observation=2", "observe_lr=false"])
    with pytest.raises(ConfigError, match="observation must be 1 or 2"):
        load_spec(path, ["observation=3"])
