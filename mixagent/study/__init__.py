"""Studies over policies in the real environment: rolling a policy out (``rollouts``), comparison tables
over seeds (``tables``) and the headroom audit (``headroom``, its report in ``headroom_report``; CLI
``python -m mixagent.study headroom``). Names load lazily."""

from __future__ import annotations

from mixagent._lazy import lazy_exports

__all__ = ["Rollout", "rollout", "iter_rollout", "summarize", "compare", "format_table", "METRICS", "AuditConfig",
           "run_audit", "make_report"]

__getattr__, __dir__ = lazy_exports(__name__, {
    "Rollout": "rollouts", "rollout": "rollouts", "iter_rollout": "rollouts", "summarize": "tables",
    "compare": "tables", "format_table": "tables", "METRICS": "tables", "AuditConfig": "headroom",
    "run_audit": "headroom", "make_report": "headroom_report"})
