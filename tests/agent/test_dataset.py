"""Agents on runs collected on a spec with a normalised reward and the learning rate in
the observation record both (meta.json ``proxy``), datasets rebuild the same rewards and observations from
them, the trained artifact marks that it observes the learning rate, and deployment passes it. Every test
runs the real pieces on the tiny v1 spec (``envs/tiny-cpt.yaml``)."""

import dataclasses
import json

import numpy as np
import pytest

from mixagent.agent import AgentConfig, build_transitions, load_trajectories, train_agent
from mixagent.agent.dataset import top_trajectories
from mixagent.config import load_config
from mixagent.deploy.scheduler import MixingScheduler
from mixagent.env.environment import MixingEnv
from mixagent.env.evaluation import EvalResult
from mixagent.env.references import commit_reference, get_reference
from mixagent.env.rewards import Reference, balanced_score, step_reward
from mixagent.errors import AgentDataError, ConfigError, UsageError
from mixagent.paths import CONFIGS_DIR, ENVS_DIR
from mixagent.policies import load_policy
from mixagent.policies.artifact import meta_problems
from mixagent.rollout.tree import TreeConfig
from mixagent.trajectories.collector import CollectConfig, collect
from tests.agent.test_train import TRAIN


@pytest.fixture(scope="module")
def v1_env():
    return MixingEnv(ENVS_DIR / "tiny-cpt.yaml")


@pytest.fixture(scope="module")
def v1_run(tmp_path_factory, v1_env):
    """One tree on the tiny v1 spec, forking once at step 2 (2 trajectories, 6 segments)."""
    cfg = dataclasses.replace(load_config(CollectConfig, CONFIGS_DIR / "collect/tiny.yaml",
                                          ["env=envs/tiny-cpt.yaml", f"out_dir={tmp_path_factory.mktemp('v1')}"]),
                              run="v1_tiny", trees=1, tree=TreeConfig((2,), 2), launcher="inline")
    collect(cfg, progress=False)
    return cfg.run_dir


def test_runs_record_the_reference_and_learning_rates_and_datasets_use_them(v1_run, v1_env):
    proxy = json.loads((v1_run / "meta.json").read_text())["proxy"]
    assert Reference.from_json(proxy["reference"]) == v1_env.reference
    assert proxy["observed_lr"] == v1_env.lr_schedule() and proxy["observed_lr"][-1] < 1.0
    tset = load_trajectories([v1_run])
    tr = build_transitions(tset, "normalised_bpb", 0.5, dedupe=False)
    k, horizon = tset.space.k, tset.horizon
    assert tr.observations.shape[1] == 3 * k + 6
    for ep in tr.episodes:
        traj = next(t for _, t in tset.trajectories if t.id == ep["id"])
        rows = slice(ep["row"], ep["row"] + ep["steps"])
        # the recomputed reward is the env's, step by step, and the return telescopes to B_T - B_0
        np.testing.assert_allclose(tr.rewards[rows], traj.rewards, rtol=0, atol=1e-6)
        b = [balanced_score("normalised_bpb", 0.5, traj.start, e, tset.space, v1_env.reference)
             for e in (traj.start, traj.evals[-1])]
        assert ep["return"] == pytest.approx(b[1] - b[0], abs=1e-9) == pytest.approx(float(traj.rewards.sum()))
        # the observation's last entry is the learning rate of the coming segment
        np.testing.assert_allclose(tr.observations[rows, -1], proxy["observed_lr"][:horizon], rtol=1e-6)
    # another normalised reward is recomputed from the same raw evaluations and the recorded extremes
    low = build_transitions(tset, "normalised_bpb_min", 0.5, dedupe=False)
    for ep in low.episodes:
        traj = next(t for _, t in tset.trajectories if t.id == ep["id"])
        s = [v1_env.reference.normalise("bpb", f, traj.evals[-1].field_bpb(tset.space, f))
             for f in ("source", "target")]
        s0 = [v1_env.reference.normalise("bpb", f, traj.start.field_bpb(tset.space, f)) for f in ("source", "target")]
        assert ep["return"] == pytest.approx(min(s) - min(s0), abs=1e-9)
    assert len(top_trajectories(tset, 0.5, "normalised_bpb", 0.5)) == 1


