"""The variants job scores a finished agent run only under the config it was trained with: an edited
training config is refused (typed, naming the fix) even when the run's artifacts and table exist."""

from __future__ import annotations

import json

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
