"""A generalization case made of real deploy-job runs (``mixagent.study.deploy_case``): every policy x seed
runs once as its own process, the reports are kept and reread (and rerun when the config, the overrides
or the policy changed, or when unreadable), the table is the reports' numbers, a failing run is named and
keeps what finished, bad requests are refused before anything runs."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from mixagent.errors import ConfigError, WorkerError
from mixagent.study.deploy_case import deploy_case_hash, policy_identity, run_deploy_case

TINY = ("trainer.max_steps=4", "trainer.save_steps=4", "policy.every=2")
CONFIG = "configs/deploy/user-jsonl.yaml"


class Rerun(Exception):
    pass


def refuse(*args, **kwargs):
    raise Rerun


def test_deploy_case_runs_each_policy_and_seed_once_and_tables_the_reports(tmp_path, monkeypatch):
    out, work = tmp_path / "audits", tmp_path / "runs"
    table = run_deploy_case("t", CONFIG, TINY, ("uniform", "natural"), ("natural",), (0, 1), out, work)
    rows = {r["policy"]: r for r in table["rows"]}
    stored = {p: [json.loads(f.read_text()) for f in sorted((out / "t/reports").glob(f"{p}-*/*.json"))]
              for p in rows}
    for p in ("uniform", "natural"):
        assert [d["seed"] for d in stored[p]] == [0, 1] and {d["policy"] for d in stored[p]} == {p}
        assert rows[p]["scores"] == pytest.approx([d["report"]["balanced"] for d in stored[p]])
        assert rows[p]["std"] == pytest.approx(np.std(rows[p]["scores"], ddof=1))
        for d, got in zip(stored[p], rows[p]["balanced_bpb"]):  # the mean relative fall of the fields' bpb
            r = d["report"]
            fall = [np.mean([(r["start"]["bpb"][n] - r["final"]["bpb"][n]) for n, f in zip(r["domains"], r["fields"])
                             if f == field]) / np.mean([r["start"]["bpb"][n] for n, f in zip(r["domains"], r["fields"])
                                                       if f == field]) for field in ("source", "target")]
            assert got == pytest.approx(np.mean(fall))
    # the seed reaches the data order: the runs' batch digests differ between seeds
    digests = {(p, s): json.loads(next(work.glob(f"{p}-*/{s}/report.json")).read_text())["batches_sha256"]
               for p in rows for s in (0, 1)}
    assert digests[("uniform", 0)] != digests[("uniform", 1)]
    assert rows["natural"]["kind"] == "agent" and rows["uniform"]["kind"] == "baseline"
    assert table["pooled_seed_std"] == pytest.approx(np.sqrt(np.mean([r["std"] ** 2 for r in rows.values()])))
    assert "| uniform |" in (out / "t/table.md").read_text()

    monkeypatch.setattr(subprocess, "run", refuse)
    assert run_deploy_case("t", CONFIG, TINY, ("uniform", "natural"), ("natural",), (0, 1), out, work) == table
    with pytest.raises(Rerun):  # other overrides: other runs
        run_deploy_case("t", CONFIG, (*TINY, "trainer.learning_rate=0.01"), ("uniform",), (), (0, 1), out, work)
    uniform1 = next((out / "t/reports").glob("uniform-*/1.json"))
    kept = uniform1.read_text()
    uniform1.write_text(json.dumps({**json.loads(kept), "identity": "artifact@another"}))
    with pytest.raises(Rerun):  # a stored run of another policy behind the same name is run again
        run_deploy_case("t", CONFIG, TINY, ("uniform",), (), (0, 1), out, work)
    uniform1.write_text(kept)
    uniform0 = next((out / "t/reports").glob("uniform-*/0.json"))
    uniform0.write_text("{not json")
    with pytest.raises(Rerun):  # an unreadable stored report is run again
        run_deploy_case("t", CONFIG, TINY, ("uniform",), (), (0, 1), out, work)
    monkeypatch.undo()
    with pytest.raises(WorkerError, match="the deploy run of no-such-method \\(seed 0\\) failed; see .*0.log"):
        run_deploy_case("t", CONFIG, TINY, ("uniform", "no-such-method"), (), (0, 1), out, work)
    assert json.loads(uniform0.read_text())["seed"] == 0  # rerun and kept before the failing run
    assert next((out / "t/reports").glob("uniform-*/1.json")).read_text() == kept
    assert not list((out / "t/reports").glob("no-such-method-*/*.json"))
    before = sorted(work.rglob("*"))
    with pytest.raises(ConfigError, match="did you mean 'max_steps'"):  # the deploy job's check, before any run
        run_deploy_case("t2", CONFIG, ("trainer.max_stepz=4",), ("uniform",), (), (0, 1), out, tmp_path / "runs2")
    assert not (out / "t2").exists() and not (tmp_path / "runs2").exists() and sorted(work.rglob("*")) == before


def test_deploy_case_refuses_bad_requests_before_running(tmp_path, monkeypatch):
    monkeypatch.setattr(subprocess, "run", refuse)
    with pytest.raises(ConfigError, match="sets a key the case sets per run") as err:
        run_deploy_case("t", CONFIG, ("seed=3",), ("uniform",), (), (0,), tmp_path)
    assert ">= 2 distinct seeds" in str(err.value)
    with pytest.raises(ConfigError, match="policies is empty"):
        run_deploy_case("t", CONFIG, (), (), (), (0, 1), tmp_path)
    with pytest.raises(ConfigError, match="not found"):
        deploy_case_hash("configs/deploy/nope.yaml", ())
    assert not tmp_path.joinpath("t").exists()


def test_an_artifact_is_identified_by_its_content(tmp_path):
    from mixagent.domains import DomainSpace
    from mixagent.paths import CONFIGS_DIR
    from mixagent.policies.artifact import random_artifact

    space = DomainSpace.from_yaml(CONFIGS_DIR / "spaces/tiny.yaml")
    path = random_artifact(tmp_path / "agent", space, seed=0)
    first = policy_identity(str(path))
    assert first.startswith("artifact@") and policy_identity("replay:0.5") == "replay:0.5"
    random_artifact(tmp_path / "agent", space, seed=1)  # retrained at the same path
    assert policy_identity(str(path)) != first


def test_deploy_case_hash_follows_what_the_config_names(tmp_path, monkeypatch):
    from mixagent.study import deploy_case

    repo = tmp_path / "repo"
    (repo / "configs").mkdir(parents=True)
    (repo / "configs/model.yaml").write_text("size: 2m\n")
    (repo / "configs/run.yaml").write_text("# a comment\nmodel: {path: configs/model.yaml}\n")
    monkeypatch.setattr(deploy_case, "REPO_ROOT", repo)
    first = deploy_case_hash("configs/run.yaml", ())
    (repo / "configs/run.yaml").write_text("# another comment\nmodel: {path: configs/model.yaml}\n")
    assert deploy_case_hash("configs/run.yaml", ()) == first  # comments do not count
    (repo / "configs/model.yaml").write_text("# the named file's comments neither\nsize:   2m\n")
    assert deploy_case_hash("configs/run.yaml", ()) == first
    (repo / "configs/model.yaml").write_text("size: 8m\n")
    assert deploy_case_hash("configs/run.yaml", ()) != first  # a named file's content does


def _stored(spec_hash: str, seed: int, inputs: dict | None, fallback: str | None = None) -> dict:
    ev = {"bpb": {"web": 2.0, "math": 2.0}, "scores": {"source": 0.1, "target": 0.1}, "accuracy": {}}
    report = {"balanced": 0.1 * (seed + 1), "domains": ["web", "math"], "fields": ["source", "target"], "start": ev,
              "final": {**ev, "bpb": {"web": 1.9, "math": 1.8 - 0.01 * seed}}, "train_seconds": 1.0, "steps": 4,
              "model": {"name": "m"}, "history": [{"fallback": None}, {"fallback": fallback}],
              "ood": {"mode": "fallback", "fallback": "replay:0.5", "checked": True, "decisions": 2,
                      "affected": 2 if seed else 0}}
    out = {"format": 1, "spec_hash": spec_hash, "seed": seed, "policy": "uniform",
           "identity": policy_identity("uniform"), "report": report}
    return out if inputs is None else {**out, "inputs": inputs}


@pytest.mark.parametrize("stored_inputs, rerun", [
    ({"checkpoint:configs/base_model/2m.yaml": "aaa"}, False),
    ({"checkpoint:configs/base_model/2m.yaml": "bbb"}, True),  # a re-trained base checkpoint
    (None, True),  # a run stored without the record of its inputs
])
def test_a_stored_run_of_other_inputs_is_run_again(tmp_path, monkeypatch, stored_inputs, rerun):
    from mixagent.study import deploy_case

    monkeypatch.setattr(deploy_case, "case_inputs",
                        lambda config, overrides, build=False: {"checkpoint:configs/base_model/2m.yaml": "aaa"})
    monkeypatch.setattr(subprocess, "run", refuse)
    reports = tmp_path / "t/reports" / deploy_case._label("uniform")
    reports.mkdir(parents=True)
    for s in (0, 1):
        (reports / f"{s}.json").write_text(json.dumps(_stored(deploy_case_hash(CONFIG, TINY), s, stored_inputs,
                                                              fallback="ValueError: boom" if s else None)))
    if rerun:
        with pytest.raises(Rerun):
            run_deploy_case("t", CONFIG, TINY, ("uniform",), (), (0, 1), tmp_path)
        return
    table = run_deploy_case("t", CONFIG, TINY, ("uniform",), (), (0, 1), tmp_path)
    assert table["rows"][0]["fallbacks"] == {"decisions": 1, "of": 4}  # a decision the guard took over is marked
    assert "uniform (**fell back** at 1 of 4 decisions)" in (tmp_path / "t/table.md").read_text()
    # decisions the out-of-range guard decided are marked too: the row is partly the fallback policy
    assert table["rows"][0]["ood"] == {"mode": "fallback", "fallback": "replay:0.5", "affected": 2, "decisions": 4}
    assert "(**out of range** at 2 of 4 decisions: `ood: fallback`, replay:0.5 decided)" in \
        (tmp_path / "t/table.md").read_text()


def test_case_inputs_follow_the_base_checkpoint_and_the_corpora(tmp_path, monkeypatch):
    import mixagent.data.build as build
    import mixagent.env.base_model as base_model
    from mixagent.study.deploy_case import case_inputs

    monkeypatch.setattr(base_model, "base_dir", lambda cfg, root=None: tmp_path / cfg.size)
    monkeypatch.setattr(build, "read_manifest", lambda corpus, cdir=None, verify=False:
                        {"files": {"train.jsonl": {"sha256": f"{corpus}-1"}}})
    config = "configs/deploy/cpt-2m.yaml"
    assert case_inputs(config, ())["checkpoint:configs/base_model/2m.yaml"] == "not built"
    (tmp_path / "2m").mkdir()
    (tmp_path / "2m/meta.json").write_text(json.dumps({"sha256": "first"}))
    first = case_inputs(config, ())
    assert first["checkpoint:configs/base_model/2m.yaml"] == "first" and "corpus:math" in first
    (tmp_path / "2m/meta.json").write_text(json.dumps({"sha256": "retrained"}))
    assert case_inputs(config, ())["checkpoint:configs/base_model/2m.yaml"] == "retrained"
    monkeypatch.setattr(build, "read_manifest", lambda corpus, cdir=None, verify=False:
                        {"files": {"train.jsonl": {"sha256": f"{corpus}-{2 if corpus == 'math' else 1}"}}})
    changed = case_inputs(config, ())
    assert changed["corpus:math"] != first["corpus:math"] and changed["corpus:wiki"] == first["corpus:wiki"]


def test_deploy_case_hash_follows_a_named_directory(tmp_path, monkeypatch):
    from mixagent.study import deploy_case

    repo = tmp_path / "repo"
    (repo / "configs").mkdir(parents=True)
    (repo / "models/m").mkdir(parents=True)
    (repo / "models/m/config.json").write_text("{}")
    (repo / "configs/run.yaml").write_text("model: {kind: hf, path: models/m}\n")
    monkeypatch.setattr(deploy_case, "REPO_ROOT", repo)
    first = deploy_case_hash("configs/run.yaml", ())
    (repo / "models/m/model.safetensors").write_bytes(b"weights")
    assert deploy_case_hash("configs/run.yaml", ()) != first  # a directory's content counts
    (repo / "configs/run.yaml").write_text("model: {kind: hf, path: models/m}\neval: {kind: models}\n")
    second = deploy_case_hash("configs/run.yaml", ())
    (repo / "models/other.txt").write_text("x")  # a bare word naming a directory is a value, not a path
    assert deploy_case_hash("configs/run.yaml", ()) == second


def test_a_case_with_a_judge_tables_the_judge_reward_beside_bits_per_byte(tmp_path, tiny_judge):
    judge = (f"eval.judge={{model: {tiny_judge}, prefixes: 2, prefix_chars: 60, suffix_chars: 40, max_new_tokens: 8, "
             f"on_invalid: mark}}")
    out = tmp_path / "audits"
    table = run_deploy_case("j", CONFIG, (*TINY, judge), ("uniform",), (), (0, 1), out, tmp_path / "runs")
    row = table["rows"][0]
    stored = [json.loads(f.read_text())["report"] for f in sorted((out / "j/reports").glob("uniform-*/*.json"))]
    assert row["judge"] == pytest.approx([r["judge"]["rewards"]["judge"] for r in stored])
    assert row["judge_std"] == pytest.approx(np.std(row["judge"], ddof=1))
    assert row["judge_marked"] == ["source", "target"]  # a random network is no judge: said in the table
    md = (out / "j/table.md").read_text()
    assert "judge marked invalid on source, target" in md and "| judge (mean ± std) |" in md
    assert (out / "j" / "judge.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # judge vs bpb per run


def test_case_inputs_name_the_smollm2_judge_by_its_file():
    from mixagent.study.deploy_case import case_inputs

    inputs = case_inputs("configs/deploy/smollm2-judge.yaml", ())
    assert set(inputs) == {"judge:smollm2_gguf"} and inputs["judge:smollm2_gguf"]  # a digest, or "not found"
    assert case_inputs("configs/deploy/user-jsonl.yaml", ("eval.judge={model: /a/judge/dir}",)) == {
        "judge:/a/judge/dir": "not found"}
    assert case_inputs("configs/deploy/user-jsonl.yaml", ("eval.judge={mode: likelihood}",)) == {
        "judge:smollm2_gguf": inputs["judge:smollm2_gguf"]}  # the default judge
