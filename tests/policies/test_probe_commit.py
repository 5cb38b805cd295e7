"""Probe-then-commit: the ridge fit recovers a rule choice that depends on the stated lam and on the probe
segment; the policy plays the probe in the first segment, then commits to the chosen rule (the same weights
as that rule's own policy), keeps its choice across a running-state round trip, and is keyed by its model's
contents; missing or bad inputs are typed errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mixagent.domains import DomainSpace
from mixagent.errors import ConfigError
from mixagent.paths import CONFIGS_DIR
from mixagent.policies.probe_commit import (
    FEATURES,
    ProbeCommitModel,
    ProbeCommitPolicy,
    fit_probe_commit,
    probe_features,
    stated_features,
)
from mixagent.policies.registry import PolicyContext, build_policy, method_problems
from mixagent.rollout.identity import policy_key

STATED = {"lam": 0.8, "target_tokens": 65536, "lr": 0.004, "wsd": 1.0, "decay_fraction": 0.25, "steps": 8,
          "segment_tokens": 65536}
RULES = ("replay:0.2", "replay:0.8", "uniform")


@pytest.fixture
def space():
    return DomainSpace.from_yaml(CONFIGS_DIR / "spaces/math-natural.yaml")


def _rows(n=40, seed=0):
    """Synthetic training rows: replay 0.2 (target-heavy) scores lam, replay 0.8 scores 1 - lam, uniform scores
    0.5 + the target field's probe change (a base that learns the target fast prefers uniform)."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, len(FEATURES)))
    x[:, 0] = rng.uniform(0, 1, n)          # lam
    x[:, 1] = rng.normal(0, 1, n)           # log2 target tokens (irrelevant here)
    x[:, 6] = rng.normal(-0.05, 0.01, n)    # source bpb change
    x[:, 7] = rng.normal(-0.2, 0.1, n)      # target bpb change
    y = np.stack([x[:, 0], 1 - x[:, 0], 0.5 - 2 * (x[:, 7] + 0.2)], axis=1)
    return x, y


def test_the_fit_recovers_a_choice_that_depends_on_lam_and_the_probe():
    x, y = _rows()
    model = fit_probe_commit(x, y, RULES, "replay:0.5", alpha=1e-6)
    np.testing.assert_allclose(model.predict(x), y, atol=1e-6)  # the scores are linear in the features
    row = x[0].copy()
    row[7] = -0.2
    row[0] = 0.9
    assert model.choose(row) == "replay:0.2"
    row[0] = 0.1
    assert model.choose(row) == "replay:0.8"
    row[0], row[7] = 0.5, -0.35  # the target field moved fast in the probe: uniform (0.8 > 0.5)
    assert model.choose(row) == "uniform"
    assert ProbeCommitModel.from_json(json.loads(json.dumps(model.to_json()))) == model


def test_features():
    np.testing.assert_allclose(stated_features(STATED), [0.8, -1.0, 1.0, 1.0, 1.0, 0.25])
    # uncapped: as many unique tokens as the run trains (8 x 65536 = 4 x 131072), flagged
    assert stated_features({**STATED, "target_tokens": 0})[1:3].tolist() == [2.0, 0.0]
    space = DomainSpace.from_yaml(CONFIGS_DIR / "spaces/math-natural.yaml")
    obs = np.zeros(3 * space.k + 5)
    obs[space.k:2 * space.k] = np.where(space.field_mask("target"), -0.3, np.arange(space.k) * 0.01)
    src = np.arange(space.k)[space.field_mask("source")] * 0.01
    np.testing.assert_allclose(probe_features(obs, space), [src.mean(), -0.3])


def _model(tmp_path, coef_sign=1.0):
    x, y = _rows()
    model = fit_probe_commit(x, coef_sign * y, RULES, "replay:0.5", alpha=1e-6)
    path = tmp_path / f"ptc{coef_sign:+g}.json"
    path.write_text(json.dumps(model.to_json()))
    return model, path


def test_the_policy_probes_then_commits_and_resumes(space, tmp_path):
    model, path = _model(tmp_path)
    natural = {n: 1.0 / space.k for n in space.names}
    ctx = PolicyContext(natural=natural, stated=STATED)
    policy = build_policy(f"probe_commit:model={path}", ctx)
    policy.reset(space)
    obs = np.zeros(3 * space.k + 5, np.float32)
    first = policy.act(obs)
    assert first.field_share("source") == pytest.approx(0.5) and policy.chosen is None
    obs[space.k:2 * space.k] = np.where(space.field_mask("target"), -0.2, -0.05)
    obs[3 * space.k + 4] = 0.25  # progress after the first of 4 segments
    second = policy.act(obs)
    features = np.concatenate([stated_features(STATED), [-0.05, -0.2]])
    assert policy.chosen == model.choose(features) == "replay:0.2"  # lam 0.8: the target-heavy rule
    expected = build_policy("replay:0.2", PolicyContext(natural=natural))
    expected.reset(space)
    np.testing.assert_allclose(second.values, expected.act(obs).values)
    state = json.loads(json.dumps(policy.state_dict()))
    resumed = build_policy(f"probe_commit:model={path}", ctx)
    resumed.reset(space)
    resumed.load_state_dict(state)
    obs[3 * space.k + 4] = 0.5
    obs[space.k:2 * space.k] = 0.0  # other dynamics later do not change a commitment
    np.testing.assert_allclose(resumed.act(obs).values, second.values)


