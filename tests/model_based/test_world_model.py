"""The world model of the mixing environment and its surrogate env: data layout, fit,
artifact round trip and refusals, the surrogate's Gymnasium contract, the committed model's measurements."""

from __future__ import annotations

import json
import shutil

import gymnasium
import numpy as np
import pytest

from mixagent.agent.dataset import load_trajectories
from mixagent.errors import ConfigError, CorruptArtifactError, SchemaVersionError, WorldModelError
from mixagent.model_based.surrogate import UncertaintyPenalty, make_surrogate_env
from mixagent.model_based.world_model import (
    WorldModelConfig,
    fit_world_model,
    load_world_model,
    model_data,
    split_by_tree,
)
from mixagent.paths import REPO_ROOT

DATA = REPO_ROOT / "trajectories/reference/math-cpt-v1"
COMMITTED = REPO_ROOT / "checkpoints/world_models/math-cpt-v1"
TINY = WorldModelConfig(members=2, hidden=16, layers=1, epochs=3, batch_size=128)


@pytest.fixture(scope="module")
def tset():
    return load_trajectories([DATA])


@pytest.fixture(scope="module")
def data(tset):
    return model_data(tset)


@pytest.fixture(scope="module")
def tiny(tset, data, tmp_path_factory):
    train, _ = split_by_tree(data, 5, 0)
    model = fit_world_model(data.subset(train), tset, TINY)
    out = tmp_path_factory.mktemp("wm")
    model.save(out)
    return out


def test_data_layout_rebuilds_the_next_evaluation(tset, data):
    k = tset.space.k
    assert data.x.shape == (len(data), 4 * k + 6) and data.y.shape == (len(data), k + 4)
    assert len(np.unique(data.tree)) == 25
    # each branched prefix step enters once: fewer rows than steps stored
    assert len(data) < sum(len(t.evals) for _, t in tset.trajectories)
    # the target (a relative change) applied to the evaluation before gives the stored evaluation after
    model = load_world_model(COMMITTED)
    run, traj = sorted(tset.trajectories, key=lambda rt: (rt[0], rt[1].id))[0]
    row = int(np.flatnonzero((data.traj == f"{run}/{traj.id}") & (data.step == 0))[0])
    after = model.next_eval(traj.start, data.y[row].astype(np.float64), 0)
    real = traj.evals[0]
    assert max(abs(after.bpb[n] - real.bpb[n]) for n in tset.space.names) < 1e-5
    assert abs(after.scores["target"] - real.scores["target"]) < 1e-5
    # the input's last K entries are the mixture trained at that step
    np.testing.assert_allclose(data.x[row, -k:], traj.steps[0]["weights"], atol=1e-6)


def test_split_holds_out_whole_trees(data):
    train, test = split_by_tree(data, 5, 0)
    assert not (train & test).any() and (train | test).all()
    assert not set(data.tree[train]) & set(data.tree[test]) and len(set(data.tree[test])) == 5
    again, _ = split_by_tree(data, 5, 0)
    assert (again == train).all()
    with pytest.raises(WorldModelError, match="holdout_trees=25 leaves no training data"):
        split_by_tree(data, 25, 0)


