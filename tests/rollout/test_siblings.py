"""Lam siblings: which policies are open loop (the same episode under every lam, checked by rolling them out
under two lams that the observation shows), and which stores are siblings (only lam may differ)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from mixagent.domains import DomainSpace, DomainWeights
from mixagent.env.backends import AnalyticBackend
from mixagent.env.environment import MixingEnv
from mixagent.env.spec import load_spec
from mixagent.paths import ENVS_DIR
from mixagent.policies.registry import PolicyContext, build_policy
from mixagent.rollout.episode import rollout
from mixagent.rollout.siblings import is_lam_sibling, lam_siblings, open_loop, spec_head

SPEC = ENVS_DIR / "tiny-cpt.yaml"


def _env(lam: float, observation: int = 2) -> MixingEnv:
    spec = load_spec(SPEC, ["backend=analytic", f"observation={observation}", f"reward.lam={lam}"])
    return MixingEnv(spec, backend=AnalyticBackend(DomainSpace.from_yaml(spec.space_path()), spec.segment_tokens))


class ReadsLam:
    """A control policy that reads the observed lam (observation layout 2): it is not open loop."""

    def reset(self, space: DomainSpace) -> None:
        self.space = space

    def act(self, observation: np.ndarray) -> DomainWeights:
        lam = float(observation[3 * self.space.k + 6])  # the stated lam (mixagent.env.observation)
        w = np.where(self.space.field_mask("target"), lam, 1 - lam) + 0.01
        return DomainWeights(self.space, w / w.sum())


def test_open_loop_keys():
    for key in ("uniform", "natural", "target_only", "replay:0.5", "fixed@07af48f51484", "two_phase@abc",
                "decay_switch@abc", "end_upsample@abc", "regmix@e13a7df6c204"):
        assert open_loop(key), key
    for key in ("probe_commit@5860465a5788", "artifact@abc", "doremi@abc", "aioli@abc", "replayx"):
        assert not open_loop(key), key


def test_open_loop_policies_act_the_same_under_every_lam():
    # observation 2 shows lam (and the LR at 3K+5 that decay_switch reads, as version 1 on observe_lr envs)
    names = ["uniform", "natural", "target_only", "replay:0.3", "two_phase:rho1=0.8,rho2=0.2,switch=2", "regmix",
             "decay_switch", "end_upsample"]
    for observation in (1, 2):
        low, high = _env(0.1, observation), _env(0.9, observation)
        ctx = PolicyContext(natural=low.natural.to_mapping(), regmix={n: 1.0 for n in low.space.names})
        for spec in names:
            assert open_loop(spec)
            a, b = (rollout(env, build_policy(spec, ctx), seed=3) for env in (low, high))
            np.testing.assert_array_equal(a.weights, b.weights, err_msg=spec)
            assert a.final == b.final and a.ret != pytest.approx(b.ret)  # the same run, scored under another lam
    # the control: a policy that reads the observed lam acts differently, so the check above can fail
    a, b = (rollout(env, ReadsLam(), seed=3) for env in (_env(0.1), _env(0.9)))
    assert not np.allclose(a.weights, b.weights)


def test_a_sibling_differs_in_lam_alone(tmp_path):
    spec = load_spec(SPEC, ["reward.lam=0.9"])
    other_lam = load_spec(SPEC, ["reward.lam=0.2"])
    same = load_spec(SPEC, ["reward.lam=0.9"])
    other_budget = load_spec(SPEC, ["reward.lam=0.2", "target_tokens=4096"])
    other_anchors = load_spec(SPEC, ["reward.lam=0.2", "reward.anchors=[uniform]"])
    assert is_lam_sibling(spec, spec_head(other_lam))
    assert not is_lam_sibling(spec, spec_head(same))  # itself
    assert not is_lam_sibling(spec, spec_head(other_budget)) and not is_lam_sibling(spec, spec_head(other_anchors))
    forged = {**spec_head(other_lam), "spec_hash": other_budget.spec_hash()}  # a head whose hash is another's
    assert not is_lam_sibling(spec, forged) and not is_lam_sibling(spec, {"spec": {}})
    for s in (spec, other_lam, other_budget):
        (tmp_path / s.spec_hash()).mkdir()
        (tmp_path / s.spec_hash() / "spec.json").write_text(json.dumps(spec_head(s)))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "spec.json").write_text("{")
    assert lam_siblings(tmp_path, spec) == [tmp_path / other_lam.spec_hash()]
    assert dataclasses.replace(spec, reward=dataclasses.replace(spec.reward, lam=0.2)).spec_hash() == \
        other_lam.spec_hash()
