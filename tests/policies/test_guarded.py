"""A learned policy behind its out-of-distribution guard, as one policy (``guarded:agent=DIR,ood=MODE``): in range
it acts as the bare artifact; out of range it acts as the deploy scheduler's guard would (the fallback's mixture,
the clipped observation's action, or the policy's own under ``warn``); its identity covers the artifact's
content and the guard's settings; bad specs are typed errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from mixagent.env.evaluation import EvalResult
from mixagent.env.observation import SettingObservationBuilder
from mixagent.errors import ConfigError, UsageError
from mixagent.policies.artifact import load_policy
from mixagent.policies.guarded import GuardedPolicy
from mixagent.policies.registry import PolicyContext, method_problems
from mixagent.rollout.identity import policy_identity, policy_key
from tests.policies.test_per_domain import space

STATED = {"lam": 0.5, "steps": 8, "segment_tokens": 65536, "lr": 0.002, "wsd": 1.0, "decay_fraction": 0.25,
          "target_tokens": 131072}


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    from mixagent.agent.train_per_domain import PerDomainBCConfig, train_per_domain

    return train_per_domain(PerDomainBCConfig(steps=30, hidden=8, observation=2, lams=(0.2, 0.8)),
                            tmp_path_factory.mktemp("guarded") / "v2", progress=False)


def _obs(sp, lam: float) -> np.ndarray:
    ev = EvalResult({n: 2.0 for n in sp.names}, {"source": 0.4, "target": 0.1}, {})
    return SettingObservationBuilder(sp, {**STATED, "lam": lam})(np.ones(sp.k) / sp.k, ev, ev, ev, 0.0, 0.5)


def _fresh(agent, sp):
    policy = load_policy(agent)
    policy.reset(sp)
    return policy


def test_in_range_it_is_the_bare_policy_and_out_of_range_it_is_the_guard(agent):
    sp = space(4, 2)
    natural = {n: 0.25 for n in sp.names}
    inside, outside = _obs(sp, 0.5), _obs(sp, 0.95)  # lam 0.95: beyond the trained 0.2 .. 0.8
    assert "lam" in {f.feature for f in _fresh(agent, sp).out_of_range(outside)}
    wide = GuardedPolicy(natural, str(agent), ood="fallback", fallback="uniform", tolerance=1e9)
    wide.reset(sp)
    np.testing.assert_allclose(wide.act(inside).values, _fresh(agent, sp).act(inside).values)
    np.testing.assert_allclose(wide.act(outside).values, _fresh(agent, sp).act(outside).values)
    assert (wide.decisions, wide.affected) == (2, 0)
    fallback = GuardedPolicy(natural, str(agent), ood="fallback", fallback="replay:0.8")
    fallback.reset(sp)
    got = fallback.act(outside).values
    np.testing.assert_allclose(got, [0.4, 0.4, 0.1, 0.1])  # replay 0.8 of the natural shares, not the agent's
    assert fallback.affected == 1 and not np.allclose(got, _fresh(agent, sp).act(outside).values)
    clip = GuardedPolicy(natural, str(agent), ood="clip")
    clip.reset(sp)
    np.testing.assert_allclose(clip.act(outside).values, _fresh(agent, sp).act_clipped(outside).values)
    warn = GuardedPolicy(natural, str(agent), ood="warn")
    warn.reset(sp)
    np.testing.assert_allclose(warn.act(outside).values, _fresh(agent, sp).act(outside).values)
    assert warn.affected == 1  # counted, acted on as the policy says


def test_its_identity_is_the_artifact_and_the_guard(agent, tmp_path):
    ctx = PolicyContext(natural={n: 0.25 for n in space(4, 2).names})
    keys = {mode: policy_key(f"guarded:agent={agent},ood={mode},fallback=replay:0.6", ctx)
            for mode in ("clip", "fallback")}
    assert keys["clip"] != keys["fallback"] and all(k.startswith("guarded@") for k in keys.values())
    copy = tmp_path / "copy"
    shutil.copytree(agent, copy)
    same = policy_key(f"guarded:agent={copy},ood=clip,fallback=replay:0.6", ctx)
    assert same == keys["clip"]  # by content: a copy elsewhere is the same policy and shares its episodes
    assert policy_identity(f"guarded:agent={agent},ood=clip") != policy_identity(f"guarded:agent={copy},ood=clip")
    from mixagent.agent.train_per_domain import PerDomainBCConfig, train_per_domain

    shutil.rmtree(copy)  # another policy at the same path: retrained with another seed
    train_per_domain(PerDomainBCConfig(steps=30, hidden=8, observation=2, lams=(0.2, 0.8), seed=1), copy,
                     progress=False)
    assert policy_key(f"guarded:agent={copy},ood=clip,fallback=replay:0.6", ctx) != same
    shutil.rmtree(copy)
    shutil.copytree(agent, copy)
    meta = json.loads((copy / "meta.json").read_text())
    meta["training"]["feature_ranges"]["run"]["lam"] = [0.0, 1.0]  # re-recorded ranges: the guard acts otherwise
    (copy / "meta.json").write_text(json.dumps(meta))
    assert policy_key(f"guarded:agent={copy},ood=clip,fallback=replay:0.6", ctx) != same


def test_bad_specs_are_typed_errors(agent, tmp_path):
    assert "is not a policy artifact directory" in method_problems("guarded:agent=runs/agent/nope,ood=clip")[0]
    assert "ood must be one of warn, clip, fallback" in method_problems(f"guarded:agent={agent},ood=nope")[0]
    assert "is not a baseline" in method_problems(f"guarded:agent={agent},fallback=odm")[0]
    # the default and the documented forms pass the check, which has no natural shares (built at reset)
    assert method_problems(f"guarded:agent={agent}") == []
    assert method_problems(f"guarded:agent={agent},ood=fallback,fallback=replay:0.6") == []
    with pytest.raises(ConfigError, match="natural token shares"):
        GuardedPolicy(None, str(agent), ood="fallback", fallback="replay:0.6").reset(space(4, 2))
    bare = tmp_path / "bare"
    shutil.copytree(agent, bare)
    meta = json.loads((bare / "meta.json").read_text())
    del meta["training"]["feature_ranges"]
    (bare / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="needs the training range of the policy's features"):
        GuardedPolicy(None, str(bare), ood="clip")
    GuardedPolicy(None, str(bare), ood="warn")  # warn acts on it unchecked
    with pytest.raises(UsageError, match="act before reset"):
        GuardedPolicy(None, str(agent), ood="clip").act(np.zeros(23))


def test_a_comma_separated_policy_list_keeps_a_spec_with_several_pairs_whole():
    from mixagent.policies.registry import split_policies

    assert split_policies("probe_commit, guarded:agent=runs/agent/v2/bc,ood=clip,tolerance=0.1,uniform,replay:0.6") == [
        "probe_commit", "guarded:agent=runs/agent/v2/bc,ood=clip,tolerance=0.1", "uniform", "replay:0.6"]
    assert split_policies("doremi:eta=0.1,smoothing=0.01,runs/agent/x") == ["doremi:eta=0.1,smoothing=0.01",
                                                                          "runs/agent/x"]
    assert split_policies("natural,,uniform") == ["natural", "uniform"]


def test_commit_after_holds_the_nth_decision_and_keeps_older_identities(agent):
    """``commit_after=N``: the first N decisions are the guarded policy's, every later one repeats decision N
    (a learned probe-then-commit); without it a guarded spec's identity is what it was."""
    sp = space(4, 2)
    natural = {n: 0.25 for n in sp.names}
    obs = [_obs(sp, lam) for lam in (0.2, 0.5, 0.8, 0.3, 0.6)]  # observations that move the bare policy
    bare = _fresh(agent, sp)
    free = [bare.act(o).values for o in obs]
    assert not np.allclose(free[1], free[3])
    held = GuardedPolicy(natural, str(agent), ood="clip", commit_after=2)
    held.reset(sp)
    got = [held.act(o).values for o in obs]
    np.testing.assert_allclose(got[0], free[0])
    np.testing.assert_allclose(got[1], free[1])
    for g in got[2:]:
        np.testing.assert_allclose(g, free[1])  # decision 2 held, whatever the later observations say
    assert held.decisions == 5
    held.reset(sp)  # a new run commits afresh
    np.testing.assert_allclose(held.act(obs[3]).values, free[3])
    ctx = PolicyContext(natural=natural)
    plain = policy_key(f"guarded:agent={agent},ood=clip", ctx)
    assert policy_key(f"guarded:agent={agent},ood=clip,commit_after=0", ctx) == plain
    assert policy_key(f"guarded:agent={agent},ood=clip,commit_after=2", ctx) != plain
    assert "commit_after must be a whole number" in method_problems(f"guarded:agent={agent},commit_after=-1")[0]
