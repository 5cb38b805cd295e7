"""``python -m mixagent.study``: ``audit`` (alias ``headroom``: the headroom audit of an environment,
``mixagent.study.audit``),
``compare`` (every method on held-out seeds with the report, ``mixagent.study.compare``), ``ranks`` (a rank
table across comparisons), ``generalize`` (an agent against the baselines in held-out cases,
``mixagent.study.generalize``), ``settings`` (a settings suite, checked, as a table), ``oracle-table``
(per held-out setting of a suite, the oracle over the single best fixed rule, ``mixagent.study.oracle_table``)
and ``efficiency`` (target data efficiency over unique target budgets, ``mixagent.study.efficiency``)."""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys

from mixagent.errors import MixagentError

_OVERRIDE = re.compile(r"^[A-Za-z_][\w.]*=")


def _flags_first(argv: list[str]) -> list[str]:
    """``key=value`` overrides moved after every flag, so ``--seeds 0 1 2 regmix_runs=32`` works (``--seeds``
    would otherwise try to read the override as a seed); a ``--env-set`` value stays with its flag."""
    keep, moved, after_env_set = [], [], False
    for token in argv:
        if not after_env_set and _OVERRIDE.match(token):
            moved.append(token)
        else:
            keep.append(token)
        after_env_set = token == "--env-set"
    return keep + (["--", *moved] if moved else [])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mixagent.study", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("audit", aliases=["headroom"], help="the headroom audit: static grid vs schedules vs an oracle, "
                                                           ">= 3 held-out seeds")
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
    c = sub.add_parser("compare", help="every method (baselines, published methods, agents) on held-out seeds")
    c.add_argument("--config", help="a comparison YAML (configs/compare/*.yaml); flags below override it")
    c.add_argument("--name", help="the directory under --out (default from the config)")
    c.add_argument("--env", help="env spec file or id, e.g. mixagent/math-cpt-v1")
    c.add_argument("--env-set", action="append", default=[], metavar="KEY=VALUE", help="spec override (repeatable)")
    c.add_argument("--policies", help="comma-separated specs: uniform,doremi,regmix,runs/agent/default/rl ...")
    c.add_argument("--seeds", type=int, nargs="+", help="held-out evaluation seeds")
    c.add_argument("--tune-seeds", type=int, nargs="+", help="seeds of reference and proxy runs")
    c.add_argument("--workers", type=int)
    c.add_argument("--launcher", choices=["local", "inline", "ray"])
    c.add_argument("--out", help="output root (the config's; configs/compare/*.yaml use audits/compare, committed)")
    c.add_argument("overrides", nargs="*", help="key=value config overrides, e.g. regmix_runs=32")
    r = sub.add_parser("ranks", help="a rank table across finished comparisons")
    r.add_argument("dirs", nargs="+", help="comparison directories (audits/compare/<name>)")
    g = sub.add_parser("generalize", help="an agent against the baselines in held-out cases, one table")
    g.add_argument("--config", default="configs/generalize/v1.yaml", help="a protocol YAML (configs/generalize/)")
    g.add_argument("--cases", help="comma-separated case names to run (default all; the table covers every "
                   "finished case)")
    g.add_argument("--report-only", action="store_true", help="rebuild the table from finished cases only")
    g.add_argument("overrides", nargs="*", help="key=value config overrides, e.g. workers=1")
    s = sub.add_parser("settings", help="a settings suite, checked: its training distribution and held-out settings")
    s.add_argument("--suite", default="configs/settings/math-cpt-v1.yaml", help="a suite YAML (configs/settings/)")
    o = sub.add_parser("oracle-table", help="per held-out setting of a suite: the oracle over the single best fixed "
                       "rule, gated at 3 pooled seed std")
    o.add_argument("--config", default="configs/oracle/math-cpt-v1.yaml", help="an oracle-table YAML (configs/oracle/)")
    o.add_argument("--settings", help="comma-separated held-out settings to run (default all)")
    o.add_argument("overrides", nargs="*", help="key=value config overrides, e.g. sbf_settings=4")
    e = sub.add_parser("efficiency", help="target data efficiency of the oracle table's rules in its budget settings "
                       "(the target-only family over unique target budgets)")
    e.add_argument("--config", default="configs/oracle/math-cpt-v1.yaml", help="the oracle-table YAML")
    e.add_argument("--budgets", help="comma-separated unique target budgets of the family (default 16384 .. 524288)")
    e.add_argument("overrides", nargs="*", help="key=value oracle-config overrides")
    k = sub.add_parser("closed-gap", help="policies between the single best fixed rule (0) and the per-setting oracle "
                       "(1) over an oracle table's held-out settings, with bootstrap intervals")
    k.add_argument("--config", default="configs/closed_gap/math-cpt-v1.yaml",
                   help="a closed-gap YAML (configs/closed_gap/)")
    k.add_argument("--policies", help="comma-separated policies (probe_commit = the table's; rules, method specs, "
                   "agent artifact directories); default the config's")
    k.add_argument("--settings", help="comma-separated held-out settings to judge (e.g. one attempt's); default "
                   "every finished row")
    k.add_argument("overrides", nargs="*", help="key=value config overrides, e.g. partial=true name=agent-v2")
    args = parser.parse_args(_flags_first(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.cmd == "ranks":
        return _ranks(args.dirs)
    if args.cmd in ("audit", "headroom"):
        return _headroom(args)
    if args.cmd == "generalize":
        return _generalize(args)
    if args.cmd == "settings":
        return _settings(args)
    if args.cmd == "oracle-table":
        return _oracle_table(args)
    if args.cmd == "efficiency":
        return _efficiency(args)
    if args.cmd == "closed-gap":
        return _closed_gap(args)
    return _compare(args)


def _overrides(args: argparse.Namespace, flags: dict) -> list[str]:
    """``key=value`` overrides from the positional ones, then the flags given (lists in YAML flow form), then
    ``--env-set`` as ``env_overrides``."""
    out = list(args.overrides)
    for key, value in flags.items():
        if isinstance(value, list) and value:
            out.append(f"{key}={json.dumps(value)}")
        elif value is not None and not isinstance(value, list):
            out.append(f"{key}={value}")
    if args.env_set:
        out.append(f"env_overrides={json.dumps(args.env_set)}")
    return out


def _run(job, what: str) -> int:
    """Run ``job() -> run`` (its report written to ``run.dir/report.md``); a user error is one ``error:`` line
    and exit code 2."""
    try:
        run = job()
    except MixagentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print((run.dir / "report.md").read_text())
    print(f"{what} in {run.dir}")
    return 0


def _headroom(args: argparse.Namespace) -> int:
    from mixagent.config import load_config
    from mixagent.study.audit import AuditConfig, run_audit
    from mixagent.study.audit_report import make_report

    flags = {"env": args.env, "seeds": args.seeds, "tune_seeds": args.tune_seeds, "oracle_trials": args.trials,
             "workers": args.workers, "launcher": args.launcher, "out": args.out}

    def job():
        run = run_audit(load_config(AuditConfig, args.config, _overrides(args, flags)), report_only=args.report_only)
        make_report(run)
        return run
    return _run(job, "report, results and plots")


def _compare(args: argparse.Namespace) -> int:
    from mixagent.config import load_config
    from mixagent.policies.registry import split_policies
    from mixagent.study.compare import CompareConfig, run_compare
    from mixagent.study.compare_report import make_compare_report

    policies = split_policies(args.policies) if args.policies else None
    flags = {"name": args.name, "env": args.env, "workers": args.workers, "launcher": args.launcher, "out": args.out,
             "policies": policies, "seeds": args.seeds, "tune_seeds": args.tune_seeds}

    def job():
        run = run_compare(load_config(CompareConfig, args.config, _overrides(args, flags)))
        make_compare_report(run)
        return run
    return _run(job, "table, report and plots")


def _generalize(args: argparse.Namespace) -> int:
    from mixagent.config import load_config
    from mixagent.paths import REPO_ROOT
    from mixagent.study.generalize import GeneralizeConfig, run_generalize

    cases = [c.strip() for c in args.cases.split(",") if c.strip()] if args.cases is not None else None
    try:
        cfg = load_config(GeneralizeConfig, args.config, args.overrides)
        table = run_generalize(cfg, cases, report_only=args.report_only)
    except MixagentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = REPO_ROOT / cfg.out / f"{cfg.name}-generalize"
    print((out / "table.md").read_text())
    print(f"table and plot in {out}")
    return 0 if table["cases"] else 1


def _settings(args: argparse.Namespace) -> int:
    from mixagent.env.setting import load_suite

    try:
        suite = load_suite(args.suite)
    except MixagentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    train = suite.training_settings()
    print(f"suite {suite.name} (hash {suite.suite_hash()}, family {suite.env}): {len(train)} training settings, "
          f"{len({s.run_hash() for s in train})} distinct runs (lam is relabelled)")
    for axis, values in suite.training_values().items():
        print(f"  train {axis}: {values}")
    print("\n| held-out setting | extrapolates | differs from the defaults | setting hash |\n|---|---|---|---|")
    default = suite.setting()
    for name, setting in suite.held_out_settings().items():
        diff = {k: v for k, v in setting.to_json().items() if v != getattr(default, k)}
        print(f"| {name} | {', '.join(suite.extrapolates(setting)) or 'interpolates'} | "
              f"{', '.join(f'{k}={v}' for k, v in diff.items())} | {setting.setting_hash()} |")
    return 0


def _oracle_table(args: argparse.Namespace) -> int:
    from mixagent.config import load_config
    from mixagent.study.oracle_table import OracleConfig, run_oracle_table

    overrides = list(args.overrides)
    if args.settings:
        overrides.append(f"settings={json.dumps([x.strip() for x in args.settings.split(',') if x.strip()])}")
    try:
        cfg = load_config(OracleConfig, args.config, overrides)
        table = run_oracle_table(cfg)
    except MixagentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = cfg.table_dir(table["suite"])
    print((out / "table.md").read_text())
    print(f"table and plot in {out}")
    return 0


def _efficiency(args: argparse.Namespace) -> int:
    from mixagent.config import load_config
    from mixagent.paths import REPO_ROOT
    from mixagent.study.efficiency import DEFAULT_BUDGETS, run_efficiency
    from mixagent.study.oracle_table import OracleConfig

    try:
        budgets = tuple(int(x) for x in args.budgets.split(",")) if args.budgets else DEFAULT_BUDGETS
    except ValueError:
        print(f"error: --budgets must be comma-separated whole numbers of tokens, got {args.budgets!r}",
              file=sys.stderr)
        return 2
    try:
        cfg = load_config(OracleConfig, args.config, list(args.overrides))
        result = run_efficiency(cfg, budgets)
    except MixagentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = REPO_ROOT / cfg.out / result["suite"] / "efficiency"
    print((out / "table.md").read_text())
    print(f"table and plot in {out}")
    return 0


def _closed_gap(args: argparse.Namespace) -> int:
    from mixagent.config import load_config
    from mixagent.policies.registry import split_policies
    from mixagent.study.closed_gap_run import ClosedGapConfig, run_closed_gap

    overrides = list(args.overrides)
    if args.policies:
        overrides.append(f"policies={json.dumps(split_policies(args.policies))}")
    if args.settings:
        overrides.append(f"settings={json.dumps([x.strip() for x in args.settings.split(',') if x.strip()])}")
    try:
        cfg = load_config(ClosedGapConfig, args.config, overrides)
        report = run_closed_gap(cfg)
    except MixagentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from mixagent.paths import REPO_ROOT

    out = REPO_ROOT / report["table"]
    where = out.parent / "closed-gap" / cfg.name
    print((where / "closed_gap.md").read_text())
    print(f"report and plot in {where}")
    return 0


def _ranks(dirs: list[str]) -> int:
    from pathlib import Path

    from mixagent.study.compare_report import rank_table

    tables = []
    for d in dirs:
        path = Path(d) / "table.json"
        if not path.is_file():
            print(f"error: {path} not found: run `python -m mixagent.study compare` for it first", file=sys.stderr)
            return 2
        tables.append(json.loads(path.read_text()))
    print(rank_table(tables))
    return 0


if __name__ == "__main__":
    sys.exit(main())
