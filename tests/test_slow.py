"""Slow tests on the default, real-size specs (``make test-slow``): they pre-train the default base model
once (about 3 minutes here) and run real continual pre-training segments."""

import numpy as np
import pytest

from mixagent.env.environment import MixingEnv
from mixagent.paths import ENVS_DIR
from mixagent.policies import ReplayPolicy, UniformPolicy
from mixagent.rollout.episode import rollout

pytestmark = pytest.mark.slow


def test_default_spec_shows_forgetting_and_learning():
    env = MixingEnv(ENVS_DIR / "math-natural.yaml", overrides=["steps=3"])
    natural = env.natural.to_mapping()
    target_only = rollout(env, ReplayPolicy(0.0, natural), seed=0)
    uniform = rollout(env, UniformPolicy(), seed=0)
    start = target_only.start_eval
    src0, tgt0 = start.field_bpb(env.space, "source"), start.field_bpb(env.space, "target")
    assert target_only.final_eval.field_bpb(env.space, "target") < 0.7 * tgt0
    assert target_only.final_eval.field_bpb(env.space, "source") > 1.2 * src0  # forgetting
    assert uniform.final_eval.field_bpb(env.space, "source") < 1.05 * src0  # mixing keeps the source
    assert target_only.final_eval.scores["source"] < start.scores["source"]


def test_fine_grained_space_has_52_domains_with_eval_windows():
    env = MixingEnv(ENVS_DIR / "math-52.yaml", overrides=["steps=1"])
    assert env.space.k == 52
    obs, info = env.reset(seed=0)
    assert obs.shape == (3 * 52 + 5,) and len(info["eval"]["bpb"]) == 52
    assert all(np.isfinite(v) for v in info["eval"]["bpb"].values())
    obs, r, term, trunc, info = env.step(np.zeros(52, np.float32))
    assert term and not trunc and np.isfinite(r)
