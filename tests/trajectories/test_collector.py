"""Trajectory collection: branching trees, the store's format and its failure modes, launchers, CLI.

The reference dataset is the tiny collect config run in-process once (real tiny LM, 4 trees x 4 leaves);
every other way of producing it (worker processes, Ray, interrupted and resumed runs) must match it."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from mixagent.config import load_config
from mixagent.domains import DomainSpace
from mixagent.env.backends import AnalyticBackend
from mixagent.env.environment import MixingEnv
from mixagent.env.spec import load_spec
from mixagent.errors import ConfigError, ResumeMismatchError, SchemaVersionError, StoreWriteError, TrajectoryFormatError
from mixagent.paths import CONFIGS_DIR, ENVS_DIR, REPO_ROOT
from mixagent.policies.behaviour import BehaviourMix
from mixagent.rollout.tree import TreeConfig
from mixagent.trajectories import Run, read_trajectory
from mixagent.trajectories import store as store_mod
from mixagent.trajectories.__main__ import main as cli
from mixagent.trajectories.collector import CollectConfig, collect, plan_workers


def tiny_config(tmp, **kw) -> CollectConfig:
    cfg = load_config(CollectConfig, CONFIGS_DIR / "collect/tiny.yaml", [f"out_dir={tmp}"])
    return dataclasses.replace(cfg, **kw)


def digest(run_dir) -> dict[str, str]:
    """Content of every trajectory without wall-clock timings (the only non-deterministic field)."""
    out = {}
    for traj in Run(run_dir).trajectories():
        recs = [traj.header, *({k: v for k, v in s.items() if k != "wall"} for s in traj.steps), traj.end]
        out[traj.id] = hashlib.sha256(json.dumps(recs, sort_keys=True).encode()).hexdigest()
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The tiny collect config, collected in-process without interruption, with one torch thread as each
    worker of the launchers it is compared with (the thread count may change the last digits)."""
    cfg = tiny_config(tmp_path_factory.mktemp("ref"), run="ref", launcher="inline", threads_per_worker=1)
    summary = collect(cfg, progress=False)
    return cfg.run_dir, digest(cfg.run_dir), summary


def analytic_factory(nan_at_step=None):
    def make():
        spec = load_spec(ENVS_DIR / "tiny.yaml", ["backend=analytic"])
        space = DomainSpace.from_yaml(spec.space_path())
        return MixingEnv(spec, backend=AnalyticBackend(space, spec.segment_tokens, nan_at_step=nan_at_step))
    return make


@pytest.fixture(scope="module")
def analytic_reference(tmp_path_factory):
    """The tiny collect config on the closed-form backend (milliseconds): for the store's failure modes,
    which do not depend on the proxy."""
    cfg = tiny_config(tmp_path_factory.mktemp("aref"), run="aref")
    collect(cfg, env_factory=analytic_factory(), progress=False)
    return cfg.run_dir, digest(cfg.run_dir)


# --- the tree -------------------------------------------------------------------------------------------


def test_tree_shape_counts():
    default = TreeConfig((2, 4, 6, 7), 2)
    assert default.leaves == 16 and default.segments(8) == 38  # 128 logged transitions for 38 segments
    assert TreeConfig().segments(8) == 8 and TreeConfig().leaves == 1
    assert TreeConfig((1, 2), 3).segments(3) == 1 + 3 + 9
    assert TreeConfig((2, 1)).check() and TreeConfig((0,)).check() and TreeConfig((1,), 0).check()
    with pytest.raises(ConfigError, match=r"branch_at \[3\] must be < the env's steps T=3"):
        collect(tiny_config("/tmp/unused", tree=TreeConfig((1, 3))), env_factory=analytic_factory())


def test_reference_run_layout(reference):
    run_dir, dig, summary = reference
    run = Run(run_dir)
    assert run.complete and len(dig) == 16 and summary.new_trajectories == 16
    assert summary.segments == 4 * 7  # 7 segments per tree for 12 logged transitions
    assert run.meta["schema_version"] == 1 and run.meta["env"]["id"] == "mixagent/tiny-v0"
    assert run.meta["domains"]["names"] == ["wiki", "news", "fiction", "math"]
    assert run.meta["proxy"]["base_model"] and len(run.meta["proxy"]["natural"]) == 4
    trajs = {t.id: t for t in run.trajectories()}
    for t in trajs.values():
        assert len(t.steps) == 3 and t.end["steps"] == 3 and not t.truncated
        assert [s["t"] for s in t.steps] == [0, 1, 2]
        assert t.steps[-1]["terminated"] and t.steps[-1]["tokens_seen"] == 3 * 4096
        assert abs(t.rewards.sum() - t.end["return"]) < 1e-12
        if t.header["parent"] is None:
            assert t.id.endswith("_0_0") and t.header["branch_step"] == 0
            continue
        parent = trajs[t.header["parent"]]
        b = t.header["branch_step"]
        assert t.steps[:b] == parent.steps[:b]  # the shared prefix, copied
        assert t.steps[b]["weights"] != parent.steps[b]["weights"]  # then another action
        assert len(t.header["behaviour"]) == len(parent.header["behaviour"]) + 1
        assert t.header["behaviour"][-1]["from_step"] == b
    # every tree's trajectories share the start, each tree has its own data order
    assert len({t.header["episode_seed"] for t in trajs.values()}) == 4


