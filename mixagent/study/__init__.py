"""Research over policies in the real environment: the headroom audit (``audit``, its report in
``audit_report``; ``mixagent audit``), the comparison of every method (``compare``, its report in
``compare_report``; ``mixagent compare``), the generalization protocol (``generalize``, with Trainer
deploy cases in ``deploy_case``; ``mixagent generalize``) and per-seed tables (``tables``). Episodes come from
:mod:`mixagent.rollout`. Names load lazily."""

from __future__ import annotations

from mixagent._lazy import lazy_exports

__all__ = ["roll_all", "format_table", "METRICS", "AuditConfig", "run_audit", "make_report", "CompareConfig",
           "run_compare", "make_compare_report", "GeneralizeConfig", "run_generalize"]

__getattr__, __dir__ = lazy_exports(__name__, {
    "roll_all": "tables", "format_table": "tables", "METRICS": "tables", "AuditConfig": "audit",
    "run_audit": "audit", "make_report": "audit_report", "CompareConfig": "compare", "run_compare": "compare",
    "make_compare_report": "compare_report", "GeneralizeConfig": "generalize", "run_generalize": "generalize"})
