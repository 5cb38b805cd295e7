"""``mixagent judge-check``: validity of each judge and the judge's scores of each model's continuations, at
tiny scale (a judge built from config, the tiny base), checked against what the pieces compute alone."""

from __future__ import annotations

import json

import pytest
import yaml

from mixagent.study.judge_check import main


def test_the_check_writes_validity_and_scores_with_intervals_per_judge_and_model(tmp_path, capsys, tiny_judge):
    small = {"model": str(tiny_judge), "prefixes": 3, "prefix_chars": 100, "suffix_chars": 60, "max_new_tokens": 8}
    config = tmp_path / "check.yaml"
    config.write_text(yaml.safe_dump({
        "name": "tiny", "out": str(tmp_path / "out"), "bootstrap": 200,
        "judges": {"prompt": small, "likelihood": {**small, "mode": "likelihood"}},
        "fields": {"source": ["wiki"], "target": ["math"]},
        "models": [{"name": "tiny-base", "config": "configs/base_model/tiny.yaml"}]}))
    assert main(["--config", str(config)]) == 0
    result = json.loads((tmp_path / "out/tiny/check.json").read_text())
    assert set(result["judges"]) == {"prompt", "likelihood"}
    for j in result["judges"].values():
        for v in j["validity"].values():
            assert v["items"] == 3 * 3 and v["ci_low"] <= v["accuracy"] <= v["ci_high"]
    like = result["judges"]["likelihood"]["validity"]["source"]
    assert like["order_agreement"] == 1.0 and like["position_bias"] == pytest.approx(0.5)  # no order effect
    row = result["models"]["tiny-base"]
    assert row["parameters"] > 0
    for r in row["judges"].values():
        for f in ("source", "target"):
            lo, hi = r["intervals"][f]
            assert 0 <= lo <= r["scores"][f] <= hi <= 1
    assert "| likelihood | source |" in capsys.readouterr().out
    assert (tmp_path / "out/tiny/check.md").read_text().count("\n") == 2 + 4 + 1 + 2 + 1
    assert (tmp_path / "out/tiny/scores.png").stat().st_size > 1000


def test_a_bad_check_config_is_a_typed_error(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump({"name": "x", "judges": {"p": {"mode": "vote"}}, "fields": {"source": []},
                                      "models": [{"name": "m", "kind": "gpt"}], "bootstrap": 0}))
    assert main(["--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "mode must be one of" in err and "fields must name source and target" in err and "kind must be" in err
    assert "bootstrap must be >= 100 resamples" in err  # refused before anything runs
