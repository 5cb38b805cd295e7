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


def test_episodes_of_another_base_checkpoint_are_not_served(tmp_path):
    """Without reference runs nothing else pins the base checkpoint a spec's config built: the cache does."""
    ident = ("tiny", 0, "abc")
    made = EpisodeCache(tmp_path / "a", ident, base="base:1111")
    made.put_summary("uniform", 0, RECORD)
    assert json.loads((made.dir / "base.json").read_text()) == {"base": "base:1111"}
    assert EpisodeCache(tmp_path / "a", ident, base="base:1111").summary("uniform", 0) == RECORD
    retrained = EpisodeCache(tmp_path / "b", ident, read_also=(tmp_path / "a",), base="base:2222")
    assert retrained.summary("uniform", 0) is None and list(retrained.records()) == []
    with pytest.raises(UsageError, match="another base checkpoint"):
        EpisodeCache(tmp_path / "a", ident, base="base:2222").put_summary("natural", 0, RECORD)
    unstamped = EpisodeCache(tmp_path / "c", ident)  # episodes of an unrecorded base
    unstamped.put_summary("uniform", 0, RECORD)
    assert EpisodeCache(tmp_path / "c", ident, base="base:1111").summary("uniform", 0) is None
    assert EpisodeCache(tmp_path / "c", ident).summary("uniform", 0) == RECORD  # references pin it: no check
