"""Rebuild every committed audit report (each ``audits/**/audit.json``), comparison report and the
generalization table from the stored results, then say which committed files changed. Nothing is trained: a
comparison whose episodes are not all stored (a method changed since it ran) is skipped and named, as is one
whose base checkpoint is not built here unless ``--build-bases``. The agent variants' table is rebuilt from
its committed policies and episodes (skipped and named if a variant would train). Two design probes without an
``audit.json`` are not rebuilt. A
refactor that moves code must leave this at "0 files changed".

    .venv/bin/python scripts/rebuild_results.py                 # comparisons whose base is built here
    .venv/bin/python scripts/rebuild_results.py --build-bases   # every comparison (pre-trains the 2m, 8m bases)
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections.abc import Iterator

from mixagent.paths import REPO_ROOT


class NotStored(Exception):
    """A comparison needs episodes that are not stored (a method's rules or hyperparameters changed, or its
    episodes are stale): it is skipped and named, the others are rebuilt."""


class _NoRuns:
    """A launcher that refuses to run anything: rebuilding must read stored results only."""

    def events(self, setup, tasks: list) -> Iterator:
        raise NotStored(f"{len(tasks)} task(s) are not stored (first: {tasks[0]!r}); rerun it with mixagent "
                        f"compare")

    def close(self) -> None:
        pass


def main(argv: list[str] | None = None) -> int:
    build_bases = "--build-bases" in (sys.argv[1:] if argv is None else argv)
    from mixagent.config import from_dict, load_config
    from mixagent.env.base_model import base_dir, committed_dir
    from mixagent.env.spec import load_spec
    from mixagent.errors import MixagentError, UsageError
    from mixagent.model_based.variants import VariantsConfig, run_variants
    from mixagent.rollout.seeds import resolve_env
    from mixagent.study.audit import AuditConfig, run_audit
    from mixagent.study.audit_report import make_report
    from mixagent.study.compare import CompareConfig, run_compare
    from mixagent.study.compare_report import make_compare_report
    from mixagent.study.generalize import GeneralizeConfig, run_generalize

    for stored in sorted((REPO_ROOT / "audits").glob("**/audit.json")):  # every audit that kept its config
        cfg = from_dict(AuditConfig, json.loads(stored.read_text()), str(stored))
        root = stored.parent.parent.parent  # <root>/<env name>-v<version>/<spec hash>/audit.json, wherever it ran
        make_report(run_audit(dataclasses.replace(cfg, out=str(root.relative_to(REPO_ROOT))), report_only=True))
        print(f"audit report: {stored.parent.relative_to(REPO_ROOT)}")
    skipped = []
    for stored in sorted((REPO_ROOT / "audits" / "compare").glob("*/compare.json")):
        try:
            cfg = from_dict(CompareConfig, json.loads(stored.read_text())["config"], str(stored))
        except MixagentError as exc:  # e.g. a policy artifact that was never committed
            skipped.append(f"{stored.parent.name}: {str(exc).splitlines()[-1].strip()}")
            continue
        base = load_spec(resolve_env(cfg.env), cfg.env_overrides).base_config()
        if not build_bases and not any((d / "meta.json").is_file() for d in (base_dir(base), committed_dir(base))):
            skipped.append(f"{stored.parent.name}: its base checkpoint ({base.size}) is not built here; pass "
                           f"--build-bases to pre-train it (minutes to an hour on 2 cores)")
            continue
        try:
            make_compare_report(run_compare(cfg, launcher=_NoRuns()))
        except NotStored as exc:
            skipped.append(f"{stored.parent.name}: {exc}")
            continue
        print(f"comparison: {stored.parent.name}")
    try:
        run_variants(load_config(VariantsConfig, "configs/agent/variants.yaml", []), progress=False,
                     launcher=_NoRuns(), stored_only=True)
        print("variants table: v1-variants")
    except (NotStored, UsageError) as exc:
        skipped.append(f"variants: {exc}")
    run_generalize(load_config(GeneralizeConfig, "configs/generalize/v1.yaml", []), report_only=True)
    print("generalization table: v1")
    from mixagent.study.judge_check import format_check

    for stored in sorted((REPO_ROOT / "audits" / "judge").glob("*/check.json")):  # the judge checks
        (stored.parent / "check.md").write_text(format_check(json.loads(stored.read_text())))
        print(f"judge check: {stored.parent.name}")
    changed = subprocess.run(["git", "status", "--short", "audits/"], cwd=REPO_ROOT, capture_output=True,
                             text=True, check=True).stdout.splitlines()
    print(f"{len(skipped)} comparisons cannot be rebuilt here" + "".join(f"\n  {s}" for s in skipped))
    print(f"{len(changed)} files changed under audits/" + "".join(f"\n  {c}" for c in changed))
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main())
