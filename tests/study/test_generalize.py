"""The generalization table scores a case only from a comparison of the current agent: a case table whose
agent row records another artifact identity, or none, is stale (listed, not scored)."""

from __future__ import annotations

import json
import shutil

import pytest

from mixagent.config import load_config
from mixagent.paths import CONFIGS_DIR, REPO_ROOT
from mixagent.rollout.identity import policy_identity
from mixagent.study.generalize import Case, GeneralizeConfig, generalize_table

COMMITTED = REPO_ROOT / "audits/compare"
AGENT = "checkpoints/agents/math-cpt-v1"


def _in_distribution(tmp_path, identity: str | None) -> GeneralizeConfig:
    """The committed in-distribution case table under ``tmp_path``, its agent row's identity set to
    ``identity`` (``None``: removed, as in the tables written before rows had identities)."""
    table = json.loads((COMMITTED / "v1-in-distribution/table.json").read_text())
    for row in table["rows"]:
        row.pop("identity", None)
        if row["policy"] == AGENT and identity is not None:
            row["identity"] = identity
    (tmp_path / "v1-in-distribution").mkdir()
    (tmp_path / "v1-in-distribution/table.json").write_text(json.dumps(table))
    case = Case("in-distribution", "seeds only (v1 as trained)", "envs/math-cpt.yaml", in_distribution=True)
    return GeneralizeConfig(name="v1", agent=AGENT, cases=(case,), out=str(tmp_path))


def test_a_case_without_the_agent_identity_is_stale(tmp_path):
    table = generalize_table(_in_distribution(tmp_path, None))
    assert table["cases"] == [] and table["pending"] == ["in-distribution"]
    assert "records no agent identity" in table["stale"]["in-distribution"]
    md = (tmp_path / "v1-generalize/table.md").read_text()
    assert "Stale (rerun the case): in-distribution (" in md and "no held-out case has finished" in md


def test_a_case_of_another_artifact_is_stale_and_the_current_one_is_scored(tmp_path):
    other = generalize_table(_in_distribution(tmp_path, "artifact@000000000000"))
    assert other["cases"] == [] and "artifact@000000000000" in other["stale"]["in-distribution"]
    shutil.rmtree(tmp_path / "v1-in-distribution")
    current = generalize_table(_in_distribution(tmp_path, policy_identity(AGENT)))
    assert [r["case"] for r in current["cases"]] == ["in-distribution"] and current["stale"] == {}
    assert current["pending"] == [] and "Stale" not in (tmp_path / "v1-generalize/table.md").read_text()


def test_the_committed_case_tables_scored_only_with_the_current_identity(tmp_path):
    """The committed protocol rebuilt from its committed case tables (``--report-only``): a case is scored
    exactly when its table's agent row records the agent's current identity, and every other case is listed
    as stale with the reason."""
    cfg = load_config(GeneralizeConfig, CONFIGS_DIR / "generalize/v1.yaml", [f"out={tmp_path}"])
    recorded = {}
    for case in cfg.cases:
        src = COMMITTED / f"v1-{case.name}/table.json"
        (tmp_path / f"v1-{case.name}").mkdir()
        shutil.copy(src, tmp_path / f"v1-{case.name}/table.json")
        rows = {r["policy"]: r for r in json.loads(src.read_text())["rows"]}
        recorded[case.name] = rows[cfg.case_agent(case)].get("identity")
    table = generalize_table(cfg)
    current = {c.name for c in cfg.cases if recorded[c.name] == policy_identity(cfg.case_agent(c))}
    scored = {r["case"] for r in table["cases"]}
    assert scored <= current  # nothing without the current identity is scored
    assert set(table["stale"]) == {c.name for c in cfg.cases} - scored
    for name in {c.name for c in cfg.cases} - current:  # the spec is checked first: a changed case says so
        why = table["stale"][name]
        assert "ran in env spec" in why or ("records no agent identity" if recorded[name] is None else "changed") in why


@pytest.mark.parametrize("observe_lr, stale", [(False, True), (True, False)])
def test_an_lr_observing_agent_in_an_env_without_the_lr_is_stale(tmp_path, observe_lr, stale):
    """The agent observes the learning rate: a case env without ``observe_lr`` fed it LR 1.0 at every step
    (its cached episodes would be read back as if it had seen the schedule)."""
    table = json.loads((COMMITTED / "v1-space-8-v0/table.json").read_text())
    for row in table["rows"]:
        if row["policy"] == AGENT:
            row["identity"] = policy_identity(AGENT)
    overrides = ("observe_lr=true",) if observe_lr else ()
    case = Case("space-8-v0", "8-domain space", "envs/math-natural.yaml", env_overrides=overrides)
    cfg = GeneralizeConfig(name="v1", agent=AGENT, cases=(case,), out=str(tmp_path))
    from mixagent.study.generalize import _spec_hash

    table["spec_hash"] = _spec_hash(case)  # the table of a run of this very case (with or without the LR)
    (tmp_path / "v1-space-8-v0").mkdir()
    (tmp_path / "v1-space-8-v0/table.json").write_text(json.dumps(table))
    out = generalize_table(cfg)
    assert (out["cases"] == []) == stale
    if stale:
        assert "observe_lr=true" in out["stale"]["space-8-v0"]


def test_a_case_to_run_whose_env_hides_the_lr_from_the_agent_is_refused(tmp_path):
    """Before anything runs (its cached episodes would be read back); ``--report-only`` only lists it stale."""
    import dataclasses

    from mixagent.errors import ConfigError
    from mixagent.study.generalize import run_generalize

    cfg = load_config(GeneralizeConfig, CONFIGS_DIR / "generalize/v1.yaml", [f"out={tmp_path}"])
    cfg = dataclasses.replace(cfg, cases=tuple(  # the case as it was before it observed the LR
        dataclasses.replace(c, env_overrides=()) if c.name == "space-8-v0" else c for c in cfg.cases))
    with pytest.raises(ConfigError, match="case 'space-8-v0': the agent .* observes the learning rate") as err:
        run_generalize(cfg, ["space-8-v0", "in-distribution"])
    assert "add observe_lr=true to the case's env_overrides" in str(err.value)
    assert not (tmp_path / "v1-in-distribution").exists()  # nothing ran
    assert run_generalize(cfg, report_only=True)["cases"] == []
