"""Studies over policies in the real environment: rolling a policy out (``rollouts``) and comparison tables
over seeds (``tables``). The headroom audit, reports and plots land here too. Names load lazily."""

from __future__ import annotations

from mixagent._lazy import lazy_exports

__all__ = ["Rollout", "rollout", "iter_rollout", "summarize", "compare", "format_table", "METRICS"]

__getattr__, __dir__ = lazy_exports(__name__, {
    "Rollout": "rollouts", "rollout": "rollouts", "iter_rollout": "rollouts", "summarize": "tables",
    "compare": "tables", "format_table": "tables", "METRICS": "tables"})