def test_artifact_round_trip_and_refusals(tset, data, tiny, tmp_path):
    model = load_world_model(tiny)
    x = data.x[:7]
    mean, std = model.predict(x)
    assert mean.shape == (7, tset.space.k + 4) and (std > 0).all()  # two members disagree
    # numpy inference equals the torch ensemble it was trained as
    import torch

    z = torch.from_numpy((x - model.norm["x_mean"]) / model.norm["x_std"]).expand(2, -1, -1).contiguous()
    with torch.no_grad():
        ref = model.net(z).numpy() * model.norm["y_std"] + model.norm["y_mean"]
    np.testing.assert_allclose(model.predict_members(x), ref, atol=1e-5)
    with pytest.raises(WorldModelError, match="10 features, this model takes 46"):
        model.predict(np.zeros((1, 10), np.float32))
    # same seed and config, same weights (CPU)
    train, _ = split_by_tree(data, 5, 0)
    twin = fit_world_model(data.subset(train), tset, TINY)
    np.testing.assert_array_equal(twin.predict_members(x), model.predict_members(x))

    bad = tmp_path / "bad"
    shutil.copytree(tiny, bad)
    raw = bytearray((bad / "model.safetensors").read_bytes())
    raw[-1] ^= 1
    (bad / "model.safetensors").write_bytes(bytes(raw))
    with pytest.raises(CorruptArtifactError, match="checksum"):
        load_world_model(bad)
    shutil.copy(tiny / "model.safetensors", bad / "model.safetensors")
    meta = json.loads((bad / "meta.json").read_text())
    (bad / "meta.json").write_text(json.dumps({**meta, "observation_version": 0}))
    with pytest.raises(SchemaVersionError, match="observation version 0"):
        load_world_model(bad)
    (bad / "meta.json").write_text(json.dumps({**meta, "version": 99}))
    with pytest.raises(SchemaVersionError, match="world-model version 99"):
        load_world_model(bad)
    with pytest.raises(WorldModelError, match="not a world-model artifact"):
        load_world_model(tmp_path)
    with pytest.raises(ConfigError, match="members must be >= 1"):
        fit_world_model(data, tset, WorldModelConfig(members=0))


def test_fit_learns_held_out_dynamics(tset, data):
    """A short real fit predicts held-out trees' per-domain bpb changes far better than their mean."""
    from mixagent.model_based.job import one_step_r2

    train, test = split_by_tree(data, 5, 0)
    model = fit_world_model(data.subset(train), tset, WorldModelConfig(members=2, hidden=64, epochs=25))
    r2 = one_step_r2(model, data.x[test], data.y[test])
    source = [r2[f"bpb/{n}"] for n, d in zip(tset.space.names, tset.space.domains) if d.field == "source"]
    assert np.mean(source) > 0.6, r2


def test_surrogate_env_contract(tiny, tset, data):
    from gymnasium.utils.env_checker import check_env

    env = make_surrogate_env(tiny)
    check_env(env, skip_render_check=True)
    obs, info = env.reset(seed=3)
    # the surrogate starts where every collected episode started: the same first observation
    run, traj = sorted(tset.trajectories, key=lambda rt: (rt[0], rt[1].id))[0]
    row = int(np.flatnonzero((data.traj == f"{run}/{traj.id}") & (data.step == 0))[0])
    np.testing.assert_allclose(obs, data.x[row, :-tset.space.k], atol=1e-6)
    action = np.linspace(-1, 1, env.space.k)
    first = [env.step(action)[0] for _ in range(3)]
    env.reset(seed=4)
    second = [env.step(action)[0] for _ in range(3)]
    np.testing.assert_array_equal(first, second)  # mean mode: the seed changes nothing
    sample = make_surrogate_env(tiny, mode="sample")
    runs = []
    for seed in (1, 1, 2):
        sample.reset(seed=seed)
        runs.append(np.concatenate([sample.step(action)[0] for _ in range(8)]))
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])
    with pytest.raises(ConfigError, match="mode must be one of"):
        make_surrogate_env(tiny, mode="median")
    with pytest.raises(ConfigError, match="penalty must be >= 0"):
        make_surrogate_env(tiny, penalty=-1)


def test_uncertainty_penalty_and_spec_refusal(tiny):
    plain, penalised = make_surrogate_env(tiny), make_surrogate_env(tiny, penalty=0.5)
    assert isinstance(penalised, UncertaintyPenalty)
    plain.reset(seed=0)
    penalised.reset(seed=0)
    action = np.zeros(plain.space.k)
    for _ in range(8):
        _, r, _, _, _ = plain.step(action)
        _, rp, _, _, info = penalised.step(action)
        assert info["disagreement"] > 0
        assert rp == pytest.approx(r - 0.5 * info["disagreement"])
    with pytest.raises(WorldModelError, match=r"math-cpt-v1 \(spec hash 6447ab4d8d7a9484\), not on "
                                              r"mixagent/math-natural-v0"):
        make_surrogate_env(tiny, spec=REPO_ROOT / "envs/math-natural.yaml")


