"""Stage 2 with the world model and the generalization protocol: synthetic
branches start at real states and carry the penalty, real d3rlpy CQL / SAC train with them, the variants are
selected by config, the held-out-domain BC, and the protocol's table over committed episodes."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from mixagent.agent.config import AgentConfig, ModelBasedConfig
from mixagent.agent.dataset import build_transitions, concat_transitions, load_trajectories
from mixagent.agent.train import train_agent
from mixagent.config import load_config
from mixagent.errors import ConfigError, ResumeMismatchError, WorldModelError
from mixagent.model_based.surrogate import make_surrogate_env
from mixagent.model_based.synthetic import surrogate_for, synthetic_transitions, world_model_data
from mixagent.paths import CONFIGS_DIR, REPO_ROOT

DATA = REPO_ROOT / "trajectories/reference/math-cpt-v1"
WM = "checkpoints/world_models/math-cpt-v1"


def _train(cfg, **kwargs):
    """The agent job as ``mixagent train-agent`` runs it: with the world model's supply for ``model.kind``."""
    return train_agent(cfg, world_model=world_model_data(cfg), **kwargs)
QUICK = ["out_dir={out}", "sft.steps=40", "rl.steps=40", "fqe.steps=0", "sft.batch_size=32", "rl.batch_size=32",
         "model.branches=40", "model.online_steps=300", "model.buffer=1000", "eval.launcher=inline", "eval.cache=",
         "eval.baselines=[uniform]", "eval.seeds=[0]", "log_every=20", "checkpoint_every=20"]


@pytest.fixture(scope="module")
def tset():
    return load_trajectories([DATA])


def surrogate():
    return make_surrogate_env(REPO_ROOT / WM)


def zero_policy(obs: np.ndarray) -> np.ndarray:
    return np.zeros((len(obs), 10), np.float32)


def test_branches_start_at_real_states_and_pay_the_penalty(tset):
    cfg = ModelBasedConfig(kind="synthetic", world_model=WM, branches=30, horizon=3, noise=0.0, penalty=0.0)
    syn = synthetic_transitions(tset, cfg, zero_policy, seed=3, progress=False)
    real = build_transitions(tset, "normalised_bpb", 0.5, dedupe=False)
    # every branch's first observation is a real observation (its state restored exactly, not re-simulated)
    real_obs = {tuple(np.round(o, 5)) for o in real.observations}
    firsts = syn.observations[[e["row"] for e in syn.episodes]]
    assert all(tuple(np.round(o, 5)) in real_obs for o in firsts)
    assert len(syn.episodes) == 30 and all(1 <= e["steps"] <= 3 for e in syn.episodes)
    # the step after the branch point measures its change from the restored current evaluation: the change
    # blocks (bpb, then scores) of the next observation are its level minus the branch point's level
    k, checked = 10, 0
    for e in syn.episodes:
        if e["steps"] >= 1 and e["row"] + 1 < len(syn) and (e["steps"] >= 2 or syn.final_obs[e["row"] + 1]):
            o0, o1 = syn.observations[e["row"]], syn.observations[e["row"] + 1]
            np.testing.assert_allclose(o1[2 * k:3 * k], o1[k:2 * k] - o0[k:2 * k], atol=2e-5)
            np.testing.assert_allclose(o1[3 * k + 2:3 * k + 4], o1[3 * k:3 * k + 2] - o0[3 * k:3 * k + 2], atol=2e-5)
            checked += e["first_step"] > 0
    assert checked >= 10  # branch points after the first step, where the previous evaluation differs
    for e in syn.episodes:  # a branch reaching the horizon is terminal; one cut at 3 steps ends in a timeout row
        end = e["row"] + e["steps"]
        if e["first_step"] + e["steps"] == 8:
            assert syn.terminals[end - 1] == 1
        else:
            assert e["steps"] == 3 and syn.timeouts[end] == 1 and syn.final_obs[end]
    penalised = synthetic_transitions(tset, dataclasses.replace(cfg, penalty=0.05), zero_policy, seed=3,
                                      progress=False)
    steps = ~syn.final_obs
    np.testing.assert_array_equal(syn.observations, penalised.observations)  # same draws, same dynamics
    gap = syn.rewards[steps] - penalised.rewards[steps]
    assert np.all(gap > 0) and np.all(gap < 0.05 * 5)  # r - 0.05 * disagreement, disagreement in (0, 5)
    both = concat_transitions(real, syn)
    assert len(both) == len(real) + len(syn) and both.episodes[-1]["row"] == syn.episodes[-1]["row"] + len(real)
    np.testing.assert_array_equal(both.observations[len(real):], syn.observations)