def test_the_cache_key_covers_the_model_contents(space, tmp_path):
    _, path = _model(tmp_path)
    ctx = PolicyContext(natural={n: 1.0 / space.k for n in space.names}, stated=STATED)
    key = policy_key(f"probe_commit:model={path}", ctx)
    other, other_path = _model(tmp_path, coef_sign=-1.0)
    path.write_text(other_path.read_text())  # the same path, another fit
    assert policy_key(f"probe_commit:model={path}", ctx) != key
    assert policy_key(f"probe_commit:model={path}", PolicyContext(natural=ctx.natural,
                                                                  stated={**STATED, "lam": 0.2})) != key


def test_bad_input_is_refused(space, tmp_path):
    _, path = _model(tmp_path)
    with pytest.raises(ConfigError, match="stated setting"):
        build_policy(f"probe_commit:model={path}", PolicyContext(natural=None))
    with pytest.raises(ConfigError, match="needs a fitted model"):
        build_policy("probe_commit", PolicyContext(natural=None, stated=STATED))
    with pytest.raises(ConfigError, match="lam must be in"):
        ProbeCommitPolicy(None, {**STATED, "lam": 1.5}, str(path))
    with pytest.raises(ConfigError, match="lr must be > 0"):
        stated_features({**STATED, "lr": 0.0})
    with pytest.raises(ConfigError, match="lam must be a finite number"):
        stated_features({**STATED, "lam": float("nan")})
    with pytest.raises(ConfigError, match="target_tokens must be >= 0"):
        stated_features({**STATED, "target_tokens": -1})
    with pytest.raises(ConfigError, match="lacks \\['decay_fraction'\\]"):
        ProbeCommitPolicy(None, {k: v for k, v in STATED.items() if k != "decay_fraction"}, str(path))
    assert any("not found" in p for p in method_problems(f"probe_commit:model={tmp_path / 'missing.json'}"))
    assert method_problems(f"probe_commit:model={path}") == []
    broken = json.loads(path.read_text())
    broken["coef"] = broken["coef"][:-1]
    path.write_text(json.dumps(broken))
    with pytest.raises(ConfigError, match="do not fit 3 rules"):
        ProbeCommitModel.load(path)
    stale = broken | {"version": 0}
    path.write_text(json.dumps(stale))
    with pytest.raises(ConfigError, match="refit it"):
        ProbeCommitModel.load(path)
    with pytest.raises(ConfigError, match="scores must be"):
        fit_probe_commit(np.zeros((3, len(FEATURES))), np.zeros((3, 2)), RULES, "replay:0.5")


def test_rules_build_as_the_registry_builds_them(space):
    from mixagent.policies.probe_commit import build_rule

    natural = {n: (i + 1.0) / 36 for i, n in enumerate(space.names)}
    obs = np.zeros(3 * space.k + 5, np.float32)
    obs[3 * space.k + 4] = 0.75
    for spec in ("natural", "uniform", "replay:0.3", "two_phase:rho1=0.8,rho2=0.2,switch=2"):
        ours, theirs = build_rule(spec, natural), build_policy(spec, PolicyContext(natural=natural))
        ours.reset(space)
        theirs.reset(space)
        np.testing.assert_allclose(ours.act(obs).values, theirs.act(obs).values)
    with pytest.raises(ConfigError, match="must be natural, uniform"):
        build_rule("doremi", natural)
    with pytest.raises(ConfigError, match="must be natural, uniform"):
        build_rule("two_phase:rho1=0.8", natural)


def test_a_committed_two_phase_rule_resumes_with_its_horizon(space, tmp_path):
    """Resumed after the probe, a committed two-phase rule still switches at its step: its own running state
    (the run's horizon) travels in the policy's."""
    x, y = _rows()
    rules = ("two_phase:rho1=0.8,rho2=0.2,switch=4", "uniform")
    model = fit_probe_commit(x, np.stack([np.ones(len(x)), np.zeros(len(x))], axis=1), rules, "replay:0.5")
    natural = {n: 1.0 / space.k for n in space.names}
    ctx = PolicyContext(natural=natural, stated=STATED)
    policy = ProbeCommitPolicy(natural, STATED, model)
    policy.reset(space)
    obs = np.zeros(3 * space.k + 5, np.float32)
    policy.act(obs)
    for t in (1, 2, 3):
        obs[3 * space.k + 4] = t / 8
        before = policy.act(obs)
    assert policy.chosen == rules[0] and before.field_share("source") == pytest.approx(0.8)
    state = json.loads(json.dumps(policy.state_dict()))
    resumed = build_policy("probe_commit:model=" + str(_write(model, tmp_path)), ctx)
    resumed.reset(space)
    resumed.load_state_dict(state)
    obs[3 * space.k + 4] = 4 / 8  # the switch step, read with the horizon of the first run (8), not 4
    assert resumed.act(obs).field_share("source") == pytest.approx(0.2)


def _write(model, tmp_path):
    path = tmp_path / "two_phase.json"
    path.write_text(json.dumps(model.to_json()))
    return path


def test_the_table_identity_follows_the_model_contents(tmp_path):
    from mixagent.rollout.identity import policy_identity
    from mixagent.study.compare import has_hyperparameters

    _, path = _model(tmp_path)
    spec = f"probe_commit:model={path}"
    first = policy_identity(spec)
    assert first.startswith(f"{spec}@rules1#") and first == policy_identity(spec)
    _, other = _model(tmp_path, coef_sign=-1.0)
    path.write_text(other.read_text())
    assert policy_identity(f"probe_commit:model={path}") != first  # refit at the same path: another policy
    assert not has_hyperparameters(f"probe_commit:model={path}")  # its model is fitted, not tuned