def test_stored_trajectories_replay_exactly_without_forking(reference, tiny_spec_path):
    """A branched trajectory equals an unforked run of the same behaviours: snapshot/restore is exact."""
    tiny_env = MixingEnv(tiny_spec_path, overrides=["optim.threads=1"])  # the reference's thread count
    run = Run(reference[0])
    natural = np.array(run.meta["proxy"]["natural"])
    for tid in ("t00001_0_0", "t00001_1_0", "t00002_1_1"):
        traj = read_trajectory(run.path / f"{tid}.jsonl")
        obs, info = tiny_env.reset(seed=traj.header["episode_seed"])
        assert info["eval"] == traj.header["start"]
        segments = traj.header["behaviour"]
        for t in range(3):
            current = [b for b in segments if b["from_step"] <= t][-1]
            if current["from_step"] == t:
                policy = BehaviourMix.build(current, tiny_env.space, natural, 3)
            weights = policy.act(obs)
            obs, reward, *_, info = tiny_env.step_weights(weights)
            assert weights.values.tolist() == traj.steps[t]["weights"]
            assert info["eval"] == traj.steps[t]["eval"] and reward == traj.steps[t]["reward"]


def test_threads_change_results_only_at_rounding_level(tiny_spec_path):
    """The thread count stays out of the MDP identity (``EnvSpec.mdp_dict``): on some CPUs (an AVX-512 Xeon
    with torch 2.13's CPU build) 1 and 2 threads round float32 sums differently, around the 8th significant
    digit of the bits per byte (the benchmark scores, differences of log-likelihoods, move a few 1e-6), and
    nowhere more than that. Bit-for-bit replay needs the same thread count (the launcher tests below compare
    runs with one thread per process)."""
    results = []
    for threads in (1, 2):
        env = MixingEnv(tiny_spec_path, overrides=[f"optim.threads={threads}"])
        env.reset(seed=7)
        results.append(env.step(np.linspace(-1, 1, env.space.k))[4]["eval"])
    one, two = results
    assert one.keys() == two.keys() and one["bpb"].keys() == two["bpb"].keys()
    for name, value in one["bpb"].items():
        assert value == pytest.approx(two["bpb"][name], rel=1e-6), name
    for group in ("scores", "accuracy"):
        for name, value in one[group].items():
            assert value == pytest.approx(two[group][name], abs=1e-4), (group, name)


def test_plan_workers_never_oversubscribes(tmp_path):
    assert plan_workers(tiny_config(tmp_path), cores=2) == (2, 1)
    assert plan_workers(tiny_config(tmp_path, trees=1), cores=2) == (1, 2)
    assert plan_workers(tiny_config(tmp_path, workers=1), cores=16) == (1, 16)
    with pytest.raises(ConfigError, match="would oversubscribe this machine's 2 cores"):
        plan_workers(tiny_config(tmp_path, workers=2, threads_per_worker=2), cores=2)


# --- launchers ------------------------------------------------------------------------------------------


def test_local_process_pool_matches_reference(reference, tmp_path):
    cfg = tiny_config(tmp_path, run="local", launcher="local", workers=2)
    summary = collect(cfg, progress=False)
    assert (summary.workers, summary.threads) == (2, 1)
    assert digest(cfg.run_dir) == reference[1]


def test_ray_launcher_matches_reference(reference, tmp_path):
    pytest.importorskip("ray", reason="Ray is installed by `make test` (setup.cfg dev extra)")
    cfg = tiny_config(tmp_path, run="ray", launcher="ray", workers=2)
    collect(cfg, progress=False)
    assert digest(cfg.run_dir) == reference[1]


# --- failures -------------------------------------------------------------------------------------------