def test_world_model_of_another_spec_is_refused(tset):
    other = dataclasses.replace(tset, env={**tset.env, "spec_hash": "0000000000000000", "id": "mixagent/other-v1"})
    with pytest.raises(WorldModelError, match="fit one on these runs"):
        surrogate_for(ModelBasedConfig(kind="synthetic", world_model=WM), other, "sample")


def test_online_algorithms_need_the_surrogate_and_bad_sections_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="sac and td3 train online"):
        load_config(AgentConfig, CONFIGS_DIR / "agent/default.yaml", ["rl.algo=sac", "rl.params={}"])
    with pytest.raises(ConfigError, match="sac and td3 train online"):
        load_config(AgentConfig, CONFIGS_DIR / "agent/sac-surrogate.yaml", ["model.kind=synthetic"])
    with pytest.raises(ConfigError) as err:
        load_config(AgentConfig, CONFIGS_DIR / "agent/cql-synthetic.yaml", ["model.kind=mopo", "model.penalty=-1",
                                                                            "model.horizon=0"])
    text = str(err.value)
    assert "kind must be" in text and "penalty must be >= 0" in text and "horizon" in text
    with pytest.raises(ConfigError, match="not a world-model artifact"):
        load_config(AgentConfig, CONFIGS_DIR / "agent/cql-synthetic.yaml", ["model.world_model=checkpoints/nope"])
    cfg = load_config(AgentConfig, CONFIGS_DIR / "agent/cql-synthetic.yaml",
                      [f"out_dir={tmp_path}", "reward=balanced_bpb", "lam=0.2"])
    with pytest.raises(ConfigError, match="leave reward and lam at the env's"):
        _train(cfg, progress=False)
    assert not cfg.run_dir.exists()  # refused before anything was written
    with pytest.raises(ConfigError, match="none was supplied"):  # the agent never loads a world model itself
        train_agent(cfg, progress=False)
    assert not cfg.run_dir.exists()


@pytest.mark.parametrize("variant, algo, losses", [("cql-synthetic", "cql", {"conservative_loss"}),
                                                    ("sac-surrogate", "sac", set())])
def test_variants_train_with_real_d3rlpy_and_reproduce(tmp_path, variant, algo, losses):
    cfg = load_config(AgentConfig, CONFIGS_DIR / f"agent/{variant}.yaml",
                      [q.format(out=tmp_path) for q in QUICK])
    result = _train(cfg, progress=False, env_factory=surrogate)
    meta = json.loads((result.run_dir / "rl/meta.json").read_text())
    assert meta["algo"] == algo and meta["training"]["config"]["model"]["kind"] == cfg.model.kind
    log = [json.loads(x) for x in (result.run_dir / "log.jsonl").read_text().splitlines()]
    if cfg.model.kind == "synthetic":
        syn = next(x for x in log if x["stage"] == "synthetic")
        assert syn["synthetic_episodes"] == 40 and 40 <= syn["synthetic_transitions"] <= 120
        assert losses <= set(next(x for x in log if x["stage"] == "rl" and "step" in x))
    assert [r["policy"] for r in result.rows] == [f"agent RL ({algo})", "uniform"]
    assert np.isfinite(result.rows[0]["balanced"])
    again = _train(dataclasses.replace(cfg, name="again"), progress=False, env_factory=surrogate)
    assert (again.artifacts["rl"] / "policy.safetensors").read_bytes() == \
        (result.artifacts["rl"] / "policy.safetensors").read_bytes()
    with pytest.raises(ResumeMismatchError, match="model"):  # another model section is another run
        _train(dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, penalty=0.5)), resume=True,
                    progress=False, env_factory=surrogate)
    resumed = _train(cfg, resume=True, progress=False, env_factory=surrogate)  # finished: loads, no retraining
    assert (resumed.artifacts["rl"] / "policy.safetensors").read_bytes() == \
        (result.artifacts["rl"] / "policy.safetensors").read_bytes()


