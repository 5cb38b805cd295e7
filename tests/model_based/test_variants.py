"""The variants job scores a finished agent run only under the config it was trained with: an edited
training config is refused (typed, naming the fix) even when the run's artifacts and table exist."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from mixagent.agent.config import AgentConfig
from mixagent.config import load_config
from mixagent.errors import ResumeMismatchError
from mixagent.model_based.variants import Variant, _train
from mixagent.paths import CONFIGS_DIR


def _config(tmp_path, **edits) -> str:
    data = yaml.safe_load((CONFIGS_DIR / "agent/default.yaml").read_text())
    data.update(out_dir=str(tmp_path / "runs"), **edits)
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


@pytest.fixture()
def finished(tmp_path, monkeypatch):
    """A finished run of the default config as ``train_agent`` leaves it (its recorded identity, both stages'
    artifacts, the table), without training; ``train_agent`` itself records its calls."""
    from mixagent.agent import train

    path = _config(tmp_path)
    cfg = load_config(AgentConfig, path)
    train._prepare_run_dir(cfg, resume=False)
    for stage in ("sft", "rl"):
        (cfg.run_dir / stage).mkdir()
        (cfg.run_dir / stage / "meta.json").write_text("{}")
    (cfg.run_dir / "table.json").write_text("{}")
    calls: list = []
    monkeypatch.setattr(train, "train_agent", lambda *a, **k: calls.append((a, k)))
    return path, cfg, calls


def test_a_finished_run_is_scored_only_under_its_config(tmp_path, finished):
    path, cfg, calls = finished
    variant = Variant(name="bc", label="BC", config=path, stage="sft")
    assert _train(variant, progress=False) == cfg.run_dir / "sft" and calls == []  # unchanged: not retrained
    sft = {**yaml.safe_load(open(path))["sft"], "steps": 10}
    _config(tmp_path, sft=sft)  # the config edited after the run finished
    with pytest.raises(ResumeMismatchError) as err:
        _train(variant, progress=False)
    text = str(err.value)
    assert "variant 'bc'" in text and "sft differ" in text and str(cfg.run_dir) in text
    assert "another name" in text and "delete" in text and calls == []
    assert json.loads((cfg.run_dir / "state.json").read_text())["identity"]["sft"]["steps"] == 2000  # untouched


def test_an_edited_evaluation_section_is_not_a_mismatch(tmp_path, finished):
    path, cfg, calls = finished
    _config(tmp_path, eval={**yaml.safe_load(open(path))["eval"], "seeds": [5, 6, 7]})
    assert _train(Variant(name="bc-cql", label="BC+CQL", config=path), progress=False) == cfg.run_dir / "rl"
    assert calls == []  # evaluation settings do not change the trained policy (the variants job scores it itself)


def test_a_committed_copy_is_scored_only_under_the_identity_it_was_trained_with(tmp_path, monkeypatch):
    """A fresh clone has no run directory: the committed copy is scored when its recorded training identity is
    the config's, and retrained when the config was edited since (or the copy's stage is another)."""
    from mixagent.agent import train

    path = _config(tmp_path)
    cfg = load_config(AgentConfig, path)
    committed = tmp_path / "variants" / "bc"
    committed.mkdir(parents=True)
    meta = {"stage": "sft", "training": {"identity": train.training_identity(cfg)}}
    (committed / "meta.json").write_text(json.dumps(meta))
    calls: list = []
    monkeypatch.setattr(train, "train_agent", lambda *a, **k: calls.append(a))
    variant = Variant(name="bc", label="BC", config=path, stage="sft")
    assert _train(variant, progress=False, committed=committed) == committed and calls == []
    assert _train(Variant(name="bc", label="BC", config=path, stage="rl"), progress=False,
                  committed=committed) == cfg.run_dir / "rl" and len(calls) == 1  # another stage: trained
    calls.clear()
    shutil.rmtree(cfg.run_dir, ignore_errors=True)
    _config(tmp_path, sft={**yaml.safe_load(open(path))["sft"], "learning_rate": 0.01})  # edited since
    assert _train(variant, progress=False, committed=committed) == cfg.run_dir / "sft" and len(calls) == 1
    calls.clear()
    _config(tmp_path, eval={**yaml.safe_load(open(path))["eval"], "seeds": [5]})  # evaluation only: the same policy
    shutil.rmtree(cfg.run_dir, ignore_errors=True)
    assert _train(variant, progress=False, committed=committed) == committed and calls == []


def test_the_committed_variant_policies_record_the_identity_of_their_configs():
    """The committed variants table's policies were trained under today's configs (a fresh clone's
    ``mixagent variants`` scores them without retraining)."""
    from mixagent.agent.train import training_identity
    from mixagent.model_based.variants import VariantsConfig, _committed_matches
    from mixagent.paths import REPO_ROOT

    cfg = load_config(VariantsConfig, CONFIGS_DIR / "agent/variants.yaml")
    trained = [v for v in cfg.variants if v.config]
    assert len(trained) == 4
    for v in trained:
        identity = training_identity(load_config(AgentConfig, REPO_ROOT / v.config))
        assert _committed_matches(REPO_ROOT / cfg.out / v.name, v.stage, identity), v.name


def test_a_rebuild_from_stored_results_refuses_a_variant_that_would_train(tmp_path, monkeypatch):
    from mixagent.agent import train
    from mixagent.errors import UsageError
    from mixagent.model_based.variants import VariantsConfig, run_variants

    calls: list = []
    monkeypatch.setattr(train, "train_agent", lambda *a, **k: calls.append(a))
    cfg = VariantsConfig(name="t", compare_overrides=(f"out={tmp_path}",), out=str(tmp_path / "variants"),
                         variants=(Variant("bc", "BC", config=_config(tmp_path), stage="sft"),))
    with pytest.raises(UsageError, match="variant 'bc' would train .* run mixagent variants"):
        run_variants(cfg, progress=False, stored_only=True)
    assert calls == [] and not (tmp_path / "variants").exists()
