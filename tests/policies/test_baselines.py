import numpy as np
import pytest

from mixagent.domains import DomainSpace, DomainWeights
from mixagent.env.backends import AnalyticBackend
from mixagent.env.environment import MixingEnv
from mixagent.env.spec import load_spec
from mixagent.errors import ConfigError, UnknownDomainError
from mixagent.paths import CONFIGS_DIR
from mixagent.policies import FixedPolicy, MixingPolicy, NaturalPolicy, ReplayPolicy, UniformPolicy, make_policy
from mixagent.rollout.episode import rollout


@pytest.fixture
def space():
    return DomainSpace.from_yaml(CONFIGS_DIR / "spaces/math-natural.yaml")


def _act(policy, space):
    policy.reset(space)
    w = policy.act(np.zeros(3 * space.k + 5, np.float32))
    assert isinstance(w, DomainWeights) and isinstance(policy, MixingPolicy)
    return w


def test_baselines_give_valid_weights(space):
    np.testing.assert_allclose(_act(UniformPolicy(), space).values, 1 / 8)
    shares = {n: i + 1.0 for i, n in enumerate(space.names)}
    np.testing.assert_allclose(_act(NaturalPolicy(shares), space).values, np.arange(1, 9) / 36)
    assert _act(FixedPolicy({"math": 3, "wiki": 1}), space).to_mapping()["math"] == 0.75


def test_replay_shares(space):
    w = _act(ReplayPolicy(0.25), space)
    assert w.field_share("source") == pytest.approx(0.25) and w.field_share("target") == pytest.approx(0.75)
    np.testing.assert_allclose(w.values[:7], 0.25 / 7)
    assert _act(make_policy("target_only"), space).to_mapping()["math"] == 1.0


def test_bad_policy_input(space):
    with pytest.raises(ConfigError, match="rho must be in"):
        ReplayPolicy(1.5)
    with pytest.raises(ConfigError, match="did you mean 'replay'"):
        make_policy("replai")
    with pytest.raises(ConfigError, match="no weight to any target-field domain"):
        _act(ReplayPolicy(0.5, {"wiki": 1.0}), space)
    with pytest.raises(UnknownDomainError, match="did you mean 'math'"):
        _act(FixedPolicy({"maths": 1.0}), space)


def test_rollout_in_the_env(tiny_spec_path):
    spec = load_spec(tiny_spec_path, ["backend=analytic"])
    env = MixingEnv(spec, backend=AnalyticBackend(DomainSpace.from_yaml(spec.space_path())))
    r = rollout(env, ReplayPolicy(0.5), seed=0)
    assert len(r.steps) == spec.steps and not r.truncated
    assert r.steps[0]["weights"][env.space.names.index("math")] == pytest.approx(0.5, abs=1e-3)
    assert r.ret == pytest.approx(r.steps[-1]["balanced_score"])


def test_demo_table_reports_mean_and_spread(tiny_spec_path):
    from mixagent.study.tables import format_table, roll_all

    spec = load_spec(tiny_spec_path, ["backend=analytic"])
    env = MixingEnv(spec, backend=AnalyticBackend(DomainSpace.from_yaml(spec.space_path())))
    results = roll_all(env, {"uniform": UniformPolicy(), "target-only": ReplayPolicy(0.0)}, seeds=[0, 1])
    table, rows = format_table(results, env.space)
    assert len(rows) == 2 and all(len(r["per_seed"]["balanced"]) == 2 for r in rows)
    assert rows[0]["balanced"] == pytest.approx(np.mean(rows[0]["per_seed"]["balanced"]))
    assert "| target-only |" in table and "±" in table


def test_one_baseline_parser_serves_policies_config_and_labels():
    from mixagent.agent.config import OnlineEvalConfig
    from mixagent.agent.evaluate import baseline_label
    from mixagent.policies import BaselineSpec, baseline_problems, method_problems, parse_baseline

    assert parse_baseline("replay:0.25") == BaselineSpec("replay", 0.25)
    assert parse_baseline("target_only") == BaselineSpec("target_only")
    assert parse_baseline("runs/agent/default/rl") is None  # not a baseline: an artifact path
    assert baseline_label("replay:0.5") == "replay rho=0.5" and baseline_label("target_only") == "target-only"
    for bad in ("replay:1.5", "replay", "unifrom", "uniform:2"):
        assert baseline_problems(bad)
        config_problems = OnlineEvalConfig(baselines=[bad]).check()
        assert config_problems == [f"baselines: {p}" for p in method_problems(bad)]  # the registry's parser
    assert "did you mean 'uniform'" in baseline_problems("unifrom")[0]
    with pytest.raises(ConfigError, match="replay needs a share in \\[0, 1\\]"):
        parse_baseline("replay:abc")