def test_per_domain_bc_without_some_domains(tmp_path):
    from mixagent.agent.train_per_domain import PerDomainBCConfig, _rows, train_per_domain
    from mixagent.policies import load_policy

    full, _ = _rows("trajectories/reference/math-cpt-v1", 0.25)
    cut, info = _rows("trajectories/reference/math-cpt-v1", 0.25, ("fiction", "wordnet"))
    assert info["k"] == 8 and len(cut) == len(full)
    keep = [i for i in range(10) if i not in (2, 6)]
    for (d, t, r, a), (d2, t2, r2, a2) in zip(full[:20], cut[:20]):
        np.testing.assert_array_equal(a[keep], a2)
        np.testing.assert_array_equal(t[keep], t2)
        np.testing.assert_allclose(d[keep, 3:], d2[:, 3:])  # relative losses and their changes kept
        np.testing.assert_allclose(d2[:, 1].sum(), 8.0, rtol=1e-5)  # K * weights renormalised over 8 domains
        np.testing.assert_array_equal(r, r2)
    with pytest.raises(ConfigError, match="keep at least one domain of each field"):
        train_per_domain(PerDomainBCConfig(exclude=("math-gold", "math-strong", "math-weak"), steps=1), tmp_path / "x")
    with pytest.raises(ConfigError, match="name only those"):
        train_per_domain(PerDomainBCConfig(exclude=("poetry",), steps=1), tmp_path / "y")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    out = train_per_domain(PerDomainBCConfig(exclude=("fiction",), steps=5, batch_size=8), tmp_path / "p",
                           progress=False)
    assert json.loads((out / "meta.json").read_text())["training"]["runs"][0]["excluded"] == ["fiction"]
    load_policy(out)  # the artifact drives the full space it never saw whole


def test_generalize_table_from_the_committed_episodes(tmp_path):
    """The in-distribution case reruns nothing (every episode is in the committed cache) and its row is the
    committed v1 comparison's numbers; unfinished cases are listed, not scored."""
    from mixagent.rollout.identity import policy_identity
    from mixagent.study.generalize import GeneralizeConfig, generalize_table, run_generalize

    cfg = load_config(GeneralizeConfig, CONFIGS_DIR / "generalize/v1.yaml", [f"out={tmp_path}"])
    table = run_generalize(cfg, ["in-distribution"])
    (row,) = table["cases"]
    ref = {r["policy"]: r for r in json.loads((REPO_ROOT / "audits/compare/v1/table.json").read_text())["rows"]}
    assert row["best_baseline"] == "replay:0.5" and row["best_mean"] == pytest.approx(ref["replay:0.5"]["mean"])
    assert row["baselines"]["uniform"]["scores"] == pytest.approx(ref["uniform"]["scores"])
    assert row["as_good_nominal"] == (row["agent_mean"] >= max(b["mean"] for b in row["baselines"].values()))
    assert table["held_out_share_as_good"] is None and "space-52" in table["pending"]
    assert (tmp_path / "v1-generalize/gaps.png").stat().st_size > 0
    agent = json.loads((REPO_ROOT / "audits/compare/v1-agent-v1/table.json").read_text())
    ref_agent = next(r for r in agent["rows"] if r["kind"] == "agent")
    assert row["agent_scores"] == pytest.approx(ref_agent["scores"]) and row["agent_std"] == pytest.approx(
        np.std(ref_agent["scores"], ddof=1))
    stds = [row["agent_std"]] + [b["std"] for b in row["baselines"].values()]
    assert row["pooled_std"] == pytest.approx(np.sqrt(np.mean(np.square(stds))))  # agent and the 3 baselines
    assert row["gap_std"] == pytest.approx((row["agent_mean"] - row["best_mean"]) / row["pooled_std"])
    best = dict(zip(ref["replay:0.5"]["seeds"], ref["replay:0.5"]["scores"]))
    paired = [a - best[s] for s, a in zip(ref_agent["seeds"], ref_agent["scores"])]
    assert row["paired_diff"] == pytest.approx(paired) and row["paired_mean"] == pytest.approx(
        row["agent_mean"] - row["best_mean"]) and row["paired_std"] == pytest.approx(np.std(paired, ddof=1))
    stale = load_config(GeneralizeConfig, CONFIGS_DIR / "generalize/v1.yaml", [f"out={tmp_path}", "seeds=[0, 1, 3]"])
    assert generalize_table(stale)["cases"] == []  # a comparison on other seeds is not read as this case
    case_table = tmp_path / "v1-in-distribution/table.json"
    written = json.loads(case_table.read_text())
    assert {r["identity"] for r in written["rows"] if r["kind"] == "agent"} == {policy_identity(cfg.agent)}
    for r in written["rows"]:
        r["identity"] = "artifact@000000000000" if r["kind"] == "agent" else r["identity"]
    case_table.write_text(json.dumps(written))
    assert generalize_table(cfg)["cases"] == []  # nor one of another artifact at the agent's path
    with pytest.raises(ConfigError, match="not a case of protocol"):
        run_generalize(cfg, ["space-7"])
    with pytest.raises(ConfigError, match="no case named"):  # `--cases ""` is not "every case"
        run_generalize(cfg, [])
    from mixagent.study.generalize import Case

    bad = dataclasses.replace(cfg, cases=(*cfg.cases[:1], Case(
        "trainer-x", "a Trainer case whose base config is missing", deploy="configs/deploy/cpt-2m.yaml",
        deploy_overrides=("model.path=configs/base_model/missing.yaml",))))
    with pytest.raises(ConfigError, match="refused by the deploy job"):  # before the earlier case runs
        run_generalize(bad)
    assert not (tmp_path / "v1-trainer-x").exists()
    with pytest.raises(ConfigError, match=">= 3 held-out seeds"):
        load_config(GeneralizeConfig, CONFIGS_DIR / "generalize/v1.yaml", ["seeds=[0, 1]"])


