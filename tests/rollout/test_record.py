"""The one episode record: a rollout, a collected trajectory, a cached episode and an audit row are all
``EpisodeRecord``s, and the trajectory store, the episode cache and the audit's results store them through
the same ``get`` / ``put`` / ``records`` API, each in its own versioned format."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mixagent.env.spec import load_spec
from mixagent.paths import ENVS_DIR
from mixagent.policies import ReplayPolicy
from mixagent.rollout.cache import EpisodeCache
from mixagent.rollout.episode import rollout, summarize
from mixagent.rollout.record import EpisodeRecord
from mixagent.rollout.schedules import Schedule
from mixagent.rollout.tree import fork, schedule_tree
from mixagent.study.audit import AuditStore
from mixagent.trajectories.collector import collect
from mixagent.trajectories.store import Run, RunWriter
from tests.trajectories.test_collector import analytic_factory, tiny_config


@pytest.fixture(scope="module")
def env():
    return analytic_factory()()


def test_a_rollout_is_a_record_and_the_cache_stores_it(env, tmp_path):
    r = rollout(env, ReplayPolicy(0.5), seed=3, key="replay:0.5")
    assert isinstance(r, EpisodeRecord) and (r.key, r.seed, r.truncated) == ("replay:0.5", 3, False)
    assert r.weights.shape == (env.horizon, env.space.k) and len(r.evals) == env.horizon
    assert r.ret == pytest.approx(sum(s["reward"] for s in r.steps)) and r.final == r.steps[-1]["eval"]
    spec = env.spec_
    cache = EpisodeCache(tmp_path, (spec.name, spec.version, spec.spec_hash()), space=env.space)
    cache.put(r)
    back = cache.get(r.key, 3)
    assert (back.key, back.seed, back.ret, back.final, back.truncated) == (r.key, 3, r.ret, r.final, False)
    assert [s["eval"] for s in back.steps] == [s["eval"] for s in r.steps]
    np.testing.assert_allclose(back.weights, r.weights, atol=1e-6)  # the cache keeps 6 digits
    assert cache.summary(r.key, 3) == json.loads(json.dumps(back.extra["summary"]))
    assert summarize(back, env.space)["balanced"] == summarize(r, env.space)["balanced"]
    assert [x.key for x in cache.records()] == ["replay_0.5"]  # keyed by the directory name


def test_a_trajectory_is_a_record_and_a_run_stores_it(tmp_path):
    cfg = tiny_config(tmp_path, run="src", trees=1)
    collect(cfg, env_factory=analytic_factory(), progress=False)
    src = Run(cfg.run_dir)
    first = next(src.records())
    traj = next(src.trajectories())
    assert (first.key, first.seed) == (traj.id, traj.header["episode_seed"])
    assert first.weights.tolist() == traj.weights.tolist() and first.ret == traj.end["return"]
    assert src.get(first.key, first.seed) == first and src.get(first.key, first.seed + 1) is None
    writer = RunWriter(tmp_path / "copy", dict(src.meta), resume=False)
    writer.put(first)  # the same crash-safe path as streamed collection
    again = writer.get(first.key, first.seed)
    assert again == first
    assert (tmp_path / "copy" / f"{first.key}.jsonl").read_bytes() == (cfg.run_dir / f"{first.key}.jsonl").read_bytes()


def test_an_audit_row_is_a_record_and_the_audit_store_keeps_it(env, tmp_path):
    space = env.space
    schedules = [Schedule("a", "two_phase", (1.0, 0.5, 0.5)), Schedule("b", "two_phase", (1.0, 0.0, 0.0))]
    rows = list(schedule_tree(env.backend, space, 3, seed=1, schedules=schedules))
    assert [r.key for r in rows] == [s.key for s in schedules] and all(r.start is None for r in rows)
    alone = list(schedule_tree(env.backend, space, 3, seed=1, schedules=schedules[1:]))
    assert alone[0].final == rows[1].final  # forked from the shared prefix = trained alone
    store = AuditStore(tmp_path, load_spec(ENVS_DIR / "tiny.yaml", ["backend=analytic"]))
    for r in rows:
        store.put(r)
    back = AuditStore(tmp_path, load_spec(ENVS_DIR / "tiny.yaml", ["backend=analytic"]))
    got = back.get(rows[0].key, 1)
    assert got.final == rows[0].final and got.extra["trial"] is None and got.steps == ()  # mixtures are in the key
    assert [r.key for r in back.records()] == [r.key for r in rows] and back.get(rows[0].key, 2) is None


def test_fork_saves_once_and_restores_every_later_child():
    calls = []
    out = [(c, r) for c, r in fork(["a", "b", "c"], lambda: calls.append("save") or "S",
                                  lambda s: calls.append(f"load {s}") or f"from {s}")]
    assert out == [("a", None), ("b", "from S"), ("c", "from S")] and calls == ["save", "load S", "load S"]
    calls.clear()
    assert list(fork(["only"], lambda: calls.append("save"), lambda s: s)) == [("only", None)] and calls == []