def test_observation_v2_relabels_every_lam_from_the_same_runs(v1_run, v1_env):
    """Version 2 observes the stated setting: one set of runs gives a dataset per lam, each with that lam's
    rewards and lam in its observation; the rest of each row is the same, and the v1 rows' per-domain blocks
    and learning rate are shared."""
    from mixagent.agent.dataset import relabelled_transitions, stated_of
    from mixagent.env.observation import SettingObservationBuilder, observation_names_v2, setting_features
    from mixagent.env.setting import stated_from_spec

    tset = load_trajectories([v1_run])
    k = tset.space.k
    both = relabelled_transitions(tset, "normalised_bpb", [0.2, 0.8], dedupe=False)
    one = build_transitions(tset, "normalised_bpb", 0.2, dedupe=False, observation=2)
    n = len(one)
    assert len(both) == 2 * n and both.observations.shape[1] == 3 * k + 11 == len(observation_names_v2(
        tset.space.names))
    names = observation_names_v2(tset.space.names)
    lam = names.index("lam")
    assert set(both.observations[:n, lam]) == {np.float32(0.2)} and set(both.observations[n:, lam]) == {np.float32(0.8)}
    rest = [i for i in range(len(names)) if i != lam]
    np.testing.assert_array_equal(both.observations[:n][:, rest], both.observations[n:][:, rest])
    assert [e["lam"] for e in both.episodes] == [0.2] * len(one.episodes) + [0.8] * len(one.episodes)
    for ep in both.episodes:  # each copy's rewards are the balanced score's steps at its own lam
        traj = next(t for _, t in tset.trajectories if t.id == ep["id"])
        b = [balanced_score("normalised_bpb", ep["lam"], traj.start, e, tset.space, v1_env.reference)
             for e in (traj.start, traj.evals[-1])]
        assert ep["return"] == pytest.approx(b[1] - b[0], abs=1e-9)
        rows = slice(ep["row"], ep["row"] + ep["steps"])  # and each row's reward is its own lam's step
        before = [traj.start, *traj.evals]
        steps = [step_reward("normalised_bpb", ep["lam"], traj.start, before[t], before[t + 1], tset.space,
                             v1_env.reference) for t in range(ep["first_step"], ep["first_step"] + ep["steps"])]
        np.testing.assert_allclose(both.rewards[rows], steps, rtol=0, atol=1e-6)
    # the stated part is the spec's, the LR the recorded one, the per-domain blocks version 1's
    stated = stated_of(tset, 0.2)
    assert stated == {**stated_from_spec(v1_env.spec_), "lam": 0.2}
    np.testing.assert_allclose(one.observations[0, -5:], setting_features(stated), rtol=1e-6)
    v1 = build_transitions(tset, "normalised_bpb", 0.2, dedupe=False)
    np.testing.assert_allclose(one.observations[:, :3 * k], v1.observations[:, :3 * k], rtol=1e-6)
    np.testing.assert_allclose(one.observations[:, names.index("lr")], v1.observations[:, -1], rtol=1e-6)
    assert isinstance(SettingObservationBuilder(tset.space, stated).dim, int)
    with pytest.raises(ConfigError, match="lams must be a non-empty list of numbers in \\[0, 1\\]"):
        relabelled_transitions(tset, "normalised_bpb", [0.2, 1.5])
    with pytest.raises(ConfigError, match="observation version must be 1 or 2"):
        build_transitions(tset, "normalised_bpb", 0.2, observation=3)


def test_runs_without_a_reference_refuse_normalised_rewards(v1_run, tmp_path):
    meta = json.loads((v1_run / "meta.json").read_text())
    for key, match in (("reference", "recorded none"), ("observed_lr", "no proxy.observed_lr")):
        copy = tmp_path / key
        copy.mkdir()
        for f in v1_run.iterdir():
            if f.is_file():
                (copy / f.name).write_bytes(f.read_bytes())
        m = json.loads(json.dumps(meta))
        del m["proxy"][key]
        (copy / "meta.json").write_text(json.dumps(m))
        with pytest.raises(AgentDataError, match=match):
            build_transitions(load_trajectories([copy]), "normalised_bpb", 0.5)
        if key == "observed_lr":  # version 2 observes the LR always
            with pytest.raises(AgentDataError, match="proxy.observed_lr"):
                build_transitions(load_trajectories([copy]), "balanced_bpb", 0.5, observation=2)
    with pytest.raises(ConfigError, match="unknown reward 'normalised_bp'.*did you mean"):
        build_transitions(load_trajectories([v1_run]), "normalised_bp", 0.5)


