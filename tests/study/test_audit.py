"""The headroom audit on the tiny v1 spec: prefix-shared rows equal rows run alone, the oracle searches on
tuning seeds only, the report's numbers follow from the stored evaluations, resuming reruns nothing, and
bad requests are typed errors."""

import json

import numpy as np
import pytest

from mixagent.config import to_dict
from mixagent.data import load_space
from mixagent.env.evaluation import EvalResult
from mixagent.env.rewards import balanced_score
from mixagent.env.spec import load_spec
from mixagent.errors import ConfigError
from mixagent.paths import ENVS_DIR
from mixagent.rollout import seeds as rollout_seeds
from mixagent.rollout.runner import Episode, Runner, RunnerSetup, ScheduleTree
from mixagent.rollout.schedules import Schedule
from mixagent.study import audit as audit_mod
from mixagent.study.audit import AuditConfig, build_schedules, run_audit
from mixagent.study.audit_report import make_report

SPEC = ENVS_DIR / "tiny-cpt.yaml"


def _cfg(**kw):
    base = dict(env=str(SPEC), seeds=(0, 1, 2), tune_seeds=(100,), static_rhos=(0.0, 0.5, 1.0),
                two_phase_switches=(2,), two_phase_rhos=(0.5, 1.0), decay_stable_rhos=(1.0,), decay_rhos=(0.0,),
                replay_first_steps=(1,), replay_first_rhos=(0.5,), oracle_trials=3, launcher="inline")
    return AuditConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def audit(tmp_path_factory):
    root = tmp_path_factory.mktemp("headroom")
    out = run_audit(_cfg(), root=root)
    make_report(out)
    return root, out.dir, json.loads((out.dir / "report.json").read_text())


def test_grid_families_and_decay_step():
    spec = load_spec(SPEC)
    rows = build_schedules(_cfg(), spec)
    fams = {r.family for r in rows}
    assert fams == {"static", "two_phase", "decay", "replay_first"}
    assert len({r.key for r in rows}) == len(rows)
    decay = [r for r in rows if r.family == "decay"]
    assert audit_mod.decay_step(spec) == 3 and decay[0].rhos == (1.0, 1.0, 1.0, 0.0)
    with pytest.raises(ConfigError, match="switch steps must be in 1..3"):
        build_schedules(_cfg(two_phase_switches=(4,)), spec)


def test_report_rows_follow_from_the_stored_evaluations(audit):
    root, out, report = audit
    spec = load_spec(SPEC)
    space = load_space(spec.space_path())
    assert report["env_id"] == "mixagent/tiny-cpt-v1" and report["reward"] == "normalised_bpb"
    leaves = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    start = EvalResult.from_json(json.loads((out / "start.json").read_text())["eval"])
    from mixagent.env.rewards import Reference

    ref = Reference.from_json(report["reference"])
    rows = {r["label"]: r for r in report["rows"]}
    assert len(rows) == len(build_schedules(_cfg(), spec)) + 1  # + the oracle
    for row in rows.values():
        assert row["seeds"] == [0, 1, 2]
        vals = [balanced_score("normalised_bpb", 0.5, start, EvalResult.from_json(leaf["eval"]), space, ref)
                for leaf in leaves if leaf["key"] == row["key"] and leaf["trial"] is None]
        assert row["rewards"]["normalised_bpb"]["values"] == pytest.approx(vals)
        assert row["rewards"]["normalised_bpb"]["std"] == pytest.approx(np.std(vals, ddof=1))
    s = report["summary"]["normalised_bpb"]
    static = [r for r in rows.values() if r["family"] == "static"]
    assert s["best_static"]["mean"] == max(r["rewards"]["normalised_bpb"]["mean"] for r in static)
    pooled = np.sqrt(np.mean([r["rewards"]["normalised_bpb"]["std"] ** 2 for r in rows.values()]))
    assert s["pooled_std"] == pytest.approx(pooled)
    gap = s["best_schedule"]["mean"] - s["best_static"]["mean"]
    assert s["best_schedule"]["gap_in_std"] == pytest.approx(gap / pooled)
    means = [r["rewards"]["normalised_bpb"]["mean"] for r in static]
    assert s["static_spread"] == pytest.approx(max(means) - min(means))
    # static rho=1 on held-out seeds is close to the source-only reference: s_source near 1, s_target near 0
    assert abs(rows["static rho=1"]["source_norm_bpb"] - 1) < 0.2 and abs(rows["static rho=1"]["target_norm_bpb"]) < 0.3
    noise = report["item_noise"]["normalised_bpb"]
    assert noise["score_std"] > 0 and noise["gap_std"] > 0 and noise["items"]["target"] > 0
    assert report["item_noise"]["normalised_score"]["score_std"] > 0
    for name in ("static.png", "schedules.png", "report.md"):
        assert (out / name).stat().st_size > 1000


