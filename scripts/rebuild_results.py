"""Rebuild every committed audit report, comparison report and the generalization table from the stored
results (no model is trained: a comparison whose episodes are not all stored stops with an error), then
say which committed files changed. A refactor that moves code must leave this at "0 files changed".

    .venv/bin/python scripts/rebuild_results.py          # rebuild, then `git status --short audits/`
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

from mixagent.paths import REPO_ROOT


class _NoRuns:
    """A launcher that refuses to run anything: rebuilding must read stored results only."""

    def events(self, setup, tasks: list[tuple]) -> Iterator:
        raise SystemExit(f"error: {len(tasks)} episode task(s) are not stored; this script only rebuilds reports "
                         f"(first: {tasks[0][:3]})")

    def close(self) -> None:
        pass


def main() -> int:
    from mixagent.config import from_dict, load_config
    from mixagent.errors import MixagentError
    from mixagent.study.audit import AuditConfig, run_audit
    from mixagent.study.audit_report import make_report
    from mixagent.study.compare import CompareConfig, run_compare
    from mixagent.study.compare_report import make_compare_report
    from mixagent.study.generalize import GeneralizeConfig, run_generalize

    for spec in ("envs/math-cpt.yaml", "envs/math-natural.yaml"):
        make_report(run_audit(AuditConfig(env=spec), report_only=True))
        print(f"audit report: {spec}")
    skipped = []
    for stored in sorted((REPO_ROOT / "audits" / "compare").glob("*/compare.json")):
        try:
            cfg = from_dict(CompareConfig, json.loads(stored.read_text())["config"], str(stored))
        except MixagentError as exc:  # e.g. a policy artifact that was never committed
            skipped.append(f"{stored.parent.name}: {str(exc).splitlines()[-1].strip()}")
            continue
        make_compare_report(run_compare(cfg, launcher=_NoRuns()))
        print(f"comparison: {stored.parent.name}")
    run_generalize(load_config(GeneralizeConfig, "configs/generalize/v1.yaml", []), report_only=True)
    print("generalization table: v1")
    changed = subprocess.run(["git", "status", "--short", "audits/"], cwd=REPO_ROOT, capture_output=True,
                             text=True, check=True).stdout.splitlines()
    print(f"{len(skipped)} comparisons cannot be rebuilt here" + "".join(f"\n  {s}" for s in skipped))
    print(f"{len(changed)} files changed under audits/" + "".join(f"\n  {c}" for c in changed))
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main())
