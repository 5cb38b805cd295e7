"""Settings are data: a suite declares axes, a training distribution and held-out settings; settings have
stable hashes, map onto env specs, are drawn reproducibly, and bad input is refused naming the field."""

from __future__ import annotations

import pytest
import yaml

from mixagent.env.setting import AXES, Setting, load_suite
from mixagent.errors import ConfigError
from mixagent.paths import CONFIGS_DIR

TINY = {
    "name": "tiny-suite",
    "env": "envs/tiny-cpt.yaml",
    "spaces": {"sub-5": {"space": "configs/spaces/tiny-sub.yaml"}, "plain-4": "configs/spaces/tiny.yaml"},
    "defaults": {"base_model": "configs/base_model/tiny-prior.yaml", "target_tokens": 8192, "lr": 0.003,
                 "schedule": "wsd", "decay_fraction": 0.25, "steps": 4, "segment_tokens": 4096, "space": "sub-5",
                 "lam": 0.5},
    "axes": {"base_model": {"values": ["configs/base_model/tiny-prior.yaml", "configs/base_model/tiny.yaml"]},
             "target_tokens": {"range": [2048, 65536]}, "schedule": {"values": ["wsd", "cosine"]},
             "decay_fraction": {"range": [0.1, 0.5]}, "space": {"values": ["sub-5", "plain-4"]},
             "lam": {"range": [0, 1]}},
    "train": {"target_tokens": [4096, 16384], "schedule": ["wsd", "cosine"], "decay_fraction": [0.25, 0.5],
              "lam": [0.2, 0.5, 0.8]},
    "held_out": {"scarce": {"target_tokens": 2048}, "between": {"target_tokens": 8192, "lam": 0.35},
                 "no-prior": {"base_model": "configs/base_model/tiny.yaml"}, "plain": {"space": "plain-4"}},
}


def _suite(tmp_path, **edits):
    data = {**TINY, **edits}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_suite_declares_its_training_product_and_held_out_settings(tmp_path):
    suite = load_suite(_suite(tmp_path))
    train = suite.training_settings()
    # 2 budgets x (wsd x 2 decay shares + cosine, whose decay share means nothing) x 3 lams
    assert len(train) == 2 * 3 * 3 and len({s.run_hash() for s in train}) == 2 * 3
    held = suite.held_out_settings()
    assert set(held) == {"scarce", "between", "no-prior", "plain"}
    assert not any(suite.is_training(s) for s in held.values()) and all(suite.is_training(s) for s in train)
    assert suite.extrapolates(held["scarce"]) == ["target_tokens"]
    assert suite.extrapolates(held["between"]) == []  # 8192 lies between 4096 and 16384; lam 0.35 in [0.2, 0.8]
    assert suite.extrapolates(held["no-prior"]) == ["base_model"] and suite.extrapolates(held["plain"]) == ["space"]
    assert held["between"].target_tokens == 8192 and held["between"].base_model == TINY["defaults"]["base_model"]


def test_hashes_are_stable_and_lam_does_not_change_the_run(tmp_path):
    suite = load_suite(_suite(tmp_path))
    a, b = suite.setting({"lam": 0.2}), suite.setting({"lam": 0.8})
    assert a.run_hash() == b.run_hash() and a.setting_hash() != b.setting_hash()
    assert a.setting_hash() == suite.setting({"lam": 0.2}).setting_hash()  # the same values: the same hash
    assert a.run_hash() != suite.setting({"target_tokens": 16384}).run_hash()
    cos = [suite.setting({"schedule": "cosine", "decay_fraction": d}) for d in (0.25, 0.5)]
    assert cos[0] == cos[1] and cos[0].decay_fraction == 0.25  # the decay share means nothing under cosine
    assert Setting(**a.to_json()) == a and list(a.to_json()) == list(AXES)


def test_a_setting_maps_onto_its_env_spec(tmp_path):
    suite = load_suite(_suite(tmp_path))
    s = suite.setting({"target_tokens": 16384, "schedule": "cosine", "space": "plain-4", "lam": 0.8})
    spec = s.spec(suite)
    assert spec.target_tokens == 16384 and spec.optim.schedule == "cosine" and spec.optim.lr == 0.003
    assert spec.space == "configs/spaces/tiny.yaml" and spec.steps == 4 and spec.segment_tokens == 4096
    assert spec.reward.lam == 0.5  # the run keeps the family's lam; rewards are relabelled for 0.8
    assert s.spec(suite, keep_lam=False).reward.lam == 0.8
    assert spec.spec_hash() != suite.setting({"lam": 0.8}).spec(suite).spec_hash()
    assert suite.setting({"lam": 0.2}).spec(suite).spec_hash() == suite.setting({"lam": 0.8}).spec(suite).spec_hash()
    assert s.stated()["target_tokens"] == 16384 and s.stated()["wsd"] == 0.0 and s.stated()["lam"] == 0.8
    assert s.hidden() == {"size": "0.5m", "prior_target_share": 0.05}