def test_a_judge_reward_is_refused_by_the_world_model_which_does_not_predict_it(tiny):
    import dataclasses

    from mixagent.config import from_dict
    from mixagent.env.judge import JudgeSpec
    from mixagent.env.spec import EnvSpec
    from mixagent.model_based.surrogate import WorldModelBackend

    model = load_world_model(tiny)
    spec = from_dict(EnvSpec, model.meta["spec"], "world model spec")
    for name in ("judge", "judge_bpb"):
        judged = dataclasses.replace(spec, eval=dataclasses.replace(spec.eval, judge=JudgeSpec()),
                                     reward=dataclasses.replace(spec.reward, name=name))
        with pytest.raises(WorldModelError, match=f"reward '{name}' reads the judge's win rates.*normalised_bpb"):
            WorldModelBackend(model, judged)


def test_committed_surrogate_is_registered_and_measured():
    """``gymnasium.make`` serves the committed model; its report holds held-out R² and the policy ranking."""
    env = gymnasium.make("mixagent.envs:mixagent/math-cpt-surrogate-v1")
    obs, _ = env.reset(seed=0)
    total = 0.0
    for _ in range(8):
        obs, r, terminated, truncated, info = env.step(np.zeros(env.action_space.shape))
        total += r
    assert terminated and np.isfinite(total) and 0.5 < info["balanced_score"] < 1.2
    report = json.loads((COMMITTED / "report.json").read_text())
    assert len(report["policies"]) >= 10 and report["spearman"] > 0.5
    meta = json.loads((COMMITTED / "meta.json").read_text())
    assert meta["metrics"]["spearman"] == report["spearman"]
    assert set(report["held_out_trees"]).isdisjoint(meta["trees"])
    assert meta["runs"] == ["trajectories/reference/math-cpt-v1"]  # no machine paths in a committed artifact


def test_policy_ranks_recomputed_match_the_committed_report():
    from mixagent.model_based.job import WorldModelJobConfig, policy_ranks

    rows = policy_ranks(load_world_model(COMMITTED), WorldModelJobConfig())
    committed = {(r["policy"], r["source"]): r for r in json.loads((COMMITTED / "report.json").read_text())["policies"]}
    assert {(r["policy"], r["source"]) for r in rows} == set(committed)
    for r in rows:
        assert r["model"] == pytest.approx(committed[(r["policy"], r["source"])]["model"], abs=1e-6)
        assert r["real"] == pytest.approx(committed[(r["policy"], r["source"])]["real"], abs=1e-9)


def test_cli_errors(capsys):
    from mixagent.agent.__main__ import cli

    assert cli(["world-model", "model.epochs=0", "modle.seed=1"]) == 2
    err = capsys.readouterr().err
    assert "model.epochs must be >= 1" in err and "did you mean 'model'" in err


def test_planner_reads_the_state_from_the_observation_and_plans(tiny):
    """MPC: the evaluation rebuilt from an observation is the one the env holds; a decision is a valid
    replay mixture; a space other than the model's is refused."""
    from mixagent.domains import Domain, DomainSpace, DomainWeights
    from mixagent.model_based.planning import WorldModelPlanner

    model = load_world_model(tiny)
    env = make_surrogate_env(model)
    obs, _ = env.reset(seed=0)
    for _ in range(3):
        obs, *_ = env.step(np.linspace(-1, 1, env.space.k))
    planner = WorldModelPlanner(model, trials=4, penalty=0.1, seed=0)
    planner.reset(env.space)
    t, state = planner._state(obs.astype(np.float64))
    assert t == 3
    for name in env.space.names:
        assert state["now"].bpb[name] == pytest.approx(env.backend.now.bpb[name], rel=1e-5)
        assert state["prev"].bpb[name] == pytest.approx(env.backend.prev.bpb[name], rel=1e-5)
    w = planner.act(obs)
    assert isinstance(w, DomainWeights) and len(planner.plans[0]) == env.horizon - 3
    src = env.space.field_mask("source")
    assert w.values[src].sum() == pytest.approx(planner.plans[0][0])
    assert planner.act(obs).values.tolist() == w.values.tolist()  # seeded search: same decision
    with pytest.raises(WorldModelError, match="predicts the space"):
        planner.reset(DomainSpace("two", [Domain("a", "source", []), Domain("b", "target", [])]))
