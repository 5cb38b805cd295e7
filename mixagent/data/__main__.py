"""CLI: ``python -m mixagent.data build [--config FILE] [--force] [key=value ...]`` and ``list``."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from mixagent.config import load_config
from mixagent.data.build import DataConfig, build, corpora_dir, read_manifest
from mixagent.data.sources import SOURCES
from mixagent.errors import MixagentError
from mixagent.paths import CONFIGS_DIR


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mixagent.data", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build the corpora (skipped when up to date)")
    b.add_argument("--config", default=str(CONFIGS_DIR / "data/default.yaml"))
    b.add_argument("--force", action="store_true", help="rebuild even when up to date")
    b.add_argument("overrides", nargs="*", help="key=value overrides, e.g. corpora.gcide.max_bytes=1000000")
    sub.add_parser("list", help="list sources and built corpora")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.cmd == "build":
            cfg = load_config(DataConfig, args.config, args.overrides)
            out = build(cfg, force=args.force)
            info = json.loads((out / "BUILD.json").read_text())
            print(f"{'corpus':10s} {'package':32s} {'train MB':>9s} {'val MB':>7s} {'test MB':>7s} {'passages':>9s}")
            for name in info["corpora"]:
                m = read_manifest(name, out)
                s = m["splits"]
                print(f"{name:10s} {m['package'] + ' ' + m['package_version']:32.32s} "
                      f"{s['train']['bytes'] / 1e6:9.2f} {s['val']['bytes'] / 1e6:7.2f} "
                      f"{s['test']['bytes'] / 1e6:7.2f} "
                      f"{sum(v['passages'] for v in s.values()):9d}")
            for name, why in info["skipped"].items():
                print(f"{name:10s} SKIPPED (optional): {why.splitlines()[0]}")
        else:
            built = corpora_dir()
            for name, src in SOURCES.items():
                state = "built" if (built / name / "manifest.json").exists() else "not built"
                print(f"{name:10s} {state:10s} {src.package:32s} {src.description}")
    except MixagentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
