"""The planner's real-env episodes are cached by everything an episode depends on: the world model's
content, the search (trials, penalty), the env spec and the planner's rule version; a changed input reruns,
an unchanged one (or a re-measured model) reads the stored episode."""

from __future__ import annotations

import json
import shutil

import pytest

from mixagent.model_based import planning
from mixagent.paths import REPO_ROOT

WM = REPO_ROOT / "checkpoints/world_models/math-cpt-v1"


class FakeEnv:
    """The real env, without its base model and data (the planner's episodes are mocked)."""

    start = {"bpb": {"wiki": 2.0, "math": 1.9}}  # the base model's evaluation at reset

    def __init__(self, spec) -> None:
        self.spec_, self.horizon, self.space = spec, spec.steps, None


class FakePlanner:
    def __init__(self, model, trials: int, penalty: float, seed: int) -> None:
        self.plans = [[0.5] * model.meta["horizon"]]


@pytest.fixture()
def episodes(monkeypatch):
    """The seeds the planner actually rolled out, in order."""
    ran: list[int] = []
    monkeypatch.setattr(planning, "WorldModelPlanner", FakePlanner)
    monkeypatch.setattr("mixagent.env.environment.MixingEnv", FakeEnv)
    monkeypatch.setattr("mixagent.rollout.episode.rollout", lambda env, policy, seed, progress=None: ran.append(seed))
    monkeypatch.setattr("mixagent.rollout.episode.summarize",
                        lambda r, space, seed: {"seed": seed, "balanced": 1.0 + len(ran), "start": FakeEnv.start})
    monkeypatch.setattr("mixagent.rollout.cache.start_eval", lambda env: env.start)
    monkeypatch.setattr(FakeEnv, "start", FakeEnv.start)  # restored after the test
    return ran


def _refit(path) -> None:
    """Another fit of the world model at the same path: other weights, their checksum in meta.json."""
    import hashlib

    from safetensors.torch import load_file, save_file

    tensors = load_file(str(path / "model.safetensors"))
    tensors["w0"] = tensors["w0"] * 1.01
    save_file(tensors, str(path / "model.safetensors"))
    meta = json.loads((path / "meta.json").read_text())
    meta["sha256"] = hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()
    (path / "meta.json").write_text(json.dumps(meta))


def test_planner_episodes_are_keyed_by_everything_they_depend_on(tmp_path, episodes):
    wm = tmp_path / "wm"
    shutil.copytree(WM, wm)
    out = str(tmp_path / "mpc")

    def run(seeds=(0, 1), trials=4, penalty=0.05):
        return planning.evaluate_planner(str(wm), list(seeds), out, trials, penalty, progress=False)

    first = run()
    assert episodes == [0, 1] and [e["seed"] for e in first] == [0, 1]
    assert run() == first and episodes == [0, 1]  # the same inputs: read back, nothing reruns
    run(penalty=0.1)
    assert episodes == [0, 1, 0, 1]  # another penalty
    run(trials=8)
    assert episodes == [0, 1, 0, 1, 0, 1]  # another search budget
    assert run() == first and len(episodes) == 6  # the first inputs' episodes are still there
    meta = json.loads((wm / "meta.json").read_text())
    meta["metrics"] = {"spearman": 0.0}  # re-measured, not refitted: the same model
    (wm / "meta.json").write_text(json.dumps(meta))
    assert run() == first and len(episodes) == 6
    _refit(wm)
    run()
    assert episodes[6:] == [0, 1]  # a refitted world model at the same path
    key = planning.planner_key(str(wm), 4, 0.05)
    stored = json.loads((tmp_path / "mpc" / key["digest"] / "0.json").read_text())
    assert stored["key"] == key and key["planner_version"] == planning.PLANNER_VERSION
    assert key["world_model_digest"] != planning.planner_key(str(WM), 4, 0.05)["world_model_digest"]
    assert key["spec_hash"] == meta["spec_hash"]


def test_an_episode_from_another_base_model_is_run_again(tmp_path, episodes):
    """The key names the spec, and the spec's base checkpoint is not bit-reproducible across machines: an
    episode whose start evaluation differs from this env's (another base model) is not served."""
    out = str(tmp_path / "mpc")
    first = planning.evaluate_planner(str(WM), [0], out, 4, 0.05, progress=False)
    assert planning.evaluate_planner(str(WM), [0], out, 4, 0.05, progress=False) == first and episodes == [0]
    FakeEnv.start = {"bpb": {"wiki": 2.0, "math": 1.9 * (1 + 1e-5)}}  # a base model pre-trained elsewhere
    planning.evaluate_planner(str(WM), [0], out, 4, 0.05, progress=False)
    assert episodes == [0, 0]
    planning.evaluate_planner(str(WM), [0], out, 4, 0.05, progress=False)
    assert episodes == [0, 0]  # the rerun is stored under this base's start: read back


def test_planner_version_is_part_of_the_key(tmp_path, episodes, monkeypatch):
    out = str(tmp_path / "mpc")
    planning.evaluate_planner(str(WM), [0], out, 4, 0.05, progress=False)
    monkeypatch.setattr(planning, "PLANNER_VERSION", planning.PLANNER_VERSION + 1)  # the planner's rule changed
    planning.evaluate_planner(str(WM), [0], out, 4, 0.05, progress=False)
    assert episodes == [0, 0]


def test_episodes_stored_by_seed_only_are_not_reused(tmp_path, episodes):
    """The layout before the key (``<out>/<seed>.json``, the committed ``audits/agent-v1/mpc``) records neither
    the world model's content nor the planner's rule version: such an episode is run again, and left in place."""
    (tmp_path / "mpc").mkdir()
    legacy = json.loads((REPO_ROOT / "audits/agent-v1/mpc/0.json").read_text())
    (tmp_path / "mpc/0.json").write_text(json.dumps(legacy))
    (got,) = planning.evaluate_planner(str(WM), [0], str(tmp_path / "mpc"), 64, 0.05, progress=False)
    assert episodes == [0] and got["balanced"] != legacy["balanced"]
    assert json.loads((tmp_path / "mpc/0.json").read_text()) == legacy
