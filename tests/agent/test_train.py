"""The agent: trajectories -> d3rlpy dataset, SFT + RL training with real d3rlpy, the policy artifact and
its d3rlpy-free loader, offline/online evaluation, resume, CLI and bad input.

The dataset is a tiny real collection (tiny LM, 2 trees x 2 leaves x 3 steps); training runs a few dozen
gradient steps; online evaluation rolls out in the real tiny env on one held-out seed."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from mixagent.agent.algos import actor_tensors, import_d3rlpy, make_rl, make_sft
from mixagent.agent.config import AgentConfig, RLConfig, SFTConfig
from mixagent.agent.dataset import (
    TrajectorySet,
    build_transitions,
    load_trajectories,
    space_from_meta,
    to_d3rlpy,
    top_trajectories,
)
from mixagent.agent.train import train_agent
from mixagent.config import load_config
from mixagent.domains import Domain, DomainSpace, DomainWeights
from mixagent.env.observation import observation_names
from mixagent.env.rewards import step_reward
from mixagent.errors import AgentDataError, ConfigError, CorruptArtifactError, ResumeMismatchError, SchemaVersionError
from mixagent.paths import CONFIGS_DIR, REPO_ROOT
from mixagent.policies.artifact import ArtifactMismatchError, load_policy, write_artifact
from mixagent.rollout.tree import TreeConfig
from mixagent.trajectories import Run
from mixagent.trajectories.collector import CollectConfig, collect
from tests.trajectories.test_collector import analytic_factory, tiny_config

TRAIN = ["sft.steps=30", "rl.steps=30", "fqe.steps=20", "sft.top_fraction=0.5", "log_every=10",
         "checkpoint_every=10", "eval.seeds=[1000]", "eval.baselines=[uniform]", "eval.launcher=inline",
         "eval.cache=", "sft.batch_size=16", "rl.batch_size=16", "fqe.batch_size=16"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A real tiny collection: 2 trees, branching once at step 1 (4 trajectories, 10 segments)."""
    cfg = dataclasses.replace(load_config(CollectConfig, CONFIGS_DIR / "collect/tiny.yaml",
                                          [f"out_dir={tmp_path_factory.mktemp('traj')}"]),
                              run="agent_tiny", trees=2, tree=TreeConfig((1,), 2), launcher="inline")
    collect(cfg, progress=False)
    return cfg.run_dir


def agent_config(tmp, runs, *extra: str, name: str = "a") -> AgentConfig:
    return load_config(AgentConfig, CONFIGS_DIR / "agent/default.yaml",
                       [f"name={name}", f"out_dir={tmp}", f"runs=[{runs}]", *TRAIN, *extra])


