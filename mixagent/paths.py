"""Where mixagent keeps built data and caches: ``$MIXAGENT_DATA`` or ``<repo>/data``."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["REPO_ROOT", "data_root", "ENVS_DIR", "CONFIGS_DIR", "staged_dir"]

REPO_ROOT = Path(__file__).resolve().parents[1]
ENVS_DIR = Path(os.environ.get("MIXAGENT_ENVS", REPO_ROOT / "envs"))
CONFIGS_DIR = REPO_ROOT / "configs"


def data_root() -> Path:
    """Root of corpora (``corpora/``), downloads (``raw/``) and caches (``cache/``)."""
    return Path(os.environ.get("MIXAGENT_DATA", REPO_ROOT / "data"))


@contextmanager
def staged_dir(final: Path) -> Iterator[Path]:
    """Write a cache directory atomically: yields a temporary directory beside ``final`` that is renamed
    to ``final`` on success and removed on failure, so a half-written cache never appears."""
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