def test_nonfinite_step_truncates_and_flags(tmp_path):
    cfg = tiny_config(tmp_path, run="nan", trees=2)
    collect(cfg, env_factory=analytic_factory(nan_at_step=1), progress=False)
    run = Run(cfg.run_dir)
    assert run.complete
    trajs = list(run.trajectories())
    # step 0 is fine and forks into 2 children at step 1; both diverge there: 2 flagged trajectories per tree
    assert len(trajs) == 4 and all(t.truncated and t.flagged == "nonfinite" for t in trajs)
    assert all(len(t.steps) == 2 and t.steps[-1]["nonfinite_loss"] and t.steps[-1]["train_loss"] is None
               and t.steps[-1]["eval"] is None for t in trajs)
    assert sum(1 for _ in run.trajectories(include_flagged=False)) == 0
    assert all(e["flagged"] == "nonfinite" for e in run.entries.values())


def test_corrupt_and_foreign_files_raise_typed_errors(reference, tmp_path):
    run_dir = tmp_path / "copy"
    shutil.copytree(reference[0], run_dir)
    path = run_dir / "t00000_0_0.jsonl"
    lines = path.read_bytes().split(b"\n")
    path.write_bytes(b"\n".join([lines[0], lines[1][:40], *lines[2:]]))
    with pytest.raises(TrajectoryFormatError, match=r"t00000_0_0.jsonl:2: corrupt line.*--drop-bad"):
        read_trajectory(path)
    with pytest.raises(TrajectoryFormatError, match="sha256 does not match the manifest"):
        list(Run(run_dir).trajectories())
    path.write_bytes(b"\n".join(lines[:3]))  # cut off mid-file, no newline
    with pytest.raises(TrajectoryFormatError, match="cut off"):
        read_trajectory(path)
    path.write_bytes(b"\n".join(lines[:3]) + b"\n")
    with pytest.raises(TrajectoryFormatError, match="no end record"):
        read_trajectory(path)
    header = json.loads(lines[0])
    path.write_bytes(b"\n".join([json.dumps({**header, "schema_version": 99}).encode(), *lines[1:]]))
    with pytest.raises(SchemaVersionError, match="schema_version 99; this mixagent reads 1"):
        read_trajectory(path)
    meta = json.loads((run_dir / "meta.json").read_text())
    (run_dir / "meta.json").write_text(json.dumps({**meta, "schema_version": 2}))
    with pytest.raises(SchemaVersionError, match="meta.json has schema_version 2"):
        Run(run_dir)


def test_verify_drop_bad_then_resume_recollects(analytic_reference, tmp_path, capsys):
    cfg = tiny_config(tmp_path, run="aref")
    shutil.copytree(analytic_reference[0], cfg.run_dir)
    (cfg.run_dir / "t00003_1_1.jsonl").write_text("garbage\n")
    assert cli(["verify", str(cfg.run_dir)]) == 1
    assert "t00003_1_1" in capsys.readouterr().out
    assert cli(["verify", str(cfg.run_dir), "--drop-bad"]) == 0
    assert "t00003_1_1" not in Run(cfg.run_dir).entries and not Run(cfg.run_dir).complete
    summary = collect(cfg, resume=True, env_factory=analytic_factory(), progress=False)
    assert summary.new_trajectories == 1 and summary.segments == 3  # the prefix again, then the one leaf step
    assert digest(cfg.run_dir) == analytic_reference[1]


def test_resume_refuses_another_config_or_proxy(reference, tmp_path):
    cfg = tiny_config(tmp_path, run="copy", launcher="inline")
    shutil.copytree(reference[0], cfg.run_dir)
    with pytest.raises(ResumeMismatchError, match="already exists; pass --resume"):
        collect(cfg, progress=False)
    with pytest.raises(ResumeMismatchError, match="seed: run has 0, config gives 1"):
        collect(dataclasses.replace(cfg, seed=1), resume=True, progress=False)
    with pytest.raises(ResumeMismatchError, match="env: run has"):
        collect(dataclasses.replace(cfg, env_overrides=("segment_tokens=8192",)), resume=True, progress=False)
    with pytest.raises(ResumeMismatchError, match="tree: run has"):
        collect(dataclasses.replace(cfg, tree=TreeConfig((1,), 3)), resume=True, progress=False)
    meta = json.loads((cfg.run_dir / "meta.json").read_text())
    meta["proxy"]["base_model"] = "someone-else"
    (cfg.run_dir / "meta.json").write_text(json.dumps(meta))
    manifest = json.loads((cfg.run_dir / "manifest.json").read_text())
    manifest["trees_done"] = [0, 1, 2]  # so that resuming has work and starts a worker
    (cfg.run_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ResumeMismatchError, match="base model or the data differ"):
        collect(cfg, resume=True, progress=False)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES])
