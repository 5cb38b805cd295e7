import subprocess
import sys
import warnings

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import mixagent
from mixagent.domains import DomainSpace
from mixagent.env.backends import AnalyticBackend
from mixagent.env.environment import MixingEnv
from mixagent.env.spec import load_spec
from mixagent.errors import ActionError, ConfigError, DataMissingError, UsageError, WeightsError
from mixagent.paths import ENVS_DIR


def test_every_spec_is_registered_and_valid():
    ids = mixagent.register_envs()
    for path in ENVS_DIR.glob("*.yaml"):
        spec = load_spec(path)
        assert spec.name == path.stem and spec.env_id in ids and spec.env_id in gymnasium.registry
        assert spec.backend == "lm"  # every shipped spec uses the real LM
    assert {"mixagent/tiny-v0", "mixagent/math-natural-v0", "mixagent/math-2d-v0", "mixagent/math-52-v0",
            "mixagent/code-natural-v0", "mixagent/math-cpt-surrogate-v1"} <= set(ids)
    assert mixagent.register_envs() == ids  # again: the same ids, registered once


def test_import_registers_nothing_and_make_registers_lazily():
    """``import mixagent`` reads no file; Gymnasium's ``module:id`` form registers on first use."""
    code = ("import builtins, io, sys, gymnasium\n"
            "opened = []\n"
            "real = io.open\n"
            "def spy(file, *a, **k):\n"
            "    opened.append(str(file))\n"
            "    return real(file, *a, **k)\n"
            "builtins.open = io.open = spy\n"
            "import mixagent, mixagent.env, mixagent.rollout, mixagent.agent\n"
            "builtins.open = io.open = real\n"
            "yamls = [f for f in opened if f.endswith('.yaml')]\n"
            "before = [i for i in gymnasium.registry if i.startswith('mixagent/')]\n"
            "env = gymnasium.make('mixagent.envs:mixagent/tiny-v0', disable_env_checker=True)\n"
            "print(yamls, before, env.spec.id, 'mixagent/math-cpt-v1' in gymnasium.registry)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["[]", "[]", "mixagent/tiny-v0", "True"]


def test_check_env_passes_without_warnings(tiny_env):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(tiny_env, skip_render_check=True)
    assert [str(w.message) for w in caught] == []


def _run(env, seed, actions):
    obs, info = env.reset(seed=seed)
    out = [(obs, 0.0, info["eval"])]
    for a in actions:
        obs, r, term, trunc, info = env.step(a)
        out.append((obs, r, info["eval"]))
    return out


def test_same_seed_and_actions_give_bit_identical_trajectories(tiny_spec_path):
    rng = np.random.default_rng(0)
    actions = [rng.uniform(-1, 1, 4).astype(np.float32) for _ in range(3)]
    a = _run(MixingEnv(tiny_spec_path), 7, actions)
    b = _run(MixingEnv(tiny_spec_path), 7, actions)
    for (o1, r1, e1), (o2, r2, e2) in zip(a, b):
        assert o1.tobytes() == o2.tobytes() and r1 == r2 and e1 == e2
    c = _run(MixingEnv(tiny_spec_path), 8, actions)
    assert c[1][2]["bpb"] != a[1][2]["bpb"]  # another seed: another data order


def test_episode_contract_and_telescoping_return(tiny_env):
    obs, info = tiny_env.reset(seed=3)
    assert obs.shape == (3 * 4 + 5,) and obs[-1] == 0.0
    np.testing.assert_allclose(obs[:4], tiny_env.natural.values, rtol=1e-6)
    total, steps, done = 0.0, 0, False
    while not done:
        obs, r, term, trunc, info = tiny_env.step(np.zeros(4, np.float32))
        total, steps, done = total + r, steps + 1, term or trunc
        assert not trunc
    assert steps == tiny_env.horizon and obs[-1] == pytest.approx(1.0)
    np.testing.assert_allclose(obs[:4], 0.25, rtol=1e-6)
    assert total == pytest.approx(info["balanced_score"], abs=1e-9)
    with pytest.raises(gymnasium.error.ResetNeeded):
        tiny_env.step(np.zeros(4, np.float32))


def test_target_only_training_forgets_the_source_and_learns_the_target(tiny_env):
    _, info = tiny_env.reset(seed=0)
    start = info["eval"]["bpb"]
    for _ in range(tiny_env.horizon):
        _, _, _, _, info = tiny_env.step(np.array([-1, -1, -1, 1], np.float32))
    end = info["eval"]["bpb"]
    assert end["math"] < start["math"] - 0.2
    assert np.mean([end[d] - start[d] for d in ("wiki", "news", "fiction")]) > 0.05


@pytest.mark.parametrize("action,match", [(np.zeros(3), r"expected \(4,\)"), ([np.nan, 0, 0, 0], "non-finite"),
                                          (["a", "b", "c", "d"], "not numeric")])
def test_bad_actions_raise(tiny_env, action, match):
    tiny_env.reset(seed=0)
    with pytest.raises(ActionError, match=match):
        tiny_env.step(action)


def test_nonfinite_loss_truncates_with_flag(tiny_env):
    tiny_env.reset(seed=0)
    with torch.no_grad():
        tiny_env.backend.model.model.embed_tokens.weight.fill_(float("nan"))
    obs, r, term, trunc, info = tiny_env.step(np.zeros(4, np.float32))
    assert trunc and not term and info["nonfinite_loss"] and r == 0.0
    assert np.all(np.isfinite(obs))
    with pytest.raises(gymnasium.error.ResetNeeded):
        tiny_env.step(np.zeros(4, np.float32))
    tiny_env.reset(seed=0)  # reset restores the base weights
    assert torch.isfinite(tiny_env.backend.model.model.embed_tokens.weight).all()


def test_analytic_backend_runs_the_control_flow(tiny_spec_path):
    spec = load_spec(tiny_spec_path, ["backend=analytic"])
    space = DomainSpace.from_yaml(spec.space_path())
    env = MixingEnv(spec, backend=AnalyticBackend(space, nan_at_step=1))
    env.reset(seed=0)
    _, r, term, trunc, info = env.step(np.array([-1, -1, -1, 1], np.float32))
    assert r != 0 and not (term or trunc)
    _, _, term, trunc, info = env.step(np.zeros(4, np.float32))
    assert trunc and info["nonfinite_loss"]


def test_missing_data_directory_names_the_command(tiny_spec_path, tmp_path, monkeypatch):
    monkeypatch.setenv("MIXAGENT_DATA", str(tmp_path))
    with pytest.raises(DataMissingError, match="make data"):
        MixingEnv(tiny_spec_path)


def test_step_weights_trains_on_the_exact_mixture(tiny_spec_path):
    from mixagent.policies import ReplayPolicy
    from mixagent.rollout.episode import rollout

    spec = load_spec(tiny_spec_path, ["backend=analytic"])
    env = MixingEnv(spec, backend=AnalyticBackend(DomainSpace.from_yaml(spec.space_path())))
    r = rollout(env, ReplayPolicy(0.0), seed=0)
    assert r.steps[0]["weights"] == [0.0, 0.0, 0.0, 1.0] and env.space.names == ("wiki", "news", "fiction", "math")


def test_spec_problems_caught_before_training(tiny_spec_path):
    from mixagent.errors import ConfigError

    with pytest.raises(ConfigError, match="floor"):
        MixingEnv(tiny_spec_path, overrides=["action.floor=0.3"])
    with pytest.raises(ConfigError, match="multiple of micro_batch x seq_len = 512"):
        MixingEnv(tiny_spec_path, overrides=["segment_tokens=1000"])
    with pytest.raises(ConfigError, match="render_mode 'human'"):
        MixingEnv(tiny_spec_path, render_mode="human")


def test_step_weights_refuses_another_space(tiny_spec_path):
    from mixagent.domains import DomainWeights
    from mixagent.errors import WeightsError
    from mixagent.paths import CONFIGS_DIR

    spec = load_spec(tiny_spec_path, ["backend=analytic"])
    env = MixingEnv(spec, backend=AnalyticBackend(DomainSpace.from_yaml(spec.space_path())))
    env.reset(seed=0)
    other = DomainSpace.from_yaml(CONFIGS_DIR / "spaces/math-2d.yaml")
    with pytest.raises(WeightsError, match="this env's space 'tiny'"):
        env.step_weights(DomainWeights(other, [0.5, 0.5]))


def test_snapshot_restore_continues_bit_identically(tiny_env):
    """A fork continues exactly like the unforked run (weights, optimizer moments, data cursors, RNG)."""
    env = tiny_env
    actions = [np.linspace(-1, 1, env.space.k), np.zeros(env.space.k), np.linspace(1, -1, env.space.k)]
    env.reset(seed=11)
    env.step(actions[0])
    snap = env.snapshot()
    straight = [env.step(a)[4]["eval"] for a in actions[1:]]
    obs = env.restore(snap)
    assert obs[-1] == pytest.approx(1 / env.horizon)
    env.step(actions[2])  # another branch from the same state...
    env.restore(snap)  # ...then back: the snapshot stays reusable
    assert [env.step(a)[4]["eval"] for a in actions[1:]] == straight
    env.reset(seed=11)
    with pytest.raises(gymnasium.error.ResetNeeded):
        MixingEnv(ENVS_DIR / "tiny.yaml", backend=AnalyticBackend(env.space)).snapshot()


def test_probes_take_their_tokens_from_the_step_and_reach_the_policy(tiny_spec_path):
    """Aioli's probe trainings run inside a step, out of its budget: every method spends the same tokens."""
    from mixagent.policies import AioliPolicy
    from mixagent.rollout.episode import rollout

    spec = load_spec(tiny_spec_path, ["backend=analytic"])
    space = DomainSpace.from_yaml(spec.space_path())
    env = MixingEnv(spec, backend=AnalyticBackend(space, 1000))
    with pytest.raises(gymnasium.error.ResetNeeded):
        env.probe(np.full((1, space.k), 1 / space.k))
    policy = AioliPolicy({n: 1 / space.k for n in space.names}, eta=50.0, one_hot=0.9, probe_batches=2)
    r = rollout(env, policy, seed=0)
    probe = 2 * space.k  # of the analytic backend's 10 batches a segment
    assert [s["probe_batches"] for s in r.steps] == [probe] * spec.steps
    assert [s["segment_tokens"] for s in r.steps] == [1000 * (10 - probe) // 10] * spec.steps
    assert env.backend.tokens_seen == spec.steps * 1000  # probes included: the same budget
    assert r.extra["policy"] == {"fallbacks": 0}
    assert np.abs(r.weights[-1] - 1 / space.k).max() > 0.01  # the probes moved the mixture
    env.reset(seed=0)
    with pytest.raises(WeightsError, match="simplex"):
        env.probe(np.ones((1, space.k)))
    with pytest.raises(ConfigError, match="whole segment"):
        env.probe(np.eye(space.k), batches=3)
    for bad in ({"batches": -5}, {"batches": 2.7}, {"windows": 0}):  # a negative probe would inflate the budget
        with pytest.raises(UsageError, match="integers >= 1"):
            env.probe(np.full((1, space.k), 1 / space.k), **bad)


def test_lm_probes_measure_held_out_loss_inside_the_segment(tiny_env):
    env = tiny_env
    env.reset(seed=0)
    k = env.space.k
    before = env.backend.tokens_seen
    losses = env.probe(np.eye(k)[:2], batches=1, windows=2)
    assert losses.shape == (3, k) and np.isfinite(losses).all()
    assert np.abs(losses[0] - 1).max() < 0.5  # a few windows' bits per byte over the start's (all windows)
    assert not np.allclose(losses[1], losses[0])  # a probe batch moved the losses
    _, _, _, _, info = env.step_weights(env.initial_weights())
    per_batch = env.spec_.segment_tokens // env.backend.steps_per_segment
    assert info["segment_tokens"] == env.spec_.segment_tokens - 2 * per_batch
    assert env.backend.tokens_seen - before == env.spec_.segment_tokens
