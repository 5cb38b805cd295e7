"""The committed reference dataset of environment v1 (``trajectories/reference/math-cpt-v1``): intact, of the
committed spec, carrying the reference extremes that ``checkpoints/references/`` holds, and reproducible
from the committed base checkpoint: replaying a trajectory's first step gives its recorded evaluation.

Tolerance of the replay: 1e-3 bits per byte per domain and 1e-3 per field score. On the machine that
collected the dataset the replay is exact (0.0); float results differ between CPU kinds, and 64 optimizer
steps of the 0.6M proxy on another CPU move bits per byte by far less than 1e-3 (the audit's seed std of
the score is about 1e-2).
"""

import json

import numpy as np
import pytest

from mixagent.domains import DomainWeights
from mixagent.env.environment import MixingEnv
from mixagent.env.references import COMMITTED_REFERENCE_DIR
from mixagent.env.spec import load_spec
from mixagent.paths import ENVS_DIR, REPO_ROOT
from mixagent.trajectories import Run

DATASET = REPO_ROOT / "trajectories/reference/math-cpt-v1"
TOL = 1e-3


@pytest.fixture(scope="module")
def run():
    return Run(DATASET)


def test_the_committed_dataset_is_intact_and_of_the_committed_spec(run):
    spec = load_spec(ENVS_DIR / "math-cpt.yaml")
    assert run.packed and run.complete
    assert run.meta["env"]["spec_hash"] == spec.spec_hash()  # the committed spec still describes the data
    trajectories = list(run.trajectories())
    assert len(trajectories) >= 400 and not any(t.flagged for t in trajectories)
    assert {len(t.steps) for t in trajectories} == {spec.steps}
    committed = json.loads((COMMITTED_REFERENCE_DIR / f"{spec.spec_hash()}.json").read_text())
    proxy = run.meta["proxy"]
    assert {k: committed[k] for k in ("best", "worst")} == {k: proxy["reference"][k] for k in ("best", "worst")}
    assert committed["base"] == proxy["base_model"]
    # the behaviour mix covers the audit's families
    names = {b["name"] for t in trajectories for b in t.header["behaviour"]}
    assert {"two_stage_replay", "dirichlet", "random_walk", "epsilon"} <= names


def test_replaying_a_first_step_reproduces_its_recorded_evaluation(run):
    env = MixingEnv(ENVS_DIR / "math-cpt.yaml")
    assert env.backend.base_id == run.meta["proxy"]["base_model"]  # the committed checkpoint, adopted
    assert env.reference.to_json()["best"] == run.meta["proxy"]["reference"]["best"]
    traj = next(run.trajectories())
    _, info = env.reset(seed=int(traj.header["episode_seed"]))
    start, recorded = traj.start, traj.evals[0]
    now_start = info["eval"]
    for name in env.space.names:
        assert now_start["bpb"][name] == pytest.approx(start.bpb[name], abs=TOL)
    _, reward, _, _, info = env.step_weights(DomainWeights(env.space, np.asarray(traj.steps[0]["weights"])))
    for name in env.space.names:
        assert info["eval"]["bpb"][name] == pytest.approx(recorded.bpb[name], abs=TOL), name
    for field in ("source", "target"):
        assert info["eval"]["scores"][field] == pytest.approx(recorded.scores[field], abs=TOL), field
    assert reward == pytest.approx(traj.steps[0]["reward"], abs=10 * TOL)
