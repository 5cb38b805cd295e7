"""A generalization case made of real deploy-job runs (``mixagent.study.deploy_case``): every policy x seed
runs once as its own process, the reports are kept and reread, the table is the reports' numbers, a
failing run is named and keeps what finished."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from mixagent.errors import ConfigError
from mixagent.study.deploy_case import deploy_case_hash, run_deploy_case

TINY = ("trainer.max_steps=4", "trainer.save_steps=4", "policy.every=2")
CONFIG = "configs/deploy/user-jsonl.yaml"


def test_deploy_case_runs_each_policy_and_seed_once_and_tables_the_reports(tmp_path, monkeypatch):
    out, work = tmp_path / "audits", tmp_path / "runs"
    table = run_deploy_case("t", CONFIG, TINY, ("uniform", "natural"), ("natural",), (0, 1), out, work)
    rows = {r["policy"]: r for r in table["rows"]}
    for p in ("uniform", "natural"):
        stored = [json.loads((out / "t/reports" / p / f"{s}.json").read_text()) for s in (0, 1)]
        assert [d["seed"] for d in stored] == [0, 1] and all(d["spec_hash"] == table["spec_hash"] for d in stored)
        assert rows[p]["scores"] == pytest.approx([d["report"]["balanced"] for d in stored])
        assert rows[p]["std"] == pytest.approx(np.std(rows[p]["scores"], ddof=1))
        assert (work / p / "0" / "deploy.json").is_file()  # the run's own directory
    assert rows["uniform"]["scores"][0] != rows["uniform"]["scores"][1]  # the seed changes the data order
    assert rows["natural"]["kind"] == "agent" and rows["uniform"]["kind"] == "baseline"
    assert table["pooled_seed_std"] == pytest.approx(np.sqrt(np.mean([r["std"] ** 2 for r in rows.values()])))
    assert "| uniform |" in (out / "t/table.md").read_text()

    def refuse(*args, **kwargs):
        raise AssertionError("a finished run was started again")

    monkeypatch.setattr(subprocess, "run", refuse)
    assert run_deploy_case("t", CONFIG, TINY, ("uniform", "natural"), ("natural",), (0, 1), out, work) == table
    monkeypatch.undo()
    with pytest.raises(ConfigError, match="the deploy run failed; see .*0.log"):
        run_deploy_case("t", CONFIG, TINY, ("uniform", "no-such-method"), (), (0, 1), out, work)
    assert (out / "t/reports/uniform/1.json").is_file()  # what finished stays
    assert deploy_case_hash(CONFIG, TINY) != deploy_case_hash(CONFIG, ())  # other overrides: other runs
    with pytest.raises(ConfigError, match="not found"):
        deploy_case_hash("configs/deploy/nope.yaml", ())