def test_write_failure_is_loud_and_keeps_finished_trajectories(analytic_reference, tmp_path, monkeypatch, code):
    cfg = tiny_config(tmp_path, run="aref")
    real_fsync, calls = os.fsync, {"n": 0}

    def failing_fsync(fd):
        calls["n"] += 1
        if calls["n"] > 30:  # a few trajectories in: the disk fills up (or permissions change)
            raise OSError(code, os.strerror(code))
        real_fsync(fd)

    monkeypatch.setattr(store_mod.os, "fsync", failing_fsync)
    with pytest.raises(StoreWriteError, match=r"could not write .*(disk is full|permission denied).*--resume"):
        collect(cfg, env_factory=analytic_factory(), progress=False)
    monkeypatch.setattr(store_mod.os, "fsync", real_fsync)
    run = Run(cfg.run_dir)
    assert 0 < len(run.entries) < 16 and run.problems() == {}
    assert not list(cfg.run_dir.glob("*.partial")) and not list(cfg.run_dir.glob("*.tmp"))
    collect(cfg, resume=True, env_factory=analytic_factory(), progress=False)
    assert digest(cfg.run_dir) == analytic_reference[1]


def _kill_at_random_moment(cmd, run_dir, rng) -> bool:
    """Start the collector; once it has made progress (its meta.json exists, or one more trajectory file
    has appeared since the start), wait a random 0-1 s and SIGKILL its process group. Progress-triggered
    kills are independent of the machine's speed (a fixed timeout let a fast CI machine finish first).
    Returns whether it was killed (False: the collector finished on its own)."""
    files_at_start = len(list(run_dir.glob("*.jsonl"))) if run_dir.exists() else 0
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300.0  # a hung collector is killed too
    while proc.poll() is None and time.monotonic() < deadline:
        meta = (run_dir / "meta.json").exists()
        files = len(list(run_dir.glob("*.jsonl"))) if meta else 0
        if (files_at_start == 0 and meta) or files > files_at_start:
            break
        time.sleep(0.05)
    try:
        proc.wait(timeout=float(rng.uniform(0.0, 1.0)))
        return False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return True


def test_sigkill_at_random_moments_then_resume_loses_nothing(reference, tmp_path):
    """Kill the collector (driver and workers) with SIGKILL again and again; resume; compare."""
    cmd = [sys.executable, "-m", "mixagent.trajectories", "collect", "--config",
           str(CONFIGS_DIR / "collect/tiny.yaml"), "--resume", f"out_dir={tmp_path}", "run=killed", "workers=2"]
    run_dir = tmp_path / "killed"
    rng = np.random.default_rng(0)
    finished_before: set[str] = set()
    kills = 0
    for _ in range(4):
        kills += _kill_at_random_moment(cmd, run_dir, rng)
        if not (run_dir / "meta.json").exists():
            continue
        run = Run(run_dir)
        assert run.problems() == {}  # 0 corrupt records among the listed trajectories
        finished = set(run.entries) | {p.stem for p in run_dir.glob("*.jsonl")}  # incl. renamed, not yet listed
        for p in run_dir.glob("*.jsonl"):
            read_trajectory(p)  # every finished file is whole
        assert finished_before <= finished  # 0 lost finished trajectories
        finished_before = finished
    assert kills >= 2, "the collector finished before it could be killed; the test would prove nothing"
    final = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stderr[-2000:]
    run = Run(run_dir)
    assert run.complete and len(run.entries) == 16  # 0 duplicates: one entry and one file per trajectory
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(["meta.json", "manifest.json",
                                                                *(e["file"] for e in run.entries.values())])
    assert digest(run_dir) == reference[1]  # equal to the uninterrupted run


# --- CLI ------------------------------------------------------------------------------------------------