def test_oracle_tunes_on_tuning_seeds_only(audit):
    _, out, report = audit
    oracle = json.loads((out / "oracle.json").read_text())
    leaves = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    trials = [leaf for leaf in leaves if leaf["trial"] is not None]
    assert {leaf["seed"] for leaf in trials} == {100} and len(trials) == 3 == oracle["trials"]
    assert trials[0]["key"] == "rho:" + ",".join(["0.7500"] * 4)  # the fixed first trial
    assert [leaf["seed"] for leaf in leaves if leaf["key"] == oracle["key"] and leaf["trial"] is None] == [0, 1, 2]
    assert oracle["tune_value"] == max(
        o for o in [_value(leaf, report) for leaf in trials])


def _value(leaf, report):
    spec = load_spec(SPEC)
    from mixagent.env.rewards import Reference

    return balanced_score("normalised_bpb", 0.5, None, EvalResult.from_json(leaf["eval"]),
                          load_space(spec.space_path()), Reference.from_json(report["reference"]))


def test_forked_rows_equal_rows_run_alone(audit):
    _, out, _ = audit
    leaves = {(leaf["seed"], leaf["key"]): leaf for leaf in
              (json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()) if leaf["trial"] is None}
    runner = RunnerSetup(to_dict(load_spec(SPEC)), 2).make_runner()  # the one runner every job uses
    alone = Schedule("two-phase", "two_phase", (1.0, 1.0, 0.5, 0.5))
    got = [e.record for e in runner.run(ScheduleTree(1, (alone,))) if isinstance(e, Episode)]
    assert got[0].final == leaves[(1, alone.key)]["eval"]  # it was forked from static rho=1 in the audit
    assert got[0].weights.shape == (4, runner.env.space.k) and got[0].extra["trial"] is None


def test_resume_reruns_nothing(audit, monkeypatch):
    root, out, report = audit
    before = (out / "results.jsonl").read_text()
    recorded = (out / "audit.json").read_bytes()
    monkeypatch.setattr(Runner, "run", lambda *a, **k: pytest.fail("a finished leaf was rerun"))
    make_report(run_audit(_cfg(workers=1), root=root))
    assert (out / "results.jsonl").read_text() == before
    assert (out / "audit.json").read_bytes() == recorded  # how it ran (workers) does not rewrite the record
    assert json.loads((out / "report.json").read_text())["summary"] == report["summary"]


def test_bad_requests_are_typed_errors(audit, tmp_path):
    root, out, _ = audit
    with pytest.raises(ConfigError, match="unknown env 'mixagent/tiny-cpt-v9'"):
        run_audit(_cfg(env="mixagent/tiny-cpt-v9"), root=tmp_path)
    assert rollout_seeds.resolve_env("mixagent/tiny-cpt-v1") == SPEC
    with pytest.raises(ConfigError, match="static_rhos is empty"):
        run_audit(_cfg(static_rhos=()), root=tmp_path)
    with pytest.raises(ConfigError, match="also held-out seeds"):
        run_audit(_cfg(tune_seeds=(1,)), root=tmp_path)
    clash = f"reference_seeds=[{rollout_seeds.episode_seed_of(1)}]"
    with pytest.raises(ConfigError, match=r"seeds \[1\] train on the data order of the spec's reference runs"):
        run_audit(_cfg(env_overrides=(clash,)), root=tmp_path)
    head = json.loads((out / "spec.json").read_text())
    other = tmp_path / "other" / out.parent.name / out.name
    other.mkdir(parents=True)
    (other / "spec.json").write_text(json.dumps({**head, "spec_hash": "feedfacefeedface"}))
    with pytest.raises(ConfigError, match="cached for spec hash 'feedfacefeedface'"):
        run_audit(_cfg(), root=tmp_path / "other")