def test_draws_are_seeded_and_cover_the_training_distribution(tmp_path):
    suite = load_suite(_suite(tmp_path))
    draws = [suite.draw(seed) for seed in range(200)]
    assert draws[:5] == [suite.draw(seed) for seed in range(5)]  # reproducible
    assert all(suite.is_training(s) for s in draws)
    assert {s.target_tokens for s in draws} == {4096, 16384} and {s.lam for s in draws} == {0.2, 0.5, 0.8}
    assert 70 < sum(s.schedule == "cosine" for s in draws) < 130  # each axis uniform: about half
    runs = suite.distinct_runs(3, seed=7)  # the first draws from seed 7 with distinct run hashes, in order
    expected = []
    for i in range(200):
        s = suite.draw(7 + i)
        if s.run_hash() not in {e.run_hash() for e in expected}:
            expected.append(s)
    assert runs == expected[:3] and suite.distinct_runs(4, seed=7)[:3] == runs
    with pytest.raises(ConfigError, match="fewer than the 1000 asked for"):
        suite.distinct_runs(1000)


def test_balanced_runs_fill_the_axis_values_a_few_draws_missed(tmp_path):
    from collections import Counter

    suite = load_suite(_suite(tmp_path))
    start = [suite.setting({"target_tokens": 4096, "schedule": "wsd", "decay_fraction": 0.25})] * 1
    runs = suite.balanced_runs(start, 4, seed=0)
    assert runs[0] == start[0] and len({r.run_hash() for r in runs}) == 4 and all(map(suite.is_training, runs))
    # the start ran 4096 / wsd / 0.25: the next run takes the values not used yet, then the counts even out
    assert (runs[1].target_tokens, runs[1].schedule) == (16384, "cosine")
    assert Counter(r.target_tokens for r in runs) == {4096: 2, 16384: 2}
    assert Counter(r.schedule for r in runs) == {"wsd": 2, "cosine": 2}
    wsd = [r.decay_fraction for r in runs if r.schedule == "wsd"]
    assert sorted(wsd) == [0.25, 0.5]  # the decay share is counted over WSD runs only
    counts = suite.axis_counts(runs)
    assert counts["target_tokens"] == [2, 2] and counts["schedule"] == [2, 2] and counts["decay_fraction"] == [1, 1]
    assert "lam" not in counts
    assert suite.balanced_runs(start, 4, seed=0) == runs  # seeded
    assert suite.balanced_runs(runs, 4) == runs  # already enough: nothing added
    with pytest.raises(ConfigError, match="fewer than the 99 asked for"):
        suite.balanced_runs(start, 99)


def test_a_bad_held_out_entry_does_not_hide_a_later_one_that_is_a_training_setting(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_suite(_suite(tmp_path, held_out={"odd": {"lam": 1.5}, "dup": {"target_tokens": 4096, "lam": 0.8}}))
    assert "lam must be in [0, 1]" in str(err.value) and "held_out.dup is also a training setting" in str(err.value)


@pytest.mark.parametrize("edits, message", [
    ({"held_out": {"dup": {"target_tokens": 4096, "lam": 0.8}}}, "held_out.dup is also a training setting"),
    ({"held_out": {"far": {"target_tokens": 1_000_000}}}, "target_tokens=1000000 is outside the declared axis"),
    ({"held_out": {"odd": {"lam": 1.5}}}, "lam must be in [0, 1]"),
    ({"train": {"lam": [0.2, -0.1]}}, "lam must be in [0, 1]"),
    ({"held_out": {"typo": {"target_token": 4096}}}, "'target_token' is not a setting axis (did you mean"),
    ({"held_out": {"lr": {"lr": 0.01}}}, "the suite declares no lr axis"),
    ({"axes": {**TINY["axes"], "space": {"values": ["sub-5", "code"]}}}, "'code' is not one of spaces"),
    ({"axes": {**TINY["axes"], "schedule": {"range": [0, 1]}}}, "axes.schedule is categorical"),
    ({"train": {"steps": [4.5]}}, "steps must be an integer"),
])
def test_bad_suites_are_refused_naming_the_field(tmp_path, edits, message):
    with pytest.raises(ConfigError) as err:
        load_suite(_suite(tmp_path, **edits))
    assert message in str(err.value)


def test_a_setting_outside_the_axes_is_refused(tmp_path):
    suite = load_suite(_suite(tmp_path))
    with pytest.raises(ConfigError, match="target_tokens=100 is outside the declared axis .* widen axes.target_tokens"):
        suite.setting({"target_tokens": 100})
    with pytest.raises(ConfigError, match="base_model='configs/base_model/2m.yaml' is outside the declared axis"):
        suite.setting({"base_model": "configs/base_model/2m.yaml"})


def test_the_committed_suite_loads_with_extrapolation_on_every_required_axis():
    """The agent-v2 bar: >= 8 held-out settings, extrapolating in prior share, budget, base size and space."""
    suite = load_suite(CONFIGS_DIR / "settings/math-cpt-v1.yaml")
    held = suite.held_out_settings()
    assert len(held) >= 8
    extrapolated = {a for s in held.values() for a in suite.extrapolates(s)}
    assert {"base_model", "target_tokens", "space"} <= extrapolated
    hidden = {n: s.hidden() for n, s in held.items()}
    assert hidden["prior-0"]["prior_target_share"] == 0 and hidden["base-2m"]["size"] == "2m"
    assert len({s.run_hash() for s in suite.training_settings()}) >= 100
