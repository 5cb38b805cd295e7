"""The comparison job on the tiny v1 spec: its table follows from the stored episodes, DoReMi reads the
reference run of the tuning seed, the audit's rows become labelled oracles, a rerun runs nothing, the
report and plots are written, and bad requests are typed errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mixagent.domains import Domain, DomainSpace
from mixagent.env.evaluation import EvalResult
from mixagent.env.rewards import balanced_score
from mixagent.errors import ConfigError
from mixagent.paths import ENVS_DIR
from mixagent.policies.artifact import ArtifactMismatchError, random_artifact
from mixagent.rollout import engine as episodes_mod
from mixagent.study import compare as compare_mod
from mixagent.study.compare import CompareConfig, run_compare
from mixagent.study.compare_report import make_compare_report, rank_table

SPEC = ENVS_DIR / "tiny-cpt.yaml"


def _cfg(root, **kw):
    base = dict(name="tiny", env=str(SPEC), policies=("natural", "doremi", "decay_switch"), seeds=(0, 1, 2),
                tune_seeds=(100,), regmix_runs=0, efficiency_steps=(2, 3), launcher="inline", out=str(root),
                audit_root=str(root / "audits"))
    return CompareConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    run = run_compare(_cfg(root))
    # an audit of the same spec whose rows are this run's episodes: "natural" (static) and decay_switch's
    # schedule, so the oracle rows must reproduce those policies' scores
    audit = root / "audits" / "tiny-cpt-v1" / run.spec.spec_hash()
    audit.mkdir(parents=True)
    (audit / "start.json").write_text(json.dumps({"natural": run.natural.tolist(), "eval": run.start.to_json()}))
    rhos = [float(np.round(np.asarray(w)[run.space.field_mask("source")].sum(), 4))
            for w in run.episodes["decay_switch"][0]["weights"]]
    schedule_key = "rho:" + ",".join(f"{r:.4f}" for r in rhos)
    with (audit / "results.jsonl").open("w") as f:
        for key, label in (("natural", "natural"), (schedule_key, "decay_switch")):
            for ep in run.episodes[label]:
                f.write(json.dumps({"seed": ep["seed"], "key": key, "eval": ep["final"], "items": {},
                                    "seconds": 0.0, "trial": None}) + "\n")
    run = run_compare(_cfg(root))
    table = make_compare_report(run)
    return root, run, table, schedule_key


def test_table_follows_from_the_stored_episodes(compared):
    _, run, table, _ = compared
    rows = {r["policy"]: r for r in table["rows"]}
    spec = run.spec
    for label in ("natural", "doremi", "decay_switch"):
        eps = run.episodes[label]
        recomputed = [balanced_score(spec.reward.name, spec.reward.lam, EvalResult.from_json(e["start"]),
                                     EvalResult.from_json(e["final"]), run.space, run.reference) for e in eps]
        assert rows[label]["scores"] == pytest.approx(recomputed, abs=1e-9)
        assert rows[label]["mean"] == pytest.approx(np.mean(recomputed))
        assert rows[label]["std"] == pytest.approx(np.std(recomputed, ddof=1))
        assert len(eps[0]["weights"]) == spec.steps and len(eps[0]["evals"]) == spec.steps
    pooled = np.sqrt(np.mean([rows[n]["std"] ** 2 for n in ("natural", "doremi", "decay_switch")]))
    assert table["pooled_seed_std"] == pytest.approx(pooled)
    best = max(("natural", "doremi", "decay_switch"), key=lambda n: rows[n]["mean"])
    assert rows[best]["rank"] == 1 and rows[best]["gap_to_best"] == 0
    # decay_switch: 0.5 replay until the LR decays (the last of 4 steps on the tiny spec), then 0.25
    sw = np.asarray(run.episodes["decay_switch"][0]["weights"])[:, run.space.field_mask("source")].sum(axis=1)
    assert sw == pytest.approx([0.5, 0.5, 0.5, 0.25], abs=1e-5)


def test_doremi_reads_the_tuning_seeds_reference_run(compared):
    root, run, table, _ = compared
    assert run.extra_episodes == {"doremi": 1}
    ref = json.loads(next((root / "cache").glob("*/*/natural/100.json")).read_text())
    assert ref["seed"] == 100 and len(ref["evals"]) == run.spec.steps  # the natural run on the tuning seed
    start = EvalResult.from_json(run.episodes["doremi"][0]["start"])
    assert run.episodes["doremi"][0]["weights"][0] == pytest.approx([1 / run.space.k] * run.space.k, abs=1e-6)
    assert start.bpb == EvalResult.from_json(ref["start"]).bpb  # one base model, one start


def test_oracles_come_from_the_audit_and_are_labelled(compared):
    _, _, table, schedule_key = compared
    rows = {r["policy"]: r for r in table["rows"]}
    static, schedule = rows["oracle: best static (hindsight)"], rows["oracle: best schedule (hindsight)"]
    assert static["kind"] == schedule["kind"] == "oracle" and "rank" not in static
    assert static["audit_row"] == "natural" and static["scores"] == pytest.approx(rows["natural"]["scores"])
    assert schedule["audit_row"] == schedule_key
    assert schedule["scores"] == pytest.approx(rows["decay_switch"]["scores"])


def test_data_efficiency_and_report_files(compared):
    _, run, table, _ = compared
    assert sorted(p["steps"] for p in table["target_only_family"]) == [2, 3, 4]
    fit = table["efficiency_fit"]
    assert fit is not None and fit["A"] > 0 and fit["B"] > 0
    natural = next(r for r in table["rows"] if r["policy"] == "natural")
    a, b, c = fit["A"], fit["B"], fit["C"]
    if natural["target_bpb"] > c:  # tokens target-only needs for natural's target loss / tokens natural used
        need = (a / (natural["target_bpb"] - c)) ** (1 / b)
        assert natural["efficiency"] == pytest.approx(need / natural["target_tokens"])
    for f in ("table.md", "table.json", "report.md", "mixtures.png", "dynamics.png", "front.png", "efficiency.png"):
        assert (run.dir / f).stat().st_size > 0
    assert "oracle: best schedule (hindsight)" in (run.dir / "table.md").read_text()
    assert "| natural |" in rank_table([table, table])


def test_rerun_runs_nothing(compared, monkeypatch):
    root, _, _, _ = compared

    def no_work(setup, tasks, *args, **kw):
        assert not tasks, f"a finished comparison reran {tasks}"
        return iter(())

    monkeypatch.setattr(compare_mod, "launch", no_work)
    monkeypatch.setattr(episodes_mod, "launch", no_work)
    run = run_compare(_cfg(root))
    assert set(run.episodes) == {"natural", "doremi", "decay_switch"}


def test_online_evaluation_reuses_the_comparisons_episodes(compared, tmp_path, monkeypatch):
    """The agent's online evaluation runs on the comparison's engine: the same spec, seed and policy
    identity (a method keyed by its fingerprint, with the env's batches per segment) is the same stored
    episode, read from the comparison's root without running anything."""
    from mixagent.agent.evaluate import evaluate_online
    from mixagent.config import to_dict

    root, run, _, _ = compared

    def no_work(setup, tasks, *args, **kw):
        assert not tasks, f"the online evaluation reran {tasks}"
        return iter(())

    monkeypatch.setattr(episodes_mod, "launch", no_work)
    got = evaluate_online(to_dict(run.spec), run.spec.spec_hash(), {"rule": "decay_switch", "nat": "natural"},
                          [0, 1, 2], tmp_path / "mine", launcher="inline", progress=False, read_also=(root,))
    assert got["rule"] == run.episodes["decay_switch"] and got["nat"] == run.episodes["natural"]
    assert not (tmp_path / "mine").exists()  # nothing written: read only from the comparison's cache
    monkeypatch.undo()
    fresh = evaluate_online(to_dict(run.spec), run.spec.spec_hash(), {"rule": "decay_switch"}, [0], tmp_path / "mine",
                            launcher="inline", progress=False)  # no reuse: rerun, and it reproduces the episode
    assert fresh["rule"][0]["weights"] == run.episodes["decay_switch"][0]["weights"]
    assert fresh["rule"][0]["balanced"] == pytest.approx(run.episodes["decay_switch"][0]["balanced"], abs=1e-9)


def test_bad_requests_are_typed_errors(compared, tmp_path):
    root, _, _, _ = compared
    with pytest.raises(ConfigError, match="did you mean 'doremi'"):
        run_compare(_cfg(tmp_path, policies=("doremy",)))
    with pytest.raises(ConfigError, match="also evaluation seeds"):
        run_compare(_cfg(tmp_path, tune_seeds=(0,)))
    with pytest.raises(ConfigError, match="needs at least 10 proxy runs"):
        run_compare(_cfg(root, policies=("natural", "regmix"), regmix_runs=3))
    with pytest.raises(ConfigError, match="budgets of the target-only family must be in 1..3"):
        run_compare(_cfg(tmp_path, efficiency_steps=(2, 4)))
    with pytest.raises(ConfigError, match="needs at least 2 budgets"):
        run_compare(_cfg(tmp_path, efficiency_steps=(2,)))
    with pytest.raises(ConfigError, match="'replay:7' needs a rho"):
        run_compare(_cfg(tmp_path, policies=("replay:7",)))
    other = DomainSpace("other", [Domain("wiki", "source", ["wiki"]), Domain("math", "target", ["math"])])
    art = random_artifact(tmp_path / "other-space", other)
    with pytest.raises(ArtifactMismatchError, match="domain space"):
        run_compare(_cfg(tmp_path, policies=("natural", str(art))))
    with pytest.raises(ArtifactMismatchError, match="domain space"):  # the agent behind a guard is checked too
        run_compare(_cfg(tmp_path, policies=("natural", f"guarded:agent={art},ood=warn")))
    assert not list((tmp_path / "cache").glob("*/*/*/*.json"))  # refused before any episode


def test_cli_takes_overrides_after_flags(tmp_path, capsys):
    from mixagent.study.__main__ import _flags_first, main

    assert _flags_first(["compare", "--seeds", "0", "1", "regmix_runs=3", "--env-set", "steps=4", "x.y=[]"]) == [
        "compare", "--seeds", "0", "1", "--env-set", "steps=4", "--", "regmix_runs=3", "x.y=[]"]
    code = main(["compare", "--env", str(SPEC), "--seeds", "0", "1", "2", "regmix_runs=3", "--policies",
                 "natural,regmix", "--out", str(tmp_path), "efficiency_steps=[]"])
    assert code == 2
    assert "RegMix needs at least 10 proxy runs" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # refused before writing anything


def test_equal_tuning_budget_picks_the_best_grid_point_on_the_tuning_seeds(compared):
    root, _, _, _ = compared
    tuning = {"doremi": {"eta": [0.1, 10.0]}, "replay": {"rho": [0.3, 0.7]}}
    run = run_compare(_cfg(root, policies=("natural", "doremi", "replay:0.5"), efficiency_steps=(), tuning=tuning))
    grids = (("doremi", ["doremi:eta=0.1", "doremi:eta=10.0"]), ("replay:0.5", ["replay:0.3", "replay:0.7"]))
    for label, specs in grids:
        t = run.tuning[label]
        assert list(t["scores"]) == specs and t["tune_seeds"] == [100]
        assert t["chosen"] == max(specs, key=lambda s: t["scores"][s]) == run.labels[label]
        name = t["chosen"].partition(":")[0]  # cached under <name>@<digest of its hyperparameters and context>
        stored = [json.loads(f.read_text())["balanced"] for f in (root / "cache").glob(f"*/*/{name}*/100.json")]
        assert t["scores"][t["chosen"]] in stored  # scored on the tuning seed, not on 0-2
    assert run.extra_episodes == {"doremi": 1 + 2, "replay:0.5": 2}
    assert json.loads((run.dir / "tuning.json").read_text()) == run.tuning
    table = make_compare_report(run)
    rows = {r["policy"]: r for r in table["rows"]}
    assert rows["natural"]["tuning"] == "—" and rows["doremi"]["tuning"].endswith("(best of 2)")
    assert " tuned |" in (run.dir / "table.md").read_text()
    with pytest.raises(ConfigError, match="same tuning budget"):
        run_compare(_cfg(root, policies=("doremi", "replay:0.5"), tuning={**tuning, "replay": {"rho": [0.3]}}))
    with pytest.raises(ConfigError, match="has no hyperparameters"):
        run_compare(_cfg(root, policies=("doremi",), tuning={"doremi": {"step": [1]}}))
    with pytest.raises(ConfigError, match="did you mean 'doremi'"):
        run_compare(_cfg(root, policies=("doremi",), tuning={"doremy": {"eta": [1]}}))
    with pytest.raises(ConfigError, match="eta must be > 0"):  # every grid point builds, before any episode
        run_compare(_cfg(root, policies=("doremi",), tuning={"doremi": {"eta": [-1.0, 1.0]}}))
    with pytest.raises(ConfigError, match="repeats a point"):
        run_compare(_cfg(root, policies=("doremi",), tuning={"doremi": {"eta": [1, 1.0]}}))
    with pytest.raises(ConfigError, match="appear more than once"):
        run_compare(_cfg(root, policies=("replay:0.3", "replay:0.5"), tuning={"replay": {"rho": [0.3, 0.7]}}))
    assert compare_mod.tuning_candidates("doremi:reference_at=progress", {"eta": [0.1, 1.0]}) == [
        "doremi:eta=0.1,reference_at=progress", "doremi:eta=1.0,reference_at=progress"]


def test_a_row_that_fell_back_is_marked(compared, tmp_path):
    """A policy that could not decide kept its mixture: its row is not the method as designed, and says so."""
    import dataclasses

    _, run, _, _ = compared
    episodes = dict(run.episodes)
    episodes["doremi"] = [{**e, "policy": {"fallbacks": len(e["weights"])}} for e in episodes["doremi"]]
    table = make_compare_report(dataclasses.replace(run, episodes=episodes, dir=tmp_path))
    rows = {r["policy"]: r for r in table["rows"]}
    assert rows["doremi"]["fallbacks"] == {"decisions": 12, "of": 12} and "fallbacks" not in rows["natural"]
    assert "doremi (**fell back** at 12 of 12 decisions)" in (tmp_path / "table.md").read_text()
    assert "Rows that fell back" in (tmp_path / "report.md").read_text()


def test_a_scale_rescores_the_stored_episodes_without_running_them(compared, tmp_path, monkeypatch):
    # another reward scale (e.g. the extremes widened by anchors): every stored episode's balanced scores and
    # return are recomputed from its raw evaluations, nothing is rerun, the env's own-scale episodes are kept
    from mixagent.env.rewards import Reference

    root, run, _, _ = compared
    ref = run.reference
    wider = Reference({m: {f: v - 0.5 if m == "bpb" else v + 0.1 for f, v in ref.best[m].items()} for m in ref.best},
                      {m: {f: v + 0.5 if m == "bpb" else v - 0.1 for f, v in ref.worst[m].items()} for m in ref.worst},
                      run.spec.spec_hash(), ref.seeds)
    path = tmp_path / "wider.json"
    path.write_text(json.dumps(wider.to_json()))

    def no_work(setup, tasks, *args, **kw):
        assert not tasks, f"a rescored comparison reran {tasks}"
        return iter(())

    monkeypatch.setattr(compare_mod, "launch", no_work)
    monkeypatch.setattr(episodes_mod, "launch", no_work)
    scaled = run_compare(_cfg(root, name="tiny-wider", scale=str(path)))
    assert scaled.reference == wider
    spec, lam = run.spec, run.spec.reward.lam
    for label in ("natural", "doremi"):
        for own, ep in zip(run.episodes[label], scaled.episodes[label]):
            start = EvalResult.from_json(own["start"])
            again = [balanced_score(spec.reward.name, lam, start, EvalResult.from_json(e), run.space, wider)
                     for e in own["evals"]]
            assert ep["scores"] == pytest.approx(again) and ep["balanced"] == pytest.approx(again[-1])
            assert ep["return"] == pytest.approx(again[-1] - balanced_score(spec.reward.name, lam, start, start,
                                                                            run.space, wider))
            assert ep["balanced"] != pytest.approx(own["balanced"]) and ep["final"] == own["final"]
    rows = {r["policy"]: r for r in make_compare_report(scaled)["rows"]}
    assert rows["natural"]["scores"] == pytest.approx([e["balanced"] for e in scaled.episodes["natural"]])
    assert run_compare(_cfg(root)).episodes["natural"] == run.episodes["natural"]  # the own-scale read is unchanged
    # on the env's own scale the rescoring reproduces what the env recorded while the episodes ran
    for label in ("natural", "doremi", "decay_switch"):
        for ep in run.episodes[label]:
            stored = json.loads(next((root / "cache").glob(f"*/*/{label}*/{ep['seed']}.json")).read_text())
            assert ep["balanced"] == pytest.approx(stored["balanced"], abs=1e-12)
            assert ep["return"] == pytest.approx(stored["return"], abs=1e-12)
            assert ep["scores"] == pytest.approx(stored["scores"], abs=1e-12)
    path.write_text(json.dumps({**wider.to_json(), "spec_hash": "0123456789abcdef"}))
    with pytest.raises(ConfigError, match="scale: .* spec hash '0123456789abcdef'"):
        run_compare(_cfg(root, name="tiny-wider", scale=str(path)))
    path.write_text("{")
    with pytest.raises(ConfigError, match="is not a reference file"):
        run_compare(_cfg(root, name="tiny-wider", scale=str(path)))


def test_a_lam_sibling_reads_the_open_loop_episodes_rescored(compared, tmp_path, monkeypatch):
    # the same spec at another lam trains the same runs: natural and decay_switch (open loop) and the tuning
    # seed's natural reference run are read from the lam-0.5 cache and rescored; DoReMi (closed loop) runs
    root, run, _, _ = compared
    ran: list = []
    real = episodes_mod.launch

    def spy(setup, tasks, *args, **kw):
        ran.extend(tasks)
        return real(setup, tasks, *args, **kw)

    monkeypatch.setattr(compare_mod, "launch", spy)
    monkeypatch.setattr(episodes_mod, "launch", spy)
    lam = ("reward.lam=0.9",)
    shared = run_compare(_cfg(root, name="tiny-lam", env_overrides=lam, efficiency_steps=()))
    assert shared.spec.reward.lam == 0.9 and shared.spec.spec_hash() != run.spec.spec_hash()
    assert sorted({t.key.partition("@")[0] for t in ran}) == ["doremi"] and len(ran) == 3
    assert json.loads((root / "cache" / "tiny-cpt-v1" / shared.spec.spec_hash() / "spec.json").read_text())[
        "spec_hash"] == shared.spec.spec_hash()  # so later siblings find this cache too
    assert json.loads((root / "tiny-lam" / "compare.json").read_text())["lam_siblings"] == [run.spec.spec_hash()]
    ran.clear()
    fresh = run_compare(_cfg(tmp_path, name="tiny-lam", env_overrides=lam, policies=("natural", "decay_switch"),
                             efficiency_steps=()))
    assert len(ran) == 6  # alone, everything runs
    for label in ("natural", "decay_switch"):
        for a, b, own in zip(shared.episodes[label], fresh.episodes[label], run.episodes[label]):
            assert a["weights"] == b["weights"] and a["final"] == b["final"] and a["evals"] == b["evals"]
            assert a["balanced"] == pytest.approx(b["balanced"], abs=1e-12)
            assert a["return"] == pytest.approx(b["return"], abs=1e-12)
            assert a["scores"] == pytest.approx(b["scores"], abs=1e-12)
            assert a["balanced"] != pytest.approx(own["balanced"])  # rescored under lam 0.9, not lam 0.5's
