"""The per-domain policy: permutation equivariance, any domain count, the artifact and
its refusals, behaviour cloning on the reference dataset."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mixagent.domains import Domain, DomainSpace
from mixagent.errors import CorruptArtifactError, SchemaVersionError, UsageError
from mixagent.policies import load_policy
from mixagent.policies.per_domain import PerDomainNet, PerDomainPolicy, features, write_per_domain_artifact


def space(k: int, targets: int) -> DomainSpace:
    return DomainSpace(f"k{k}", [Domain(f"d{i}", "target" if i >= k - targets else "source", []) for i in range(k)])


def observation(k: int, seed: int, lr: bool = True) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = rng.dirichlet(np.ones(k))
    return np.concatenate([w, rng.normal(0, 0.1, 2 * k), rng.normal(0, 0.1, 4), [0.25], [0.8] if lr else []])


def permute_obs(obs: np.ndarray, perm: np.ndarray, k: int) -> np.ndarray:
    out = obs.copy()
    for block in range(3):
        out[block * k:(block + 1) * k] = obs[block * k:(block + 1) * k][perm]
    return out


@pytest.fixture()
def artifact(tmp_path):
    torch.manual_seed(0)
    net = PerDomainNet(16)
    return write_per_domain_artifact(tmp_path / "p", net, {"action": {"temperature": 0.25, "floor": 0.0}})


def test_network_is_permutation_equivariant_and_masks_padding():
    torch.manual_seed(0)
    net = PerDomainNet(16)
    k = 7
    sp = space(k, 3)
    target = sp.field_mask("target").astype(np.float32)
    obs = observation(k, 1)
    dom, run = features(obs, target, obs[:k])
    a = net(torch.from_numpy(dom)[None], torch.from_numpy(target)[None], torch.from_numpy(run)[None])[0]
    perm = np.random.default_rng(2).permutation(k)
    pa = net(torch.from_numpy(dom[perm])[None], torch.from_numpy(target[perm])[None], torch.from_numpy(run)[None])[0]
    torch.testing.assert_close(pa, a[perm], rtol=0, atol=1e-6)
    # padding to 10 domains with a mask changes nothing for the real ones
    pad = np.zeros((10, dom.shape[1]), np.float32)
    pad[:k] = dom
    t10, v10 = np.zeros(10, np.float32), np.zeros(10, np.float32)
    t10[:k], v10[:k] = target, 1
    padded = net(torch.from_numpy(pad)[None], torch.from_numpy(t10)[None], torch.from_numpy(run)[None],
                 torch.from_numpy(v10)[None])[0]
    torch.testing.assert_close(padded[:k], a, rtol=0, atol=1e-6)


@pytest.mark.parametrize("k,targets", [(2, 1), (10, 3), (52, 1)])
def test_policy_drives_any_space_equivariantly(artifact, k, targets):
    policy = load_policy(artifact)
    assert isinstance(policy, PerDomainPolicy)
    sp = space(k, targets)
    obs = observation(k, 3)
    policy.reset(sp)
    w = policy.act(obs).values
    assert w.shape == (k,) and abs(w.sum() - 1) < 1e-9
    perm = np.random.default_rng(k).permutation(k)
    permuted = DomainSpace(sp.name, [sp.domains[i] for i in perm])
    policy.reset(permuted)
    np.testing.assert_allclose(policy.act(permute_obs(obs, perm, k)).values, w[perm], atol=1e-6)


def test_initial_weights_are_the_first_observations_and_resume(artifact):
    policy = load_policy(artifact)
    sp = space(10, 3)
    first, later = observation(10, 4), observation(10, 5)
    policy.reset(sp)
    policy.act(first)
    np.testing.assert_array_equal(policy.initial, first[:10])
    expected = policy.act(later).values
    state = json.loads(json.dumps(policy.state_dict()))
    resumed = load_policy(artifact)
    resumed.reset(sp)
    resumed.load_state_dict(state)
    np.testing.assert_array_equal(resumed.act(later).values, expected)  # not re-read from `later`


def test_artifact_refusals(artifact):
    with pytest.raises(UsageError, match="reset"):
        load_policy(artifact).act(observation(10, 0))
    raw = bytearray((artifact / "policy.safetensors").read_bytes())
    raw[-1] ^= 1
    (artifact / "policy.safetensors").write_bytes(bytes(raw))
    with pytest.raises(CorruptArtifactError, match="sha256"):
        load_policy(artifact)
    raw[-1] ^= 1
    (artifact / "policy.safetensors").write_bytes(bytes(raw))
    meta = json.loads((artifact / "meta.json").read_text())
    (artifact / "meta.json").write_text(json.dumps({**meta, "observation": {"version": 0}}))
    with pytest.raises(SchemaVersionError, match="observation version 0"):
        load_policy(artifact)
    with pytest.raises(Exception, match="observation has 9 entries"):
        features(np.zeros(9), np.zeros(10), np.zeros(10))


def test_behaviour_cloning_fits_the_reference_data(tmp_path):
    from mixagent.agent.train_per_domain import PerDomainBCConfig, train_per_domain

    out = train_per_domain(PerDomainBCConfig(steps=150, hidden=32), tmp_path / "bc", progress=False)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["training"]["runs"][0]["k"] == 10 and meta["training"]["runs"][0]["transitions"] > 100
    first = meta["training"]["final_loss"]
    assert first < 0.25  # the actions' variance around 0 is ~0.3: cloning learned something
    policy = load_policy(out)
    policy.reset(space(4, 2))  # a space it never saw
    assert policy.act(observation(4, 0)).values.shape == (4,)
    # the training recorded the range of every feature over the observations it cloned
    ranges = meta["training"]["feature_ranges"]
    assert ranges["rows"] == meta["training"]["runs"][0]["transitions"]
    assert ranges["run"]["progress"] == [0.0, 1.0]  # its domain, not the decisions at t/T = 0 .. 7/8 (DOMAIN_RANGES)
    assert ranges["run"]["target_score"] == pytest.approx([-0.1759, 0.4307], abs=1e-4)
    assert ranges["domain"]["source"]["weight"][0] == 0.0 and ranges["domain"]["target"]["weight"][1] > 1


def test_rest_mean_clones_the_mean_action_from_each_step_to_the_end():
    """``action_target: rest_mean``: each row's target is its trajectory's mean action from that step on (the last
    step's is its own action); ``step`` is the action itself; an unknown target is a typed error."""
    from mixagent.agent.dataset import build_transitions, load_trajectories, top_trajectories
    from mixagent.agent.train_per_domain import PerDomainBCConfig, training_arrays
    from mixagent.errors import ConfigError
    from mixagent.paths import REPO_ROOT

    cfg = PerDomainBCConfig(top_fraction=0.25)
    step, _ = training_arrays(cfg)
    rest, _ = training_arrays(PerDomainBCConfig(top_fraction=0.25, action_target="rest_mean"))
    np.testing.assert_array_equal(step["dom"], rest["dom"])  # the same rows, other targets
    tset = load_trajectories([REPO_ROOT / cfg.data[0]])
    tr = build_transitions(tset, "normalised_bpb", float(tset.env["spec"]["reward"]["lam"]),
                           select=top_trajectories(tset, 0.25, "normalised_bpb",
                                                   float(tset.env["spec"]["reward"]["lam"])))
    first = tr.episodes[0]
    traj = dict(((r, t.id), t) for r, t in tset.trajectories)[(first["run"], first["id"])]
    acts = np.clip(np.array([s["action"] for s in traj.steps]), -1, 1)
    row, t0 = first["row"], first["first_step"]
    np.testing.assert_allclose(rest["action"][row], acts[t0:].mean(0), atol=1e-6)
    last = row + first["steps"] - 1
    np.testing.assert_allclose(rest["action"][last], acts[-1], atol=1e-6)
    np.testing.assert_allclose(step["action"][row], acts[t0], atol=1e-6)
    assert not np.allclose(rest["action"], step["action"])
    with pytest.raises(ConfigError, match="action_target must be one of step, rest_mean"):
        training_arrays(PerDomainBCConfig(action_target="mean"))


def test_a_lam_conditioned_policy_on_observation_v2(tmp_path):
    """Observation version 2 with lams: every run enters once per lam (its best trajectories at that lam), lam
    is a run feature with its training range, and the artifact reads version-2 observations of any space."""
    from mixagent.agent.train_per_domain import PerDomainBCConfig, train_per_domain
    from mixagent.env.evaluation import EvalResult
    from mixagent.env.observation import SettingObservationBuilder
    from mixagent.errors import ConfigError, WeightsError

    with pytest.raises(ConfigError, match="lams relabel the runs .* only observation 2"):
        train_per_domain(PerDomainBCConfig(lams=(0.2, 0.8)), tmp_path / "no", progress=False)
    out = train_per_domain(PerDomainBCConfig(steps=60, hidden=16, observation=2, lams=(0.2, 0.8),
                                             unknown_budget=0.25), tmp_path / "v2", progress=False)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["observation"] == {"version": 2, "lr": True} and meta["network"]["run_features"] == 11
    (run,) = meta["training"]["runs"]
    assert run["lams"] == [0.2, 0.8]
    ranges = meta["training"]["feature_ranges"]["run"]
    assert ranges["lam"] == pytest.approx([0.2, 0.8]) and "lr" in ranges
    assert ranges["repetition_known"] == [0.0, 1.0]  # a quarter of the rows shown without a stated budget
    assert ranges["repetition_log2"][0] <= 0.0 < ranges["repetition_log2"][1]
    policy = load_policy(out)
    sp = space(4, 2)
    policy.reset(sp)
    stated = {"lam": 0.5, "steps": 8, "segment_tokens": 65536, "lr": 0.002, "wsd": 1.0, "decay_fraction": 0.25,
              "target_tokens": 131072}
    ev = EvalResult({n: 2.0 for n in sp.names}, {"source": 0.4, "target": 0.1}, {})
    obs = SettingObservationBuilder(sp, stated)(np.ones(4) / 4, ev, ev, ev, 0.0, 0.5)
    assert policy.act(obs).values.shape == (4,)
    flagged = {f.feature for f in policy.out_of_range(
        SettingObservationBuilder(sp, {**stated, "lam": 0.95})(np.ones(4) / 4, ev, ev, ev, 0.0, 0.5))}
    assert "lam" in flagged  # a trade-off it never trained at is out of its range
    unknown = SettingObservationBuilder(sp, {**stated, "target_tokens": 0})(np.ones(4) / 4, ev, ev, ev, 0.0, 0.5)
    assert not {"repetition_known", "repetition_log2"} & {f.feature for f in policy.out_of_range(unknown)}
    with pytest.raises(ConfigError, match="unknown_budget must be in \\[0, 1\\) and needs observation: 2"):
        train_per_domain(PerDomainBCConfig(unknown_budget=0.3), tmp_path / "no2", progress=False)
    with pytest.raises(WeightsError, match="version 2 of a 4-domain space gives 23"):
        policy.act(observation(4, 0))  # a version-1 observation


@pytest.mark.parametrize("agent,identity", [("math-cpt-v1", "a1f22148ffc6"),
                                            ("math-cpt-v1-no-fiction-foldoc-wordnet", "46d21ce2596a")])
def test_committed_agents_record_their_feature_ranges_without_changing_identity(agent, identity, tmp_path):
    """The ranges were backfilled (``mixagent feature-ranges``) into ``training``, outside the policy's cache
    identity: the cached episodes of the reference agent stay its own. Recomputing them gives the same numbers."""
    import shutil

    from mixagent.agent.feature_ranges import backfill_feature_ranges
    from mixagent.paths import REPO_ROOT
    from mixagent.rollout.identity import artifact_id

    path = REPO_ROOT / "checkpoints/agents" / agent
    assert artifact_id(path) == identity  # the value before the ranges were recorded
    recorded = load_policy(path).feature_ranges
    assert recorded["rows"] == 368 and recorded["run"]["target_score"][1] == pytest.approx(0.4307, abs=1e-4)
    copy = shutil.copytree(path, tmp_path / agent)
    meta = json.loads((copy / "meta.json").read_text())
    del meta["training"]["feature_ranges"]
    (copy / "meta.json").write_text(json.dumps(meta))
    assert backfill_feature_ranges(copy) == recorded and artifact_id(copy) == identity


def test_backfill_refuses_data_that_changed_and_dense_artifacts(tmp_path, artifact):
    import shutil

    from mixagent.agent.feature_ranges import backfill_feature_ranges
    from mixagent.errors import AgentDataError
    from mixagent.paths import REPO_ROOT
    from mixagent.policies.artifact import random_artifact

    copy = shutil.copytree(REPO_ROOT / "checkpoints/agents/math-cpt-v1", tmp_path / "agent")
    meta = json.loads((copy / "meta.json").read_text())
    meta["training"]["runs"][0]["transitions"] = 367
    (copy / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(AgentDataError, match="the data changed since training"):
        backfill_feature_ranges(copy)
    with pytest.raises(SchemaVersionError, match="retrain it"):
        backfill_feature_ranges(random_artifact(tmp_path / "dense", space(3, 1)))
    with pytest.raises(CorruptArtifactError, match="no training.config"):
        backfill_feature_ranges(artifact)  # written without a training record


@pytest.mark.parametrize("agent", ["math-cpt-v1", "math-cpt-v1-no-fiction-foldoc-wordnet"])
def test_committed_agents_declare_the_learning_rate_they_were_trained_on(agent):
    """A deployment passes the LR only to a policy whose artifact says it observes it: an artifact trained on
    an ``observe_lr`` dataset that did not say so would see a constant LR in every deployment."""
    from mixagent.agent.dataset import load_trajectories
    from mixagent.paths import REPO_ROOT

    path = REPO_ROOT / "checkpoints/agents" / agent
    meta = json.loads((path / "meta.json").read_text())
    data = [REPO_ROOT / r["run"] for r in meta["training"]["runs"]]
    assert load_policy(path).observe_lr == (load_trajectories(data).observed_lr is not None) is True


def test_a_policy_that_observes_the_lr_refuses_an_observation_without_it(tmp_path):
    """Trained on observations that end with the learning rate, it is never run on ones that lack it (it used to
    read LR 1.0, the peak, at every step: the fault behind the first Trainer-case numbers)."""
    torch.manual_seed(0)
    path = write_per_domain_artifact(tmp_path / "lr", PerDomainNet(16), {"action": {"temperature": 0.25, "floor": 0.0}},
                                     observe_lr=True)
    policy = load_policy(path)
    policy.reset(space(10, 3))
    assert policy.act(observation(10, 0)).values.shape == (10,)  # 3K+6: with the LR
    with pytest.raises(UsageError) as err:
        policy.act(observation(10, 0, lr=False))  # 3K+5
    text = str(err.value)
    assert "expected 36 entries (3K+6" in text and "got 35" in text and "observe_lr: true" in text


def test_the_command_takes_a_config_and_flags_over_it(tmp_path, capsys):
    """``mixagent per-domain --config configs/agent/per-domain-v2.yaml``: the config's fields, then the flags and
    ``key=value`` overrides over them; a bad value is a typed error and exit status 2, nothing written."""
    from mixagent.agent.train_per_domain import main

    out = tmp_path / "v2"
    assert main(["--config", "configs/agent/per-domain-v2.yaml", "--steps", "5", "--out", str(out), "--data",
                 "trajectories/reference/math-cpt-v1", "hidden=8", "lams=[0.35,0.65]"]) == 0  # not swallowed
    cfg = json.loads((out / "meta.json").read_text())["training"]["config"]
    assert cfg["observation"] == 2 and cfg["unknown_budget"] == 0.25 and cfg["steps"] == 5 and cfg["hidden"] == 8
    assert cfg["lams"] == [0.35, 0.65] and cfg["data"] == ["trajectories/reference/math-cpt-v1"]
    assert main(["--config", "configs/agent/per-domain-v2.yaml", "--out", str(tmp_path / "bad"), "lams=[2]"]) == 2
    assert "lams must be distinct numbers in [0, 1]" in capsys.readouterr().err and not (tmp_path / "bad").exists()