def test_cli_ls_and_stats(reference, capsys):
    root = reference[0].parent
    assert cli(["ls", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "| ref | mixagent/tiny-v0 | 4/4 | 16 | 48 | 0 |" in out and "complete" in out
    assert cli(["stats", "ref", "--root", str(root), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["trajectories"] == 16 and stats["transitions"] == 48 and stats["unique_transitions"] == 28
    assert sum(r["trajectories"] for r in stats["by_behaviour"].values()) == 16
    returns = [e["return"] for e in Run(reference[0]).entries.values()]
    assert min(r["return_min"] for r in stats["by_behaviour"].values()) == min(returns)
    assert all(0 < r["final_target"] < 1 for r in stats["by_behaviour"].values())
    assert cli(["stats", "nope", "--root", str(root)]) == 2


# --- values are validated when read back -------------------------------------------------------------
@pytest.mark.parametrize("field, value, shown", [
    ("weights", [-0.5, 1.5, 0.0, 0.0], "step 1 weights: expected 4 finite weights >= 0"),
    ("weights", [0.5, 0.6, 0.0, 0.0], "step 1 weights: weights sum to"),
    ("action", [0.1, None, 0.0, 0.0], "step 1 action: expected 4 finite numbers"),
    ("eval", {"bpb": {"wiki": None}, "scores": {"source": 0.3}}, "step 1 eval: bpb must map names to finite"),
    ("eval", {"bpb": {"wiki": 1.0}, "scores": {"source": 0.3, "target": 0.2}, "accuracy": {}},
     "step 1 eval: bpb has domains ['wiki'], the run's start has"),
    ("eval", {"bpb": {"wiki": 1.0}, "scores": {"source": 0.3}, "extra": 1}, "step 1 eval: unknown keys ['extra']"),
    ("truncated", "no", "step 1 truncated: expected true or false"),
    ("nonfinite_loss+eval", None, "step 1 eval: only the last (diverged) step may lack its evaluation"),
])
def test_a_trajectory_with_invalid_values_is_refused_when_read(analytic_reference, tmp_path, field, value, shown):
    run_dir, _ = analytic_reference
    src = next(iter(sorted(run_dir.glob("*.jsonl"))))
    lines = src.read_text().splitlines()
    rec = json.loads(lines[2])  # the step with t = 1
    assert rec["t"] == 1 and len(rec["weights"]) == 4
    if field == "nonfinite_loss+eval":  # a null evaluation in the middle of a trajectory
        rec.update(nonfinite_loss=True, eval=None)
    else:
        rec[field] = value
    lines[2] = json.dumps(rec)
    bad = tmp_path / src.name
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(TrajectoryFormatError, match=re.escape(shown)):
        read_trajectory(bad)
    assert read_trajectory(src).steps[1]["weights"]  # the original reads fine


def test_packed_run_reads_like_the_run_and_refuses_a_changed_archive(reference, tmp_path, capsys):
    from mixagent.agent.dataset import load_trajectories
    from mixagent.trajectories.store import PACK_ARCHIVE, pack_run

    run_dir, want, _ = reference
    out = pack_run(run_dir, tmp_path / "reference" / "tiny-v0", extra={"note": "test"})
    assert sorted(p.name for p in out.iterdir()) == sorted([PACK_ARCHIVE, "manifest.json", "meta.json"])
    packed = Run(out)
    assert packed.packed and packed.meta["packed"]["note"] == "test" and digest(out) == want
    assert packed.meta["packed"]["bytes"] < packed.meta["packed"]["raw_bytes"] / 3  # compact
    tset = load_trajectories([out])
    assert len(tset.trajectories) == len(want) and tset.env["spec_hash"] == Run(run_dir).meta["env"]["spec_hash"]
    from mixagent.rollout.seeds import collection_seeds

    seeds = {int(t.header["episode_seed"]) for t in Run(run_dir).trajectories()}
    assert collection_seeds(Run(run_dir).meta["env"]["spec_hash"], tmp_path / "reference") == seeds
    again = pack_run(run_dir, tmp_path / "again")
    assert (again / PACK_ARCHIVE).read_bytes() == (out / PACK_ARCHIVE).read_bytes()  # deterministic
    with pytest.raises(ResumeMismatchError, match="exists"):
        pack_run(run_dir, out)
    unfinished = tmp_path / "unfinished"
    shutil.copytree(run_dir, unfinished)
    manifest = json.loads((unfinished / "manifest.json").read_text())
    manifest["trees_done"] = manifest["trees_done"][:-1]
    (unfinished / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(TrajectoryFormatError, match="is not finished"):
        pack_run(unfinished, tmp_path / "never")
    assert not (tmp_path / "never").exists()
    data = bytearray((out / PACK_ARCHIVE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (out / PACK_ARCHIVE).write_bytes(bytes(data))
    with pytest.raises(TrajectoryFormatError, match=f"{PACK_ARCHIVE}: sha256 does not match"):
        list(Run(out).trajectories())
    assert cli(["verify", str(out), "--drop-bad"]) == 1
    assert "packed (read-only)" in capsys.readouterr().out
    with pytest.raises(ResumeMismatchError, match="packed"):
        store_mod.RunWriter(again, Run(again).meta, resume=True)
