"""Where mixagent keeps built data and caches: ``$MIXAGENT_DATA`` or ``<repo>/data``."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["REPO_ROOT", "data_root", "ENVS_DIR", "CONFIGS_DIR"]

REPO_ROOT = Path(__file__).resolve().parents[1]
ENVS_DIR = Path(os.environ.get("MIXAGENT_ENVS", REPO_ROOT / "envs"))
CONFIGS_DIR = REPO_ROOT / "configs"


def data_root() -> Path:
    """Root of corpora (``corpora/``), downloads (``raw/``) and caches (``cache/``)."""
    return Path(os.environ.get("MIXAGENT_DATA", REPO_ROOT / "data"))
