"""``python -m mixagent.study headroom``: the headroom audit of an environment (see
``mixagent.study.headroom``)."""

from __future__ import annotations

import argparse
import logging
import sys

from mixagent.errors import MixagentError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mixagent.study", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("headroom", help="static grid vs schedules vs an oracle, >= 3 held-out seeds")
    p.add_argument("--config", help="an audit YAML (configs/audit/*.yaml); flags below override it")
    p.add_argument("--env", help="env spec file or id, e.g. envs/math-cpt.yaml or mixagent/math-cpt-v1")
    p.add_argument("--env-set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a spec field for a design variant (repeatable), e.g. optim.decay_fraction=0.5")
    p.add_argument("--seeds", type=int, nargs="+", help="held-out evaluation seeds")
    p.add_argument("--tune-seeds", type=int, nargs="+", help="seeds the oracle search is scored on")
    p.add_argument("--trials", type=int, help="oracle search trials (0 = no oracle)")
    p.add_argument("--workers", type=int, help="worker processes (0 = one per core)")
    p.add_argument("--launcher", choices=["local", "inline", "ray"])
    p.add_argument("--out", help="output root (default audits/, committed)")
    p.add_argument("--report-only", action="store_true",
                   help="rebuild the report from stored (e.g. committed) results without running anything")
    p.add_argument("overrides", nargs="*", help="key=value audit config overrides, e.g. static_rhos=[0,0.5,1]")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from mixagent.config import load_config
    from mixagent.study.headroom import AuditConfig, run_audit
    from mixagent.study.headroom_report import make_report

    flags = {"env": args.env, "seeds": args.seeds, "tune_seeds": args.tune_seeds, "oracle_trials": args.trials,
             "workers": args.workers, "launcher": args.launcher, "out": args.out}
    overrides = [*args.overrides] + [f"{k}={v}" for k, v in flags.items() if v is not None and not isinstance(v, list)]
    overrides += [f"{k}=[{','.join(map(str, v))}]" for k, v in flags.items() if isinstance(v, list)]
    if args.env_set:
        overrides.append("env_overrides=[" + ",".join(f"'{s}'" for s in args.env_set) + "]")
    try:
        cfg = load_config(AuditConfig, args.config, overrides)
        run = run_audit(cfg, report_only=args.report_only)
        make_report(run)
    except MixagentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print((run.dir / "report.md").read_text())
    print(f"report, results and plots in {run.dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
