"""``python -m mixagent.trajectories collect|ls|stats|verify|pack``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from mixagent.errors import MixagentError
from mixagent.paths import REPO_ROOT


def _run_path(name: str, root: Path) -> Path:
    path = Path(name)
    return path if (path / "meta.json").exists() or path.is_absolute() else root / name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mixagent.trajectories", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("collect", help="collect trajectories (see configs/collect/)")
    p.add_argument("--config", default=str(REPO_ROOT / "configs/collect/default.yaml"))
    p.add_argument("--resume", action="store_true", help="continue the run if it exists")
    p.add_argument("--launcher", choices=["local", "ray", "inline"], help="override the config's launcher")
    p.add_argument("--address", help="Ray cluster address (implies --launcher ray)")
    p.add_argument("overrides", nargs="*", help="key=value config overrides, e.g. trees=4 run=mine")
    for name, help_ in (("ls", "list runs"), ("stats", "statistics of a run"), ("verify", "check every file")):
        q = sub.add_parser(name, help=help_)
        if name != "ls":
            q.add_argument("run", help="run name (under --root) or path")
        q.add_argument("--root", default=str(REPO_ROOT / "trajectories"), help="directory of runs")
        if name == "stats":
            q.add_argument("--json", action="store_true", help="print JSON")
        if name == "verify":
            q.add_argument("--drop-bad", action="store_true",
                           help="delete bad trajectories from the run so --resume collects them again")
    q = sub.add_parser("pack", help="pack a finished run into one checksummed archive (reference datasets)")
    q.add_argument("run", help="run name (under --root) or path")
    q.add_argument("--out", required=True, help="output directory, e.g. trajectories/reference/math-cpt-v1")
    q.add_argument("--root", default=str(REPO_ROOT / "trajectories"), help="directory of runs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return {"collect": _collect, "ls": _ls, "stats": _stats, "verify": _verify, "pack": _pack}[args.cmd](args)
    except MixagentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _collect(args) -> int:
    from mixagent.config import load_config
    from mixagent.trajectories.collector import CollectConfig, collect

    overrides = list(args.overrides)
    if args.address:
        overrides += ["launcher=ray", f"address={args.address}"]
    elif args.launcher:
        overrides.append(f"launcher={args.launcher}")
    cfg = load_config(CollectConfig, args.config, overrides)
    if cfg.suite:
        from mixagent.trajectories.suite import collect_suite

        summaries = collect_suite(cfg, resume=args.resume)
        for summary in summaries:
            print(summary.format())
        print(f"{len(summaries)} setting(s) collected now; index {cfg.run_dir / 'suite.json'}")
        return 0
    summary = collect(cfg, resume=args.resume)
    print(summary.format())
    return 0


def _ls(args) -> int:
    from mixagent.trajectories.collector import run_stats
    from mixagent.trajectories.store import Run, list_runs

    runs = list_runs(Path(args.root))
    if not runs:
        print(f"no runs under {args.root} (collect one: make collect-trajectories)")
        return 0
    print("| run | env | trees | trajectories | transitions | flagged | MB | status |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for path in runs:
        try:
            run = Run(path)
        except MixagentError as exc:
            print(f"| {path.name} | unreadable: {str(exc)[:80]} | | | | | | |")
            continue
        s = run_stats(run)
        print(f"| {s['run']} | {s['env']} | {s['trees_done']}/{s['trees']} | {s['trajectories']} | {s['transitions']} "
              f"| {s['flagged']} | {s['bytes'] / 1e6:.1f} | {'complete' if run.complete else 'partial (--resume)'} |")
    return 0


def _stats(args) -> int:
    from mixagent.trajectories.collector import format_stats, run_stats
    from mixagent.trajectories.store import Run

    stats = run_stats(Run(_run_path(args.run, Path(args.root))), read_files=True)
    print(json.dumps(stats, indent=1) if args.json else format_stats(stats))
    return 0


def _verify(args) -> int:
    from mixagent.paths import atomic_write_json
    from mixagent.trajectories.store import Run

    run = Run(_run_path(args.run, Path(args.root)))
    bad = run.problems()
    for tid, why in bad.items():
        print(f"{tid}: {why}")
    if not bad:
        print(f"{run.name}: {len(run.entries)} trajectories verified (schema, structure, sha256)")
        return 0
    if args.drop_bad and run.packed:
        print(f"{run.path} is a packed (read-only) run: restore it from git instead of dropping trajectories")
        return 1
    if args.drop_bad:
        for tid in bad:
            entry = run.entries.pop(tid)
            (run.path / entry["file"]).unlink(missing_ok=True)
            run.manifest["trees_done"] = [t for t in run.manifest["trees_done"] if t != entry["tree"]]
        atomic_write_json(run.path / "manifest.json", run.manifest)
        print(f"dropped {len(bad)} trajectories; collect with --resume to collect them again")
        return 0
    return 1


def _pack(args) -> int:
    from mixagent.trajectories.store import pack_run

    out = pack_run(_run_path(args.run, Path(args.root)), args.out)
    meta = json.loads((out / "meta.json").read_text())["packed"]
    print(f"packed {len(meta['order'])} trajectories: {meta['raw_bytes'] / 1e6:.2f} MB -> {meta['bytes'] / 1e6:.2f} MB "
          f"in {out} (sha256 {meta['sha256'][:16]}...)")
    full = json.loads((out / "meta.json").read_text())
    proxy = full.get("proxy") or {}
    if proxy.get("reference"):  # envs of this spec then score episodes with the dataset's own extremes
        from mixagent.env.references import commit_reference
        from mixagent.env.rewards import Reference

        path = commit_reference(Reference.from_json(proxy["reference"]), full["env"]["id"], proxy["base_model"])
        print(f"reference extremes committed to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