def test_a_lam_sibling_adopts_the_grid_rows_and_reference_runs(audit, tmp_path, monkeypatch):
    """The same spec at another lam: its audit starts from the sibling's grid rows (not its oracle trials: the
    search follows the reward), base evaluation, reference and anchor runs, relabelled; nothing is run."""
    import shutil

    from mixagent.env import references

    root, out, _ = audit
    copy = tmp_path / "root"
    shutil.copytree(root, copy)
    sibling = copy / out.parent.name / out.name
    (sibling / "anchors.json").write_text(json.dumps({"version": 1, "spec_hash": out.name, "seeds": [9001],
                                                      "runs": {}}))
    monkeypatch.setattr(Runner, "run", lambda *a, **k: pytest.fail("a row of the lam sibling was rerun"))
    monkeypatch.setattr(references, "run_static", lambda *a, **k: pytest.fail("a reference run was rerun"))
    run = run_audit(_cfg(env_overrides=("reward.lam=0.9",), oracle_trials=0), root=copy)
    assert run.spec.reward.lam == 0.9 and run.dir.name == run.spec.spec_hash() != out.name
    rows = [json.loads(x) for x in (run.dir / "results.jsonl").read_text().splitlines()]
    theirs = [json.loads(x) for x in (sibling / "results.jsonl").read_text().splitlines()]
    grid = {s.key for s in run.schedules}
    assert rows == [r for r in theirs if r["trial"] is None and r["key"] in grid]  # not its oracle's rows
    assert len(rows) == len(grid) * 3 < len(theirs)
    assert json.loads((run.dir / "adopted.json").read_text()) == {
        "from": out.name, "lam": 0.5, "rows": len(rows), "files": ["reference.json", "anchors.json", "results.jsonl"],
        "why": json.loads((run.dir / "adopted.json").read_text())["why"]}
    mine, sib = (json.loads((d / "reference.json").read_text()) for d in (run.dir, sibling))
    assert mine == {**sib, "spec_hash": run.spec.spec_hash()} and run.reference.spec_hash == run.spec.spec_hash()
    assert json.loads((run.dir / "anchors.json").read_text())["spec_hash"] == run.spec.spec_hash()
    # a spec that differs in more than lam adopts nothing (it would run: stopped at the first row here)
    with pytest.raises(pytest.fail.Exception, match="rerun"):
        run_audit(_cfg(env_overrides=("reward.lam=0.9", "target_tokens=4096"), oracle_trials=0), root=copy)
    # nor does a sibling that started from another base checkpoint
    other = tmp_path / "other-base"
    shutil.copytree(root, other)
    head_path = other / out.parent.name / out.name / "start.json"
    head_path.write_text(json.dumps({**json.loads(head_path.read_text()), "base": "another-checkpoint"}))
    with pytest.raises(pytest.fail.Exception, match="rerun"):
        run_audit(_cfg(env_overrides=("reward.lam=0.9",), oracle_trials=0), root=other)
    assert [p.parent for p in (*copy.glob("*/*/adopted.json"), *other.glob("*/*/adopted.json"))] == [run.dir]


def test_seeds_used_by_collection_are_refused(tmp_path):
    spec = load_spec(SPEC)
    run = tmp_path / "mine"
    run.mkdir()
    (run / "meta.json").write_text(json.dumps({"env": {"spec_hash": spec.spec_hash()}}))
    (run / "t00000_0.jsonl").write_text(json.dumps({"type": "header", "episode_seed": 1}) + "\n{}\n")
    other = tmp_path / "other"
    other.mkdir()
    (other / "meta.json").write_text(json.dumps({"env": {"spec_hash": "another"}}))
    (other / "t00000_0.jsonl").write_text(json.dumps({"episode_seed": 2}) + "\n")
    assert rollout_seeds.collection_seeds(spec.spec_hash(), tmp_path) == {1}
    # a run collected on the same runs under another lam (rewards are relabelled offline): its seeds count too
    lam = load_spec(SPEC, ["reward.lam=0.9"])
    assert lam.spec_hash() != spec.spec_hash()
    relabelled = tmp_path / "lam"
    relabelled.mkdir()
    (relabelled / "meta.json").write_text(json.dumps({"env": {"spec_hash": lam.spec_hash(), "spec": lam.mdp_dict()}}))
    (relabelled / "t00000_0.jsonl").write_text(json.dumps({"episode_seed": 5}) + "\n")
    assert rollout_seeds.collection_seeds(spec.spec_hash(), tmp_path) == {1}
    runs = rollout_seeds.run_key(spec.mdp_dict())
    assert runs == rollout_seeds.run_key(lam.mdp_dict())
    assert rollout_seeds.collection_seeds(spec.spec_hash(), tmp_path, runs=runs) == {1, 5}
    other_runs = rollout_seeds.run_key(load_spec(SPEC, ["optim.decay_fraction=0.5"]).mdp_dict())
    assert rollout_seeds.collection_seeds("none", tmp_path, runs=other_runs) == set()


