"""Studies over policies in the real environment: rolling a policy out (``rollouts``), per-seed tables
(``tables``), the headroom audit (``headroom``, its report in ``headroom_report``; CLI ``python -m
mixagent.study headroom``) and the comparison of every method (``compare``, its report in
``compare_report``; CLI ``python -m mixagent.study compare``), both over one episode engine
(``episodes``: workers, the episode cache, policy identities) that the agent's online evaluation uses too.
Names load lazily."""

from __future__ import annotations

from mixagent._lazy import lazy_exports

__all__ = ["Rollout", "rollout", "iter_rollout", "summarize", "roll_all", "format_table", "METRICS", "AuditConfig",
           "run_audit", "make_report", "CompareConfig", "run_compare", "make_compare_report"]

__getattr__, __dir__ = lazy_exports(__name__, {
    "Rollout": "rollouts", "rollout": "rollouts", "iter_rollout": "rollouts", "summarize": "tables",
    "roll_all": "tables", "format_table": "tables", "METRICS": "tables", "AuditConfig": "headroom",
    "run_audit": "headroom", "make_report": "headroom_report", "CompareConfig": "compare",
    "run_compare": "compare", "make_compare_report": "compare_report"})