def test_agent_trains_on_v1_and_deploys_with_the_learning_rate(v1_run, v1_env, tmp_path):
    cfg = load_config(AgentConfig, CONFIGS_DIR / "agent/default.yaml",
                      ["name=v1", f"out_dir={tmp_path}", f"runs=[{v1_run}]", *TRAIN, "rl.gamma=1.0",
                       "reward=normalised_bpb", "sft.top_fraction=1.0", "eval.agents=[sft]"])
    result = train_agent(cfg, progress=False)
    meta = json.loads((result.artifacts["sft"] / "meta.json").read_text())
    assert meta["observation"] == {"version": meta["observation"]["version"], "dim": 3 * v1_env.space.k + 6,
                                   "lr": True}
    assert meta["reward"]["name"] == "normalised_bpb" and not meta_problems(meta)
    assert meta_problems({**meta, "observation": {**meta["observation"], "lr": False}})  # dim no longer fits
    policy = load_policy(result.artifacts["sft"])
    assert policy.observe_lr
    # online evaluation ran the agent in the v1 env itself (its observation has the LR entry)
    assert [r["policy"] for r in result.rows] == ["agent SFT (bc)", "uniform"]
    assert all(r["seeds"] == [1000] and np.isfinite(r["balanced"]) for r in result.rows)
    # deployment: the scheduler builds the same observation, and asks for the LR when the policy needs it
    sched = MixingScheduler(policy, v1_env.space)
    start = EvalResult.from_json(v1_env.reset(seed=3)[1]["eval"])
    with pytest.raises(UsageError, match="observes the learning rate.*pass lr="):
        sched.step(start, 0.0)
    w = sched.step(start, 0.0, lr=0.1)
    obs = sched.obs_builder(sched.initial.values, start, start, start, 0.0, 0.1)
    np.testing.assert_allclose(w.values, policy.act(obs).values, atol=1e-9)


def test_committed_reference_is_adopted_and_never_overwritten(v1_env, tmp_path):
    spec, ref = v1_env.spec_, v1_env.reference
    base = v1_env.backend.base_id
    path = commit_reference(ref, spec.env_id, base, tmp_path / "committed")
    assert commit_reference(ref, spec.env_id, base, tmp_path / "committed") == path  # same extremes: a no-op
    # an empty cache adopts the committed copy instead of running the references again
    calls = []
    backend = v1_env.backend
    original = backend.reset
    backend.reset = lambda seed: calls.append(seed) or original(seed)
    try:
        got = get_reference(spec, backend, v1_env.space, root=tmp_path / "empty", committed_dir=tmp_path / "committed")
    finally:
        backend.reset = original
    assert got == ref and not calls
    other = Reference({m: dict(v) for m, v in ref.best.items()}, ref.worst, ref.spec_hash, ref.seeds)
    other.best["bpb"]["source"] -= 0.01
    with pytest.raises(ConfigError, match="already holds other extremes"):
        commit_reference(other, spec.env_id, base, tmp_path / "committed")


def test_online_evaluation_refuses_an_env_scoring_with_other_extremes(v1_run):
    from mixagent.rollout.runner import RunnerSetup

    tset = load_trajectories([v1_run])
    ref = tset.reference.to_json()
    RunnerSetup(tset.env["spec"], 1, reference=ref).make_runner()  # the dataset's own extremes: accepted
    other = json.loads(json.dumps(ref))
    other["worst"]["bpb"]["target"] += 0.5
    with pytest.raises(ConfigError, match="differ from the ones the trajectories were scored with"):
        RunnerSetup(tset.env["spec"], 1, reference=other).make_runner()
