"""The oracle table on a tiny suite: the oracle is the best grid row on the tuning seeds at the setting's lam,
the single best fixed rule the best grid-normalised mean over training settings and their lams, both scored
on held-out seeds from cached episodes; the gap, the pooled std and the gate follow from those numbers; a
table of another suite is refused; bad configs are typed errors."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import yaml

from mixagent.env.evaluation import EvalResult
from mixagent.env.rewards import balanced_score
from mixagent.env.setting import load_suite
from mixagent.errors import ConfigError
from mixagent.study.audit import run_audit
from mixagent.study.oracle_table import OracleConfig, _audit_cfg, load_oracle_table, rule_spec, run_oracle_table

SUITE = {
    "name": "tiny-oracle",
    "env": "envs/tiny-cpt.yaml",
    "spaces": {"sub-5": {"space": "configs/spaces/tiny-sub.yaml"}},
    "defaults": {"base_model": "configs/base_model/tiny-prior.yaml", "target_tokens": 8192, "lr": 0.003,
                 "schedule": "wsd", "decay_fraction": 0.25, "steps": 4, "segment_tokens": 4096, "space": "sub-5",
                 "lam": 0.5},
    "axes": {"target_tokens": {"range": [2048, 65536]}, "lam": {"range": [0, 1]}},
    "train": {"target_tokens": [8192], "lam": [0.2, 0.8]},
    "held_out": {"scarce": {"target_tokens": 4096, "lam": 0.2}},  # one setting: the suite's test stays short
}
RHOS = (0.2, 0.5, 0.8)  # the job needs 9; a smaller grid keeps the test to about a minute


@pytest.fixture(scope="module")
def oracle(tmp_path_factory):
    from mixagent.study import oracle_table

    patch = pytest.MonkeyPatch()
    patch.setattr(oracle_table, "MIN_STATIC_RHOS", len(RHOS))
    root = tmp_path_factory.mktemp("oracle")
    path = root / "suite.yaml"
    path.write_text(yaml.safe_dump(SUITE, sort_keys=False))
    cfg = OracleConfig(suite=str(path), tune_seeds=(100,), seeds=(0, 1, 2), static_rhos=RHOS,
                       two_phase_switches=(2,), two_phase_rhos=(0.2, 0.8), sbf_settings=1, baselines=("uniform",),
                       out=str(root / "out"), launcher="inline")
    yield cfg, load_suite(path), run_oracle_table(cfg, progress=False)
    patch.undo()


def _tuning_means(cfg, suite, setting, keep_lam, lam):
    run = run_audit(_audit_cfg(cfg, suite, setting, keep_lam))  # stored: reruns nothing
    out = {}
    for s in run.schedules:
        rec = run.store.get(s.key, cfg.tune_seeds[0])
        out[rule_spec(s)] = (balanced_score(run.spec.reward.name, lam, run.start, EvalResult.from_json(rec.final),
                                            run.space, run.reference), s.family)
    return out


def test_the_oracle_is_the_best_tuning_row_scored_on_held_out_seeds(oracle):
    cfg, suite, table = oracle
    held = suite.held_out_settings()
    assert [r["setting"] for r in table["rows"]] == ["scarce"]
    for row in table["rows"]:
        setting = held[row["setting"]]
        means = _tuning_means(cfg, suite, setting, keep_lam=False, lam=setting.lam)
        assert len(means) == 3 + 2 + 2  # 3 shares, natural, uniform, two two-phase rows
        assert row["oracle"] == max(means, key=lambda k: means[k][0])
        assert row["oracle_tuning_mean"] == pytest.approx(means[row["oracle"]][0])
        scored = row["scores"]
        assert set(scored) == {row["oracle"], row["sbf"], row["probe_commit"], "uniform"}
        assert all(len(v) == 3 for v in scored.values())
        # the pooled std is over the fixed rules only: never probe-then-commit (a fitted policy being judged)
        noise = list(dict.fromkeys([row["oracle"], row["sbf"], "uniform"]))
        assert row["noise_rows"] == noise and row["probe_commit"] not in noise
        pooled = np.sqrt(np.mean([np.var(scored[r], ddof=1) for r in noise]))
        gap = np.mean(scored[row["oracle"]]) - np.mean(scored[row["sbf"]])
        assert row["pooled_std"] == pytest.approx(pooled) and row["gap"] == pytest.approx(gap)
        assert row["gated"] == bool(gap > 3 * pooled) and row["gap_std"] == pytest.approx(gap / pooled)
        # the held-out scores are the comparison's cached episodes, at the setting's lam
        stored = json.loads((cfg_out(cfg, suite) / f"heldout-{row['setting']}" / "table.json").read_text())
        by_policy = {r["policy"]: r["scores"] for r in stored["rows"]}
        assert by_policy["uniform"] == pytest.approx(scored["uniform"])
    assert table["passing"] == sum(r["gated"] for r in table["rows"])
    assert f"{table['passing']} of 1 held-out settings pass the gate" in table["verdict"]


def cfg_out(cfg, suite):
    from mixagent.paths import REPO_ROOT

    return REPO_ROOT / cfg.out / suite.name


def test_the_single_best_fixed_rule_is_chosen_on_training_settings_over_their_lams(oracle):
    cfg, suite, table = oracle
    (trained,) = table["sbf"]["settings"]
    setting = suite.setting(trained["setting"])
    assert suite.is_training(setting) and table["sbf"]["lams"] == [0.2, 0.8]
    per_lam = []
    for lam in (0.2, 0.8):
        means = _tuning_means(cfg, suite, setting, keep_lam=True, lam=lam)
        statics = [m for m, family in means.values() if family == "static"]
        lo, hi = min(statics), max(statics)
        per_lam.append({k: (m - lo) / (hi - lo) for k, (m, _) in means.items()})
    mean = {k: (per_lam[0][k] + per_lam[1][k]) / 2 for k in per_lam[0]}
    assert table["sbf"]["rule"] == max(mean, key=mean.get)
    assert table["sbf"]["ranking"][0]["grid_normalised_mean"] == pytest.approx(max(mean.values()))
    assert all(r["sbf"] == table["sbf"]["rule"] for r in table["rows"])
    # the reward-scale diagnostic: the static rows' normalised_bpb range at lam 0.5, then with the extremes
    # widened by the uniform, natural and replay 0.5 rows
    run = run_audit(_audit_cfg(cfg, suite, setting, keep_lam=True))
    fields = {}
    for s in run.schedules:
        if s.family == "static":
            ev = EvalResult.from_json(run.store.get(s.key, cfg.tune_seeds[0]).final)
            fields[rule_spec(s)] = {f: ev.field_bpb(run.space, f) for f in ("source", "target")}
    ref = run.reference.to_json()
    best = {f: min([ref["best"]["bpb"][f]] + [fields[a][f] for a in ("uniform", "natural", "replay:0.5")])
            for f in ("source", "target")}
    worst = {f: max([ref["worst"]["bpb"][f]] + [fields[a][f] for a in ("uniform", "natural", "replay:0.5")])
             for f in ("source", "target")}
    for name, b, w in (("reference", ref["best"]["bpb"], ref["worst"]["bpb"]), ("anchored", best, worst)):
        scores = [sum(0.5 * (w[f] - v[f]) / (w[f] - b[f]) for f in v) for v in fields.values()]
        assert trained["reward_scale"][name] == pytest.approx([min(scores), max(scores)])


def test_probe_then_commit_is_fitted_on_the_training_settings_and_scored(oracle):
    from mixagent.env.environment import MixingEnv
    from mixagent.env.setting import Setting
    from mixagent.policies.probe_commit import ProbeCommitModel, probe_features, stated_features
    from mixagent.policies.registry import PolicyContext, build_policy

    cfg, suite, table = oracle
    ptc = table["probe_commit"]
    model = ProbeCommitModel.load(ptc["path"])
    assert ptc["spec"] == f"probe_commit:model={ptc['path']}" and ptc["path"].endswith("tiny-oracle/probe_commit.json")
    assert model.probe == table["sbf"]["rule"] and model.rows == 2  # one training setting x two lams
    assert len(model.rules) == 7 and ptc["loso"]["rows"] == 0  # one setting: nothing to hold out
    # the probe segment, recomputed: SBF's first mixture for one segment on the tuning seed
    (trained,) = table["sbf"]["settings"]
    setting = Setting(**trained["setting"])
    env = MixingEnv(setting.spec(suite, keep_lam=True))
    obs, _ = env.reset(seed=cfg.tune_seeds[0])
    policy = build_policy(model.probe, PolicyContext(natural=env.natural.to_mapping()))
    policy.reset(env.space)
    obs, *_ = env.step_weights(policy.act(obs))
    probe = probe_features(obs, env.space)
    standardised_lam = (np.array([0.2, 0.8]) - model.mean[0]) / model.scale[0]
    assert model.mean[6:] == pytest.approx(probe) and standardised_lam == pytest.approx([-1.0, 1.0])
    assert model.mean[:6] == pytest.approx(stated_features({**setting.stated(), "lam": 0.5}))
    row = table["rows"][0]
    assert row["probe_commit"] == ptc["spec"] and len(row["scores"][ptc["spec"]]) == 3


def test_the_table_is_written_and_bound_to_its_suite(oracle, tmp_path):
    cfg, suite, table = oracle
    out = cfg_out(cfg, suite)
    assert (out / "gaps.png").stat().st_size > 1000 and "| scarce |" in (out / "table.md").read_text()
    assert load_oracle_table(out, suite)["rows"][0]["setting"] == "scarce"
    def variant(**changes):
        path = tmp_path / f"suite-{len(list(tmp_path.glob('suite-*')))}.yaml"
        path.write_text(yaml.safe_dump({**SUITE, **changes}))
        return load_suite(path)

    with pytest.raises(ConfigError, match="is of suite tiny-oracle .* training distribution .* rerun mixagent"):
        load_oracle_table(out, variant(train={"target_tokens": [8192], "lam": [0.2, 0.5]}))
    assert table["complete"] and table["pending"] == []
    assert "anchors" not in table["config"]  # tables written before the field keep their rows (_earlier_rows)
    # widening the held-out list keeps the finished rows; the new setting is pending
    wider = variant(held_out={**SUITE["held_out"], "richer": {"target_tokens": 16384}})
    with pytest.raises(ConfigError, match="unfinished: settings \\['richer'\\] still to run"):
        load_oracle_table(out, wider)
    loaded = load_oracle_table(out, wider, partial=True)
    assert [r["setting"] for r in loaded["rows"]] == ["scarce"] and loaded["pending"] == ["richer"]
    assert not loaded["complete"] and loaded["stale"] == []
    # a held-out setting declared otherwise now: its row is stale, the setting pending again
    redeclared = variant(held_out={"scarce": {"target_tokens": 4096}})
    with pytest.raises(ConfigError, match="\\['scarce'\\] still to run \\(\\['scarce'\\] are declared otherwise"):
        load_oracle_table(out, redeclared)
    assert load_oracle_table(out, redeclared, partial=True)["rows"] == []
    # a table written before training_hash was recorded: matched by its suite cut down to its own settings
    old = tmp_path / "old-table.json"
    old.write_text(json.dumps({k: v for k, v in json.loads((out / "table.json").read_text()).items()
                               if k != "training_hash"}))
    assert [r["setting"] for r in load_oracle_table(old, wider, partial=True)["rows"]] == ["scarce"]
    with pytest.raises(ConfigError, match="is of suite tiny-oracle"):
        load_oracle_table(old, variant(train={"target_tokens": [8192], "lam": [0.2, 0.5]},
                                       held_out=wider.held_out))
    # a run over other settings keeps this table's valid rows: same suite, seeds, gate, SBF and rival
    from mixagent.study.oracle_table import _earlier_rows

    sbf = {"rule": table["sbf"]["rule"]}
    assert [r["setting"] for r in _earlier_rows(out, suite, cfg, sbf, table["probe_commit"], skip=[])] == ["scarce"]
    assert _earlier_rows(out, suite, cfg, sbf, table["probe_commit"], skip=["scarce"]) == []
    assert _earlier_rows(out, suite, cfg, {"rule": "uniform"}, table["probe_commit"], skip=[]) == [] or \
        table["sbf"]["rule"] == "uniform"
    assert _earlier_rows(out, suite, dataclasses.replace(cfg, gate=2.0), sbf, table["probe_commit"], skip=[]) == []
    assert [r["setting"] for r in _earlier_rows(out, wider, cfg, sbf, table["probe_commit"], skip=[])] == ["scarce"]
    assert _earlier_rows(out, redeclared, cfg, sbf, table["probe_commit"], skip=[]) == []


def test_an_anchored_table_rescores_the_same_runs_on_the_widened_scale(oracle):
    # reward.anchors' scale (what agent v2 trains on): the same tuning rows and held-out episodes, each setting's
    # extremes widened by the anchors run on its reference seeds (one extra run per anchor and setting, cached
    # beside its audit), and every row rescored from raw evaluations; the table goes to anchored/
    from mixagent.env.references import widened
    from mixagent.study import oracle_table
    from mixagent.study.oracle_table import heldout_episodes

    cfg, suite, table = oracle
    setting = suite.held_out_settings()["scarce"]
    audit = run_audit(_audit_cfg(cfg, suite, setting, keep_lam=False))
    rows_before = audit.store.path.read_text().count("\n")
    # the held-out setting's anchor run is planted (cached: not re-run), one that beats the pair on both fields,
    # so the widened scale surely differs; the training setting's is run for real
    beats = EvalResult.from_json(audit.start.to_json())
    beats = dataclasses.replace(beats, bpb={n: v * 0.5 for n, v in beats.bpb.items()})
    (audit.store.dir / "anchors.json").write_text(json.dumps(
        {"version": oracle_table.ANCHORS_VERSION, "spec_hash": audit.spec.spec_hash(),
         "seeds": list(audit.spec.reference_seeds),
         "runs": {"uniform": [beats.to_json()]}}))
    anchored_cfg = dataclasses.replace(cfg, anchors=("uniform",))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(oracle_table, "MIN_STATIC_RHOS", len(RHOS))
        anchored = run_oracle_table(anchored_cfg, progress=False)
    assert (cfg_out(cfg, suite) / "anchored" / "table.json").is_file() and "widened by the anchors uniform" in \
        (cfg_out(cfg, suite) / "anchored" / "table.md").read_text()
    assert audit.store.path.read_text().count("\n") == rows_before  # no tuning row re-ran
    trained = run_audit(_audit_cfg(cfg, suite, suite.setting(table["sbf"]["settings"][0]["setting"]), True))
    ran = json.loads((trained.store.dir / "anchors.json").read_text())
    assert ran["seeds"] == list(trained.spec.reference_seeds) and len(ran["runs"]["uniform"]) == 1
    assert ran["version"] == oracle_table.ANCHORS_VERSION and ran["spec_hash"] == trained.spec.spec_hash()
    ev = EvalResult.from_json(ran["runs"]["uniform"][0])
    own = widened(trained.reference, {"uniform": [ev]}, trained.space)
    for f in ("source", "target"):  # the anchor lies inside its own widened scale
        assert 0.0 <= own.normalise("bpb", f, ev.field_bpb(trained.space, f)) <= 1.0
    scale = widened(audit.reference, {"uniform": [beats]}, audit.space)
    assert scale.best["bpb"] != audit.reference.best["bpb"]
    (row,) = anchored["rows"]
    tuned = {}
    for s in audit.schedules:
        rec = audit.store.get(s.key, cfg.tune_seeds[0])
        tuned[rule_spec(s)] = balanced_score(audit.spec.reward.name, setting.lam, audit.start,
                                             EvalResult.from_json(rec.final), audit.space, scale)
    assert row["oracle"] == max(tuned, key=tuned.get) and row["tuning"] == pytest.approx(tuned)
    # held-out scores: the comparison's cached episodes (the same the reference-scale table read), rescored
    eps = heldout_episodes(cfg, suite, "scarce", setting, ["uniform"], report=False)["uniform"]
    assert [e["balanced"] for e in eps] == pytest.approx(table["rows"][0]["scores"]["uniform"])
    rescored = [balanced_score(audit.spec.reward.name, setting.lam, audit.start, EvalResult.from_json(e["final"]),
                               audit.space, scale) for e in eps]
    assert row["scores"]["uniform"] == pytest.approx(rescored)
    assert rescored != pytest.approx(table["rows"][0]["scores"]["uniform"])
    # its own comparison directory (the reference-scale one keeps its reports), scored on the written scale
    anchored_compare = json.loads((cfg_out(cfg, suite) / "heldout-scarce-anchored" / "compare.json").read_text())
    assert anchored_compare["config"]["scale"].endswith("reference-anchored.json")
    assert "scale" not in json.loads((cfg_out(cfg, suite) / "heldout-scarce" / "compare.json").read_text())["config"]
    assert json.loads((audit.store.dir / "reference-anchored.json").read_text()) == scale.to_json()
    with pytest.raises(ConfigError, match="anchors: "):
        run_oracle_table(dataclasses.replace(cfg, anchors=("replay:2",)), progress=False)


def test_rule_specs_of_audit_rows():
    from mixagent.rollout.schedules import Schedule

    assert rule_spec(Schedule("x", "static", (0.3,) * 4)) == "replay:0.3"
    assert rule_spec(Schedule("x", "two_phase", (0.8, 0.8, 0.2, 0.2))) == "two_phase:rho1=0.8,rho2=0.2,switch=2"
    assert rule_spec(Schedule("x", "static", mixture="natural")) == "natural"
    assert rule_spec(Schedule("x", "other", (0.8, 0.2, 0.8, 0.2))) is None


@pytest.mark.parametrize("edits, message", [
    ({"seeds": (0, 1)}, ">= 3 distinct held-out seeds"),
    ({"tune_seeds": (0,)}, "are also held-out seeds"),
    ({"static_rhos": (0.1, 0.5, 0.9)}, ">= 9 distinct replay shares"),  # the job's minimum
    ({"settings": ("scarse",)}, "'scarse' is not a held-out setting"),
    ({"baselines": ("bogus:1",)}, "baselines: unknown policy 'bogus:1'"),
    ({"two_phase_switches": (0,)}, "two_phase_switches must be whole numbers"),
    ({"baselines": ("uniform", "regmix")}, "regmix_runs=0 with regmix among baselines"),
    ({"regmix_runs": 20}, "regmix_runs=20 but regmix is not among baselines"),
])
def test_bad_configs_are_refused(tmp_path, monkeypatch, edits, message):
    from mixagent.study import oracle_table

    monkeypatch.setattr(oracle_table, "MIN_STATIC_RHOS", 9)  # the job's own minimum, whatever the fixture set
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(SUITE, sort_keys=False))
    with pytest.raises(ConfigError, match=message):
        run_oracle_table(OracleConfig(suite=str(path), out=str(tmp_path / "out"), **edits), progress=False)


def test_target_data_efficiency_over_unique_budgets(oracle):
    import math

    from mixagent.study.compare_report import inverse_tokens
    from mixagent.study.efficiency import _fit, run_efficiency

    cfg, suite, table = oracle
    result = run_efficiency(cfg, budgets=(4096, 8192, 16384), progress=False)
    family = {int(b): v for b, v in result["family"].items()}
    assert sorted(family) == [4096, 8192, 16384] and all(len(v) == 3 for v in family.values())
    from mixagent.study.efficiency import target_pools

    unique = {b: float(target_pools(suite.setting({"target_tokens": b}).spec(suite)).sum()) for b in family}
    assert all(0.8 * b <= unique[b] <= b for b in family)  # whole windows per domain: a little under the cap
    assert result["family_unique_tokens"] == {str(b): pytest.approx(unique[b]) for b in family}
    fit = _fit([unique[b] for b in sorted(family)], [float(np.mean(family[b])) for b in sorted(family)])
    assert (result["fit"]["A"], result["fit"]["B"], result["fit"]["C"]) == pytest.approx(fit)
    row = table["rows"][0]
    assert {r["rule"] for r in result["rows"]} == set(row["scores"]) and {r["setting"] for r in result["rows"]} == \
        {"scarce"}
    from mixagent.study.oracle_table import heldout_episodes

    setting = suite.held_out_settings()["scarce"]
    episodes = heldout_episodes(cfg, suite, "scarce", setting, list(row["scores"]), report=False)
    pools = target_pools(setting.spec(suite))
    assert pools.sum() <= 4096 and (pools > 0).sum() >= 2  # the scarce cap, split over the target domains
    for r in result["rows"]:
        for e, had, eff in zip(episodes[r["rule"]], r["had"], r["efficiency"]):
            trained = np.asarray(e["weights"]).sum(axis=0) * setting.segment_tokens  # tokens per domain
            assert had == pytest.approx(sum(min(t, p) for t, p in zip(trained, pools) if p > 0))
            need = inverse_tokens(fit, e["target_bpb"])
            assert (math.isinf(eff) and math.isinf(need)) or eff == pytest.approx(need / had)
    # the fit in token units: L(D) at the family's own points
    for b in family:
        assert fit[0] / unique[b] ** fit[1] + fit[2] == pytest.approx(np.mean(family[b]), abs=0.05)
    target_only = [r for r in result["rows"] if r["rule"] == "target_only"]
    assert not target_only  # the family's own rule is not among the scored ones here
    with pytest.raises(ConfigError, match="trains 16384 target tokens"):
        run_efficiency(cfg, budgets=(4096, 8192, 32768), progress=False)
    with pytest.raises(ConfigError, match=">= 3 distinct"):
        run_efficiency(cfg, budgets=(4096, 8192), progress=False)
    with pytest.raises(ConfigError, match=r"budgets \[1024\].*axis starts at 2048; use budgets in 2048..16384"):
        run_efficiency(cfg, budgets=(1024, 4096, 8192), progress=False)


def test_the_closed_gap_of_policies_over_the_table(oracle, tmp_path):
    """``mixagent closed-gap``: rules the table scored are read from it, others run in the setting's cached
    comparison; every number follows from the held-out scores, the gate is the table's."""
    from mixagent.study.closed_gap_run import ClosedGapConfig, run_closed_gap

    cfg, suite, table = oracle
    path = tmp_path / "oracle.yaml"
    path.write_text(yaml.safe_dump(json.loads(json.dumps(dataclasses.asdict(cfg)))))
    (row,) = table["rows"]
    gap_cfg = ClosedGapConfig(oracle=str(path), policies=("probe_commit", "uniform", "replay:0.3"), name="t",
                              n_boot=500)
    report = run_closed_gap(gap_cfg, progress=False)
    res = report["result"]
    (setting,) = res["settings"]
    assert setting["gated"] == row["gated"] and setting["pooled_std"] == pytest.approx(row["pooled_std"])
    assert report["specs"]["scarce"]["probe_commit"] == row["probe_commit"]
    from mixagent.study.oracle_table import heldout_episodes

    cached = heldout_episodes(cfg, suite, "scarce", suite.held_out_settings()["scarce"], ["replay:0.3"],
                              report=False)  # run by the job, in the setting's comparison cache: read, not rerun
    by_policy = {"replay:0.3": [float(e["balanced"]) for e in cached["replay:0.3"]]}
    assert len(by_policy["replay:0.3"]) == 3 and "replay:0.3" not in row["scores"]
    sbf, oracle_row = np.mean(row["scores"][row["sbf"]]), np.mean(row["scores"][row["oracle"]])
    for entry, scores in (("probe_commit", row["scores"][row["probe_commit"]]), ("uniform", row["scores"]["uniform"]),
                          ("replay:0.3", by_policy["replay:0.3"])):
        got = setting["policies"][entry]
        assert got["mean"] == pytest.approx(np.mean(scores))
        assert got["closed_gap"] == pytest.approx((np.mean(scores) - sbf) / (oracle_row - sbf))
        assert got["harm_std"] == pytest.approx((sbf - np.mean(scores)) / row["pooled_std"])
        assert res["policies"][entry]["harmful"] == (["scarce"] if got["harm_std"] > 2 else [])
    # every policy is set against probe-then-commit, as the bar needs
    assert [(d["a"], d["b"]) for d in res["differences"]] == [("uniform", "probe_commit"), ("replay:0.3",
                                                                                            "probe_commit")]
    out = cfg_out(cfg, suite) / "closed-gap" / "t"
    assert (out / "closed_gap.png").stat().st_size > 0
    assert f"{res['gated']} of 1 held-out settings pass the gate" in (out / "closed_gap.md").read_text()
    again = run_closed_gap(gap_cfg, progress=False)  # cached: the same numbers
    assert again["result"]["settings"] == res["settings"]
    subset = run_closed_gap(dataclasses.replace(gap_cfg, settings=("scarce",), name="t-subset"), progress=False)
    assert subset["result"] == res and "**A subset**: only the held-out settings scarce" in (
        cfg_out(cfg, suite) / "closed-gap" / "t-subset" / "closed_gap.md").read_text()
    # a per-domain policy trained across settings reads observation version 2: it is scored in the same cached
    # comparison (the layout is not in the spec hash), beside the version-1 rules, on the same held-out seeds
    from mixagent.agent.train_per_domain import PerDomainBCConfig, train_per_domain

    agent = train_per_domain(PerDomainBCConfig(steps=20, hidden=8, observation=2, lams=(0.2, 0.8)),
                             tmp_path / "v2", progress=False)
    warn, clip = f"guarded:agent={agent},ood=warn", f"guarded:agent={agent},ood=clip"  # as deployed, guarded
    mixed = run_closed_gap(dataclasses.replace(gap_cfg, policies=("uniform", str(agent), warn, clip), name="t-v2"),
                           progress=False)
    got = mixed["result"]["settings"][0]["policies"]
    assert got["uniform"] == setting["policies"]["uniform"] and np.isfinite(got[str(agent)]["mean"])
    assert got[warn]["mean"] == got[str(agent)]["mean"] and np.isfinite(got[clip]["mean"])  # warn acts as it says
    v2 = heldout_episodes(cfg, suite, "scarce", suite.held_out_settings()["scarce"], [str(agent)], report=False)
    assert [e["seed"] for e in v2[str(agent)]] == list(cfg.seeds)
    assert got[str(agent)]["mean"] == pytest.approx(np.mean([e["balanced"] for e in v2[str(agent)]]))
    with pytest.raises(ConfigError, match=r"settings: \['budget-1m'\] have no row in the oracle table"):
        run_closed_gap(dataclasses.replace(gap_cfg, settings=("scarce", "budget-1m")), progress=False)
    with pytest.raises(ConfigError, match=r"differences: \['uniform', 'natural'\] must be two different entries"):
        run_closed_gap(dataclasses.replace(gap_cfg, differences=(("uniform", "natural"),)), progress=False)
    with pytest.raises(ConfigError, match="'runs/agent/nope' looks like an agent artifact directory but there is none"):
        run_closed_gap(dataclasses.replace(gap_cfg, policies=("runs/agent/nope",)), progress=False)
    with pytest.raises(ConfigError, match="policies: .*no_such_method"):
        run_closed_gap(dataclasses.replace(gap_cfg, policies=("no_such_method",)), progress=False)
    with pytest.raises(ConfigError, match=r"differs from the config its table was made with in \['seeds'\]"):
        run_closed_gap(dataclasses.replace(gap_cfg, oracle_overrides=("seeds=[0,1,2,3]",)), progress=False)
    # the bar: every line must hold; probe-then-commit's own line is itself
    bar = report["bar"]
    for entry, got in bar.items():
        s = res["policies"][entry]
        if s["mean_closed_gap"] is None:
            assert got["meets"] is None
            continue
        above = True if entry == "probe_commit" else next(d["ci95"][0] > 0 for d in res["differences"]
                                                          if d["a"] == entry)
        assert got["meets"] == bool(s["mean_closed_gap"] >= 0.5 and s["ci95"][0] > 0 and above and not s["harmful"])