@pytest.fixture(scope="module")
def trained(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("agent")
    cfg = agent_config(out, tiny_run)
    return cfg, train_agent(cfg, progress=False)


# --- the dataset ----------------------------------------------------------------------------------------


def test_dataset_rebuilds_env_observations_and_recomputes_rewards(tmp_path):
    cfg = tiny_config(tmp_path, run="an", trees=1)
    collect(cfg, env_factory=analytic_factory(), progress=False)
    tset = load_trajectories([cfg.run_dir])
    tr = build_transitions(tset, "balanced", 0.5, dedupe=False)
    env = analytic_factory()()
    row = 0
    for _, traj in sorted(tset.trajectories, key=lambda rt: rt[1].id):
        obs, _ = env.reset(seed=traj.header["episode_seed"])  # the env's own observations, replayed
        for step in traj.steps:
            np.testing.assert_allclose(tr.observations[row], obs, atol=1e-6)
            assert tr.rewards[row] == pytest.approx(step["reward"], abs=1e-6)
            obs, *_ = env.step_weights(DomainWeights(env.space, step["weights"]))
            row += 1
    assert row == len(tr) and tr.terminals.sum() == len(tset.trajectories) and tr.timeouts.sum() == 0
    # another reward needs no new collection: recomputed from the raw evaluations
    other = build_transitions(tset, "balanced_bpb", 0.25, dedupe=False)
    traj = sorted(tset.trajectories, key=lambda rt: rt[1].id)[0][1]
    evals = [traj.start, *traj.evals]
    expected = step_reward("balanced_bpb", 0.25, traj.start, evals[1], evals[2], tset.space)
    assert other.rewards[1] == pytest.approx(expected, abs=1e-6) and not np.allclose(other.rewards, tr.rewards)


def test_dataset_dedupes_branched_prefixes_and_forces_continuous_actions(tiny_run):
    tset = load_trajectories([tiny_run])
    full, dedup = (build_transitions(tset, "balanced", 0.5, dedupe=d) for d in (False, True))
    assert len(full) == 4 * 3  # 4 leaves x 3 steps, prefixes copied
    assert len(dedup) == 2 * (1 + 2 * 2)  # per tree: the shared step 0 once, then 2 children x 2 steps
    ds = to_d3rlpy(dataclasses.replace(dedup, actions=np.sign(dedup.actions)), tset.space.k)  # integral actions
    from d3rlpy.constants import ActionSpace

    assert ds.dataset_info.action_space == ActionSpace.CONTINUOUS and ds.dataset_info.action_size == tset.space.k
    assert ds.transition_count == len(dedup)


def test_flagged_trajectories_are_excluded_and_truncated_ones_are_timeouts(tmp_path):
    cfg = tiny_config(tmp_path, run="nan", trees=1)
    collect(cfg, env_factory=analytic_factory(nan_at_step=1), progress=False)
    with pytest.raises(AgentDataError, match="no usable trajectories.*2 flagged"):
        load_trajectories([cfg.run_dir])
    run = Run(cfg.run_dir)
    flagged = [("nan", t) for t in run.trajectories()]  # selected by hand: the loader would exclude them
    ts = TrajectorySet([cfg.run_dir], space_from_meta(run.meta["domains"]), run.meta["env"], flagged, 0,
                       {"nan": {t.id: t.header for _, t in flagged}})
    tr = build_transitions(ts, "balanced", 0.5)
    # the one completed step is a transition; its next observation is the final-observation row
    assert tr.transition_count == 1 and tr.timeouts.tolist() == [0.0, 1.0] and tr.terminals.tolist() == [0.0, 0.0]
    assert tr.final_obs.tolist() == [False, True] and to_d3rlpy(tr, ts.space.k).transition_count == 1


def test_trajectories_cut_short_keep_every_completed_step(tmp_path):
    """Complete trajectories plus two cut short by a diverged segment after 1 and 2 completed steps (the
    tiny env has 3 steps): every completed step is a transition, 4 x 3 + 1 + 2 = 15."""
    cfg = tiny_config(tmp_path, run="full", trees=1)
    collect(cfg, env_factory=analytic_factory(), progress=False)
    full = Run(cfg.run_dir)
    complete = [("full", t) for t in full.trajectories()]
    cut = []
    for at in (1, 2):
        c = tiny_config(tmp_path, run=f"cut{at}", trees=1)
        collect(c, env_factory=analytic_factory(nan_at_step=at), progress=False)
        cut.append((f"cut{at}", next(iter(Run(c.run_dir).trajectories()))))
    assert [len(t.evals) for _, t in cut] == [1, 2] and all(t.truncated for _, t in cut)
    picked = complete + cut
    headers = {r: {t.id: t.header for rr, t in picked if rr == r} for r in {r for r, _ in picked}}
    ts = TrajectorySet([cfg.run_dir], space_from_meta(full.meta["domains"]), full.meta["env"], picked, 0, headers)
    tr = build_transitions(ts, "balanced", 0.5, dedupe=False)
    horizon = ts.horizon
    assert sum(len(t.evals) for _, t in complete) == len(complete) * horizon
    want = len(complete) * horizon + 1 + 2
    assert tr.transition_count == want and to_d3rlpy(tr, ts.space.k).transition_count == want == 15
    # the final observation after the 2nd step is what the env showed the policy then (progress 2/T)
    last = next(e for e in tr.episodes if e["run"] == "cut2")
    assert tr.final_obs[last["row"] + 2] and tr.observations[last["row"] + 2][-1] == pytest.approx(2 / horizon)


def test_bad_trajectory_sets_raise_typed_errors(tiny_run, tmp_path):
    with pytest.raises(AgentDataError, match="no trajectory runs"):
        load_trajectories([])
    with pytest.raises(AgentDataError, match="not a trajectory run"):
        load_trajectories([tmp_path])
    tset = load_trajectories([tiny_run])
    with pytest.raises(AgentDataError, match="top_fraction=0.1 of 4 complete trajectories selects none; collect at "
                                             "least 10"):
        top_trajectories(tset, 0.1, "balanced", 0.5)
    other = tmp_path / "other"
    shutil.copytree(tiny_run, other)
    meta = json.loads((other / "meta.json").read_text())
    meta["run"], meta["domains"]["names"][0] = "other", "encyclopedia"
    (other / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(AgentDataError, match=r"different domain spaces \(only in .*\['wiki'\].*\['encyclopedia'\]"):
        load_trajectories([tiny_run, other])
    meta["domains"]["names"][0] = "wiki"
    meta["env"]["spec_hash"], meta["env"]["spec"]["segment_tokens"] = "0" * 16, 1
    (other / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(AgentDataError, match="different env specs.*differing: segment_tokens"):
        load_trajectories([tiny_run, other])


# --- training, artifacts, evaluation ------------------------------------------------------------------


def test_train_agent_end_to_end(trained, tmp_path, monkeypatch):
    cfg, result = trained
    run_dir = result.run_dir
    for stage in ("sft", "rl"):
        meta = json.loads((run_dir / stage / "meta.json").read_text())
        assert meta["algo"] == {"sft": "bc", "rl": "cql"}[stage] and meta["domains"]["names"][0] == "wiki"
        assert meta["versions"]["d3rlpy"] == import_d3rlpy().__version__
        ranges = meta["training"]["feature_ranges"]  # every observation entry's training range, in layout order
        assert list(ranges["observation"]) == observation_names(meta["domains"]["names"])
        assert ranges["rows"] > 0 and all(lo <= hi for lo, hi in ranges["observation"].values())
        assert ranges["observation"]["progress"][0] == 0.0 and load_policy(run_dir / stage).feature_ranges == ranges
    lines = [json.loads(x) for x in (run_dir / "log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if x["stage"] == "sft" and "loss" in x] == [10, 20, 30]
    assert {"critic_loss", "actor_loss", "conservative_loss"} <= set(next(x for x in lines if x["stage"] == "rl"))
    for stage in ("sft", "rl"):
        off = result.offline[stage]
        assert np.isfinite(off["fqe_initial_value"]) and off["action_diff"] >= 0
    assert "td_error" in result.offline["rl"] and "td_error" not in result.offline["sft"]
    assert [r["policy"] for r in result.rows] == ["agent SFT (bc)", "agent RL (cql)", "uniform"]
    assert all(r["seeds"] == [1000] and np.isfinite(r["balanced"]) for r in result.rows)
    assert "| agent RL (cql) |" in (run_dir / "table.md").read_text()
    report = json.loads((run_dir / "report/table.json").read_text())  # the comparison's report of the episodes
    assert {r["policy"]: r["kind"] for r in report["rows"]} == {"agent SFT (bc)": "agent", "agent RL (cql)": "agent",
                                                                "uniform": "baseline"}
    by = {r["policy"]: r for r in report["rows"]}
    assert by["uniform"]["scores"] == [next(r for r in result.rows if r["policy"] == "uniform")["balanced"]]
    written = {p.name for p in (run_dir / "report").iterdir()}
    assert {"mixtures.png", "dynamics.png", "front.png", "report.md"} <= written
    assert not (REPO_ROOT / "d3rlpy_logs").exists() and not (run_dir / "d3rlpy_logs").exists()


def test_interrupted_training_resumes_to_the_same_policy(trained, tiny_run, tmp_path):
    cfg = agent_config(tmp_path, tiny_run)

    def interrupt(stage, step):
        if stage == "rl" and step == 25:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_agent(cfg, progress=False, on_step=interrupt)
    assert not (cfg.run_dir / "rl").exists() and (cfg.run_dir / "checkpoints/rl.json").is_file()
    with pytest.raises(ResumeMismatchError, match="--resume"):
        train_agent(cfg, progress=False)
    changed = agent_config(tmp_path, tiny_run, "sft.steps=31")
    with pytest.raises(ResumeMismatchError, match="sft differ"):
        train_agent(changed, resume=True, progress=False)
    resumed = train_agent(cfg, resume=True, progress=False)
    for stage in ("sft", "rl"):  # resumed from step 20 of rl: bit-identical to the uninterrupted run
        assert (resumed.artifacts[stage] / "policy.safetensors").read_bytes() == \
            (trained[1].artifacts[stage] / "policy.safetensors").read_bytes()
    assert resumed.rows == trained[1].rows


@pytest.mark.parametrize("algo", ["cql", "iql", "td3_plus_bc"])
def test_artifact_acts_like_the_d3rlpy_policy(tiny_run, tmp_path, algo):
    tset = load_trajectories([tiny_run])
    tr = build_transitions(tset, "balanced", 0.5)
    ds = to_d3rlpy(tr, tset.space.k)
    mean, std = tr.observations.mean(0), tr.observations.std(0)
    for stage, make in (("sft", lambda: make_sft(SFTConfig(steps=5, batch_size=8, hidden=[16, 8]), mean, std, "cpu")),
                        ("rl", lambda: make_rl(RLConfig(algo=algo, batch_size=8, hidden=[16, 8]), mean, std, "cpu"))):
        a = make()
        a.create_impl((tr.observations.shape[1],), tset.space.k)
        for _ in range(5):
            a.update(ds.sample_transition_batch(8))
        meta = {"algo": algo, "domains": {"names": list(tset.space.names), "fields": list(tset.space.fields)},
                "observation": {"version": 1, "dim": tr.observations.shape[1]},
                "action": {"temperature": 0.25, "floor": 0.0}, "network": {"hidden": [16, 8]}}
        policy = load_policy(write_artifact(tmp_path / stage, actor_tensors(a), meta))
        np.testing.assert_allclose(np.stack([policy.action(o) for o in tr.observations]), a.predict(tr.observations),
                                   atol=1e-5)


def test_loader_needs_no_d3rlpy_and_returns_valid_weights(trained, tiny_run):
    path = trained[1].artifacts["rl"]
    code = (f"import sys, numpy as np; from mixagent.policies.artifact import load_policy; "
            f"from mixagent.domains import DomainSpace; from mixagent.paths import REPO_ROOT; "
            f"p = load_policy({str(path)!r}); p.reset(DomainSpace.from_yaml(REPO_ROOT / 'configs/spaces/tiny.yaml')); "
            f"w = p.act(np.zeros(p.obs_dim, np.float32)); "
            f"print(sorted(m for m in sys.modules if m.startswith('d3rlpy')), round(float(w.values.sum()), 6))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")[0]
    assert out == "[] 1.0"
    policy = load_policy(path)
    policy.reset(DomainSpace.from_yaml(REPO_ROOT / "configs/spaces/tiny.yaml"))
    for obs in (np.full(policy.obs_dim, np.nan), np.full(policy.obs_dim, 1e30), np.zeros(policy.obs_dim)):
        w = policy.act(obs.astype(np.float32))
        assert isinstance(w, DomainWeights) and abs(w.values.sum() - 1) < 1e-9 and np.all(w.values >= 0)


def test_artifact_refuses_another_space_and_corruption(trained, tmp_path):
    src = trained[1].artifacts["sft"]
    policy = load_policy(src)
    other = DomainSpace("other", [Domain("wiki", "source", []), Domain("news", "source", []),
                                  Domain("fiction", "source", []), Domain("algebra", "target", [])])
    mismatch = r"missing from the space: \['math'\].*does not know: \['algebra'\]"
    with pytest.raises(ArtifactMismatchError, match=mismatch):
        policy.reset(other)
    bad = tmp_path / "bad"
    shutil.copytree(src, bad)
    raw = bytearray((bad / "policy.safetensors").read_bytes())
    raw[-3] ^= 0xFF
    (bad / "policy.safetensors").write_bytes(bytes(raw))
    with pytest.raises(CorruptArtifactError, match="does not match the sha256"):
        load_policy(bad)
    (bad / "policy.safetensors").write_bytes(b"")
    with pytest.raises(CorruptArtifactError):
        load_policy(bad)
    shutil.copy(src / "policy.safetensors", bad / "policy.safetensors")
    meta = json.loads((src / "meta.json").read_text())
    (bad / "meta.json").write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(SchemaVersionError, match="format_version 99"):
        load_policy(bad)
    (bad / "meta.json").write_text(json.dumps({**meta, "network": {"hidden": [32]}}))
    with pytest.raises(CorruptArtifactError, match="do not fit"):
        load_policy(bad)
    (bad / "meta.json").write_text("{not json")
    with pytest.raises(CorruptArtifactError, match="not valid JSON"):
        load_policy(bad)


def test_nan_network_is_refused_when_written_and_when_read(trained, tmp_path):
    import hashlib

    from safetensors.torch import load_file, save_file

    src = trained[1].artifacts["sft"]
    tensors = load_file(str(src / "policy.safetensors"))
    tensors["head.bias"] = torch.full_like(tensors["head.bias"], float("nan"))
    meta = {k: v for k, v in json.loads((src / "meta.json").read_text()).items()
            if k not in ("kind", "format_version", "weights_sha256")}
    with pytest.raises(CorruptArtifactError, match=r"non-finite tensors \['head.bias'\]"):
        write_artifact(tmp_path / "nan", tensors, meta)
    assert not (tmp_path / "nan").exists()
    # a NaN written into an artifact on disk (its checksum updated too) is refused at load, not at act()
    art = shutil.copytree(src, tmp_path / "edited")
    save_file(tensors, str(art / "policy.safetensors"))
    edited = json.loads((art / "meta.json").read_text())
    edited["weights_sha256"] = hashlib.sha256((art / "policy.safetensors").read_bytes()).hexdigest()
    (art / "meta.json").write_text(json.dumps(edited))
    with pytest.raises(CorruptArtifactError, match=r"non-finite tensors \['head.bias'\]"):
        load_policy(art)


def test_wandb_offline_writes_under_the_run_directory(tmp_path, monkeypatch):
    from mixagent.agent.train import WandbSink

    monkeypatch.chdir(tmp_path)
    cfg = load_config(AgentConfig, None, ["name=wb", "wandb.mode=offline"])
    sink = WandbSink(cfg, tmp_path / "run")
    sink.write({"stage": "online", "policy": "uniform", "balanced": 0.1})
    sink.close()
    assert list((tmp_path / "run/wandb").glob("offline-run-*"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # nothing beside the run directory


def test_online_evaluation_can_score_held_out_benchmark_items(tiny_run):
    from mixagent.agent.train import _eval_spec

    tset = load_trajectories([tiny_run])
    assert _eval_spec(tset, []) == (tset.env["spec"], tset.env["spec_hash"])
    spec, spec_hash = _eval_spec(tset, ["eval.source.split=test", "eval.target.split=test"])
    assert spec["eval"]["source"]["split"] == spec["eval"]["target"]["split"] == "test"
    assert spec_hash != tset.env["spec_hash"]  # its own baseline cache, never mixed with the val items'


# --- bad input ------------------------------------------------------------------------------------------


def test_unknown_d3rlpy_key_and_seen_seeds_are_refused_before_writing(tiny_run, tmp_path):
    cfg = agent_config(tmp_path, tiny_run, "rl.params={conservative_wieght: 1.0}")
    with pytest.raises(ConfigError, match="conservative_wieght.*did you mean 'conservative_weight'"):
        train_agent(cfg, progress=False)
    assert not cfg.run_dir.exists()
    seed = json.loads(next(tiny_run.glob("t*.jsonl")).read_text().splitlines()[0])["episode_seed"]
    cfg = agent_config(tmp_path, tiny_run, f"eval.seeds=[{seed}]")
    with pytest.raises(ConfigError, match=f"seeds \\[{seed}\\] were used as episode seeds in collection"):
        train_agent(cfg, progress=False)
    assert not cfg.run_dir.exists()


def test_eval_baselines_take_methods_that_need_no_preparation(tiny_run, tmp_path):
    cfg = agent_config(tmp_path, tiny_run, "eval.baselines=[uniform, odm, decay_switch]")
    assert list(cfg.eval.baselines) == ["uniform", "odm", "decay_switch"]
    with pytest.raises(ConfigError, match="'doremi' needs preparation runs.*mixagent compare"):
        agent_config(tmp_path, tiny_run, "eval.baselines=[uniform, doremi]")
    with pytest.raises(ConfigError, match="did you mean 'odm'"):
        agent_config(tmp_path, tiny_run, "eval.baselines=[odn]")


def test_cli_reports_config_errors(capsys):
    from mixagent.train_agent import main

    assert main(["rl.algo=cqll", "sft.top_fraction=2"]) == 2
    err = capsys.readouterr().err
    assert "rl.algo 'cqll' unknown (did you mean 'cql'?)" in err and "sft.top_fraction must be in (0, 1]" in err


def test_agent_cli_names_its_job_and_the_mission_alias_runs_it(capsys):
    from mixagent.agent.__main__ import cli

    assert cli(["frobnicate"]) == 2 and "python -m mixagent.agent train" in capsys.readouterr().err
    with pytest.raises(SystemExit) as done:
        cli(["train", "--help"])
    assert done.value.code == 0 and "python -m mixagent.agent train" in capsys.readouterr().out
    from mixagent.train_agent import main

    with pytest.raises(SystemExit):
        main(["--help"])
    assert "python -m mixagent.train_agent" in capsys.readouterr().out


@pytest.mark.parametrize("edit", [lambda e: e.update(balanced=None), lambda e: e.pop("start"),
                                  lambda e: e.pop("truncated"), lambda e: e["start"]["bpb"].update(wiki=float("nan")),
                                  lambda e: e.update(weights=[[1.0]])])
def test_a_stored_episode_with_invalid_values_is_run_again(tmp_path, edit):
    from mixagent.agent.evaluate import evaluate_online
    from mixagent.rollout.tree import spec_identity

    make = analytic_factory()
    env = make()
    ident = spec_identity(env.spec_)
    args = dict(spec=ident["spec"], spec_hash=ident["spec_hash"], policies={"uniform": "uniform"}, seeds=[1000],
                cache=tmp_path / "cache", launcher="inline", env_factory=make, progress=False)
    first = evaluate_online(**args)["uniform"][0]
    stored = next((tmp_path / "cache").rglob("1000.json"))
    edited = json.loads(json.dumps(first))
    edit(edited)
    stored.write_text(json.dumps(edited))  # a torn or edited cache entry
    again = evaluate_online(**args)["uniform"][0]
    assert again == first and json.loads(stored.read_text()) == first