def test_audit_refuses_seeds_collection_used(monkeypatch, tmp_path):
    monkeypatch.setattr(audit_mod, "collection_seeds", lambda h, root=None, runs=None: {1, 7})
    with pytest.raises(ConfigError, match=r"seeds \[1\] were used by trajectory collection"):
        run_audit(_cfg(), root=tmp_path)


def test_env_overrides_make_a_design_variant(audit, tmp_path):
    from mixagent.study.audit import AuditStore

    spec = load_spec(SPEC, ["optim.decay_fraction=0.5"])
    assert spec.spec_hash() != load_spec(SPEC).spec_hash()
    decay = [r for r in build_schedules(_cfg(), spec) if r.family == "decay"]
    assert audit_mod.decay_step(spec) == 2 and decay[0].rhos == (1.0, 1.0, 0.0, 0.0)
    store = AuditStore(tmp_path, spec)
    assert store.dir.name == spec.spec_hash()


def test_report_only_rebuilds_the_report_without_a_model(audit, monkeypatch):
    root, out, report = audit
    import mixagent.env.backends as backends

    monkeypatch.setattr(backends, "make_backend", lambda *a: pytest.fail("report-only built a backend"))
    (out / "report.json").unlink()
    make_report(run_audit(_cfg(), root=root, report_only=True))
    assert json.loads((out / "report.json").read_text())["summary"] == report["summary"]
    with pytest.raises(ConfigError, match="no finished audit"):
        run_audit(_cfg(), root=root / "empty", report_only=True)
    assert not (root / "empty").exists()  # a failed report-only writes nothing
    other = run_audit(_cfg(seeds=(1, 2), oracle_trials=0), root=root, report_only=True)
    assert other.cfg.seeds == (0, 1, 2) and other.cfg.oracle_trials == 3  # the audit's own config, not the flags


def test_identity_resample_reproduces_the_stored_evaluation(audit):
    from mixagent.study.audit_report import _resampled

    _, out, _ = audit
    spec = load_spec(SPEC)
    space = load_space(spec.space_path())
    leaf = json.loads((out / "results.jsonl").read_text().splitlines()[0])
    owner = np.asarray(leaf["items"]["windows"][2]).astype(int)
    idx = {"windows": [np.flatnonzero(owner == d) for d in range(space.k)],
           **{f: np.arange(len(leaf["items"][f][0])) for f in ("source", "target")}}
    again = _resampled(EvalResult.from_json(leaf["eval"]), leaf["items"], idx, space)
    for name, v in leaf["eval"]["bpb"].items():
        assert again.bpb[name] == pytest.approx(v, rel=1e-5)  # items are stored to 6 decimals
    for f in ("source", "target"):
        assert again.scores[f] == pytest.approx(leaf["eval"]["scores"][f], rel=1e-5)


def test_decay_step_follows_the_learning_rate_schedule():
    from mixagent.env.proxy import lr_at

    for df in (0.25, 0.35, 0.5, 0.1):
        spec = load_spec(SPEC, [f"optim.decay_fraction={df}"])
        per = spec.segment_tokens // (spec.optim.micro_batch * spec.base_config().seq_len)
        total = per * spec.steps
        peak = spec.optim.lr
        warm = max(1, int(total * spec.optim.warmup_fraction))
        first = min(i for i in range(warm, total) if lr_at(i, total, spec.optim) < peak)
        assert audit_mod.decay_step(spec) == min(spec.steps - 1, max(1, first // per)), df
