"""Where mixagent keeps built data and caches (``$MIXAGENT_DATA`` or ``<repo>/data``), and the one way
mixagent publishes a file or a directory: written beside its final name, fsync'ed, then renamed into place,
so a reader never sees a half-written artifact (a crash leaves the previous version or nothing)."""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mixagent.errors import StoreWriteError

__all__ = ["REPO_ROOT", "resolve", "data_root", "ENVS_DIR", "CONFIGS_DIR", "staged_dir", "atomic_write",
           "atomic_write_json", "atomic_write_bytes", "fsync_dir", "write_error", "finite_json"]

REPO_ROOT = Path(__file__).resolve().parents[1]
ENVS_DIR = Path(os.environ.get("MIXAGENT_ENVS", REPO_ROOT / "envs"))
CONFIGS_DIR = REPO_ROOT / "configs"


def resolve(path: str) -> Path:
    """A path as given when it exists (or is absolute), else relative to the repository root: how configs'
    paths (deploy data, a judge directory) are read from any working directory."""
    p = Path(path).expanduser()
    return p if p.is_absolute() or p.exists() else REPO_ROOT / p


def data_root() -> Path:
    """Root of corpora (``corpora/``), downloads (``raw/``) and caches (``cache/``)."""
    return Path(os.environ.get("MIXAGENT_DATA", REPO_ROOT / "data"))


def fsync_dir(path: Path) -> None:
    """Make a rename inside directory ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_error(path: Path, exc: OSError) -> StoreWriteError:
    """The typed error for a failed write of ``path``: what went wrong in words, and that finished work is kept."""
    what = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
            errno.EACCES: "permission denied", errno.EROFS: "the file system is read-only",
            errno.EPERM: "operation not permitted"}.get(exc.errno or 0, exc.strerror or str(exc))
    return StoreWriteError(exc.errno or errno.EIO, f"could not write {path}: {what}. What was finished before "
                           f"(trajectories, manifest, agent stages) is intact; free space or fix permissions, then "
                           f"rerun the same command with --resume")


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Publish ``path`` atomically: ``write(tmp)`` fills a uniquely named temporary file beside it, which is
    fsync'ed and renamed over ``path`` (then the directory is fsync'ed), so concurrent writers never share a
    temporary file and a reader sees one whole version or the other. The one writer artifacts go through.

    Raises:
        StoreWriteError: the write, fsync or rename failed (disk full, permissions); ``path`` is untouched.
    """
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # unique: writers may race
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        tmp.chmod(0o644)  # mkstemp makes it private; published files are readable like any other
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise write_error(path, exc) from None
        raise


def _write_with(mode: str, body: Any) -> Callable[[Path], None]:
    def write(tmp: Path) -> None:
        with open(tmp, mode) as f:
            f.write(body)
    return write


def atomic_write_json(path: Path, data: Any, indent: int | None = 1) -> None:
    """Write ``data`` as strict JSON (``NaN``/``Inf`` refused with a ``ValueError`` before anything is
    written) through :func:`atomic_write`."""
    atomic_write(path, _write_with("w", json.dumps(data, indent=indent, allow_nan=False)))


def finite_json(obj: Any) -> Any:
    """``obj`` (nested dicts, lists, tuples) with every non-finite float as ``None``: strict JSON for
    :func:`atomic_write_json`, where a missing value is ``null``."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite_json(v) for v in obj]
    return obj


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` through :func:`atomic_write`."""
    atomic_write(path, _write_with("wb", data))


@contextmanager
def staged_dir(final: Path) -> Iterator[Path]:
    """Publish a directory atomically: yields a temporary directory beside ``final`` that is renamed to
    ``final`` on success and removed on failure, so a half-written cache never appears. If another process
    published ``final`` first, its copy is kept (caches are content-addressed)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    try:
        yield tmp
        tmp.chmod(0o755)  # mkdtemp makes it private
        try:
            tmp.rename(final)
        except OSError:
            if not final.is_dir():  # another process publishing the same cache first is fine
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
