"""Where a policy artifact lives and what defines it: :func:`artifact_dir` (a spec that names a directory) and
:func:`artifact_id` (its content, for the identity of cached episodes). Light: no torch."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from mixagent.paths import REPO_ROOT

__all__ = ["artifact_dir", "artifact_id"]


def artifact_dir(spec: str) -> Path | None:
    """The policy artifact directory ``spec`` names (as given, or relative to the repository root), else
    ``None``."""
    for path in (Path(spec), REPO_ROOT / spec):
        if path.is_dir():
            return path.resolve()
    return None


def artifact_id(path: Path) -> str:
    """What defines an artifact's behaviour: its weight and tensor files and its ``meta.json`` less the
    record of how it was trained (``training``, ``versions``: a resumed run with other evaluation settings
    rewrites those, the policy is the same)."""
    h = hashlib.sha256()
    for f in sorted(path.glob("*")):
        if f.is_file() and f.name != "meta.json":
            h.update(f.name.encode() + f.read_bytes())
    meta = path / "meta.json"
    if meta.is_file():
        try:
            acts = {k: v for k, v in json.loads(meta.read_text()).items() if k not in ("training", "versions")}
        except ValueError:  # unreadable: its bytes are its identity (loading it fails with a typed error)
            acts = {"bytes": meta.read_text(errors="replace")}
        h.update(b"meta.json" + json.dumps(acts, sort_keys=True).encode())
    return h.hexdigest()[:12]