def test_variants_table_from_committed_episodes(tmp_path, monkeypatch):
    """The planner's and the reference agent's committed real-env episodes against every v1 baseline: nothing
    reruns, the numbers are the episodes', the verdict names the missing headroom."""
    from mixagent.model_based import planning
    from mixagent.model_based.variants import Variant, VariantsConfig, run_variants

    key = planning.planner_key(WM, 64, 0.05)

    def rerun(*args, **kwargs):
        raise AssertionError(f"the planner reran: its episodes under key {key} are not committed in "
                             f"audits/agent-v1/mpc/{key['digest']}/")

    monkeypatch.setattr(planning, "WorldModelPlanner", rerun)
    cfg = VariantsConfig(name="t", compare_overrides=(f"out={tmp_path}", "reuse=[audits/compare]"),
                         out=str(tmp_path / "variants"), variants=(
                             Variant("mpc", "MPC", planner=WM),
                             Variant("pd", "per-domain BC", artifact="checkpoints/agents/math-cpt-v1")))
    table = run_variants(cfg, progress=False)
    mpc = [json.loads((REPO_ROOT / f"audits/agent-v1/mpc/{key['digest']}/{s}.json").read_text())["balanced"]
           for s in (0, 1, 2)]
    by = {v["name"]: v for v in table["variants"]}
    assert by["mpc"]["scores"] == mpc and by["mpc"]["mean"] == pytest.approx(np.mean(mpc))
    assert by["mpc"]["policy"] == f"audits/agent-v1/mpc/{key['digest']}"
    # the episodes stored by seed only before the key (same world model, search and rule): the same numbers
    legacy = [json.loads((REPO_ROOT / f"audits/agent-v1/mpc/{s}.json").read_text())["balanced"] for s in (0, 1, 2)]
    assert mpc == pytest.approx(legacy, abs=1e-6)
    strongest = max(json.loads((tmp_path / "t/table.json").read_text())["rows"],  # the comparison's best method
                    key=lambda r: r["mean"] if r["kind"] not in ("agent", "oracle") else -1)
    assert table["best_baseline"] == strongest["policy"] and table["oracle_schedule_gain"] < 0
    assert all(v["oracle_share"] is None for v in table["variants"]) and "no schedule headroom" in table["verdict"]
    assert "| MPC |" in (tmp_path / "variants/table.md").read_text()
    with pytest.raises(ConfigError, match="exactly one of config, planner or artifact"):
        load_config(VariantsConfig, None, ["variants=[{name: x, label: y}]"])
