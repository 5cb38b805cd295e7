"""The episode cache (``mixagent.rollout.cache``): its own root first, then read-only roots; invalid stored
episodes are run again; a stored summary reads back as the one episode record."""

from __future__ import annotations

import json

import pytest

from mixagent.errors import UsageError
from mixagent.rollout.cache import EpisodeCache
from mixagent.rollout.episode import EPISODE_VERSION

RECORD = {"version": EPISODE_VERSION, "seed": 0, "source_score": 0.1, "target_score": 0.2, "source_bpb": 2.0,
          "target_bpb": 1.5, "balanced": 0.3, "return": 0.3, "truncated": False,
          "start": {"bpb": {"wiki": 2.5, "math": 2.0}, "scores": {"source": 0.1, "target": 0.1}},
          "final": {"bpb": {"wiki": 2.0, "math": 1.5}, "scores": {"source": 0.1, "target": 0.2}},
          "evals": [], "scores": [0.3], "weights": [[0.5, 0.5]]}


def test_the_cache_reads_its_own_root_first_then_the_read_only_ones(tmp_path):
    record = dict(RECORD)
    ident = ("tiny", 1, "abc")
    shipped = EpisodeCache(tmp_path / "shipped", ident)
    shipped.put_summary("uniform", 0, record)
    mine = EpisodeCache(tmp_path / "mine", ident, read_also=(tmp_path / "shipped",))
    assert mine.summary("uniform", 0) == record and mine.summary("uniform", 1) is None
    mine.put_summary("uniform", 0, {**record, "balanced": 0.4, "return": 0.4})
    assert mine.summary("uniform", 0)["balanced"] == 0.4  # the writable root first
    assert shipped.summary("uniform", 0)["balanced"] == 0.3  # the read-only root untouched
    shipped.path("natural", 0).parent.mkdir(parents=True)
    shipped.path("natural", 0).write_text(json.dumps({**record, "balanced": float("nan")}).replace("NaN", "null"))
    assert mine.summary("natural", 0) is None and mine.get("natural", 0) is None  # invalid values: run again
    assert EpisodeCache(tmp_path / "x", ("tiny", 1, "other"), (tmp_path / "shipped",)).get("uniform", 0) is None
    as_record = mine.get("uniform", 0)  # the one record: a step per stored mixture, the return kept
    assert (as_record.key, as_record.seed, as_record.ret, as_record.final) == ("uniform", 0, 0.4, record["final"])
    assert as_record.steps == ({"weights": [0.5, 0.5], "eval": None, "reward": None, "balanced_score": 0.3},)
    assert [r.key for r in mine.records()] == ["uniform", "natural"][:1]  # the invalid one is not a record
    with pytest.raises(UsageError, match="space=env.space"):
        mine.put(as_record)


def test_episodes_that_started_from_another_base_model_are_not_served(tmp_path, caplog):
    """The spec hash names the base model's config, not the checkpoint: a cache given the env's start evaluation
    serves only episodes that started from it (a re-trained base, reference runs recomputed elsewhere)."""
    ident = ("tiny", 0, "abc")
    EpisodeCache(tmp_path / "a", ident).put_summary("uniform", 0, RECORD)
    same = {**RECORD["start"], "bpb": {n: b * (1 + 1e-8) for n, b in RECORD["start"]["bpb"].items()}}
    assert EpisodeCache(tmp_path / "a", ident, start=same).summary("uniform", 0) == RECORD  # rounding: the same
    other = {**RECORD["start"], "bpb": {"wiki": 2.5, "math": 2.01}}
    retrained = EpisodeCache(tmp_path / "b", ident, read_also=(tmp_path / "a",), start=other)
    with caplog.at_level("WARNING"):
        assert retrained.summary("uniform", 0) is None and retrained.get("uniform", 0) is None
    assert "started from another base model" in caplog.text
    assert EpisodeCache(tmp_path / "a", ident).summary("uniform", 0) == RECORD  # not checked without start
