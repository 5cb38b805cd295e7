"""Migrate an episode cache made before the cache recorded its base checkpoint (issue 28): for an env whose
reward has no reference runs (``balanced``, ``balanced_bpb``), the cache now serves a directory's episodes only
when its ``base.json`` names this machine's base checkpoint. This records it for the episodes that were made
from it, and only after checking: every stored episode's start evaluation (the base model's, seed-independent)
must equal, to the last digit, the start evaluation of the base built here. Any mismatch: nothing is written and
the episodes stay stale (they were made from another base; rerun them).

    .venv/bin/python scripts/stamp_cache_base.py envs/math-natural.yaml [--root audits/compare]
"""

from __future__ import annotations

import argparse
import json
import sys

from mixagent.env.environment import MixingEnv
from mixagent.paths import REPO_ROOT, atomic_write_json
from mixagent.rollout.cache import EpisodeCache, unpinned_base


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("env", help="an env spec file (envs/math-natural.yaml)")
    ap.add_argument("--root", default="audits/compare", help="the cache's root (a comparison's out)")
    args = ap.parse_args(argv)
    env = MixingEnv(REPO_ROOT / args.env)
    base = unpinned_base(env)
    if base is None:
        print(f"{env.spec_.env_id}: its reward has reference runs, which pin the base checkpoint; nothing to do")
        return 0
    spec = env.spec_
    cache = EpisodeCache(REPO_ROOT / args.root, (spec.name, spec.version, spec.spec_hash()))
    start = env.reset(seed=0)[1]["eval"]
    files = sorted(cache.dir.glob("*/*.json"))
    bad = [f for f in files if json.loads(f.read_text()).get("start") != start]
    if not files or bad:
        print(f"{cache.dir}: {len(bad)} of {len(files)} stored episodes start from another base model than {base} "
              f"(e.g. {bad[0].relative_to(REPO_ROOT) if bad else 'none stored'}); nothing written: rerun them")
        return 1
    atomic_write_json(cache.dir / "base.json", {"base": base})
    print(f"{cache.dir.relative_to(REPO_ROOT)}: all {len(files)} episodes start from base {base}; base.json written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