def test_regmix_is_fitted_per_held_out_setting_on_its_counted_extra_runs(tmp_path, monkeypatch):
    """The scoring comparison of a setting gets RegMix's proxy runs only when RegMix is scored there."""
    from mixagent.env.setting import load_suite
    from mixagent.study import compare, oracle_table

    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(SUITE, sort_keys=False))
    suite = load_suite(path)
    seen = []

    class Stop(Exception):
        pass

    def fake_run_compare(c):
        seen.append(c.regmix_runs)
        raise Stop

    monkeypatch.setattr(compare, "run_compare", fake_run_compare)
    cfg = OracleConfig(suite=str(path), out=str(tmp_path), baselines=("uniform", "regmix"), regmix_runs=12)
    setting = suite.held_out_settings()["scarce"]
    for rules in (["uniform", "regmix"], ["uniform"]):
        with pytest.raises(Stop):
            oracle_table.heldout_episodes(cfg, suite, "scarce", setting, rules)
    assert seen == [12, 0]


def test_a_setting_whose_reference_pair_cannot_scale_is_tuned_with_anchors(tmp_path, monkeypatch):
    """Very scarce unique target data can leave target-only above source-only on the target field: the pair
    cannot normalise the reward there, so the setting is tuned (and scored) with anchors; other errors pass."""
    from mixagent.env.setting import load_suite
    from mixagent.errors import ConfigError
    from mixagent.study import audit, oracle_table

    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(SUITE, sort_keys=False))
    suite = load_suite(path)
    setting = suite.held_out_settings()["scarce"]
    cfg = OracleConfig(suite=str(path), out=str(tmp_path))
    seen = []

    class Run:
        class spec:
            class reward:
                name = "normalised_bpb"

        class reference:
            @staticmethod
            def problems(measure):
                return []

    def fake_audit(c):
        seen.append(c.env_overrides)
        if not any(o.startswith("reward.anchors") for o in c.env_overrides):
            raise ConfigError("reference runs", ["the target field's bpb is inverted"])
        return Run

    monkeypatch.setattr(audit, "run_audit", fake_audit)
    run, extra = oracle_table.tuned_run(cfg, suite, "scarce", setting)
    assert run is Run and extra == oracle_table.SCARCE_ANCHORS
    assert seen == [tuple(setting.overrides(suite, keep_lam=False)),
                    (*setting.overrides(suite, keep_lam=False), *oracle_table.SCARCE_ANCHORS)]
    seen.clear()  # a row's recorded extra_overrides: the anchored audit at once, the pair not tried again
    assert oracle_table.tuned_run(cfg, suite, "scarce", setting, extra=oracle_table.SCARCE_ANCHORS) == \
        (Run, oracle_table.SCARCE_ANCHORS)
    assert seen == [(*setting.overrides(suite, keep_lam=False), *oracle_table.SCARCE_ANCHORS)]
    monkeypatch.setattr(audit, "run_audit", lambda c: Run)  # a pair that scales: no extra overrides
    assert oracle_table.tuned_run(cfg, suite, "scarce", setting) == (Run, ())

    def other(c):
        raise ConfigError("audit", ["something else"])

    monkeypatch.setattr(audit, "run_audit", other)
    with pytest.raises(ConfigError, match="something else"):
        oracle_table.tuned_run(cfg, suite, "scarce", setting)


def test_the_anchored_scale_of_a_setting_already_scored_with_anchors(tmp_path):
    """A scarce setting's audit already has reward.anchors (SCARCE_ANCHORS): the anchored table reads its own
    reference (no anchor runs); a table asking for other anchors is refused, naming both sets."""
    from mixagent.env.spec import RewardSpec
    from mixagent.study import oracle_table

    class Run:
        reference = object()

        class spec:
            reward = RewardSpec(name="normalised_bpb", anchors=("uniform", "replay:0.50", "natural"))

        class store:
            dir = tmp_path

    anchored = OracleConfig(anchors=("replay:0.5", "uniform", "natural"))  # any spelling or order
    assert oracle_table.setting_scale(anchored, Run) is Run.reference
    assert oracle_table.setting_scale(OracleConfig(), Run) is Run.reference  # the reference-scale table
    with pytest.raises(ConfigError, match=r"scored with reward.anchors \['natural', 'replay:0.5', 'uniform'\], the "
                                          r"table asks for \['uniform'\]"):
        oracle_table.setting_scale(OracleConfig(anchors=("uniform",)), Run)
    assert not (tmp_path / "anchors.json").exists()
