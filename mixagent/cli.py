"""``mixagent <job> ...`` (installed console script; ``python -m mixagent <job> ...`` is the same): one
command line for every job. Each job is the module's own command line, loaded only when it runs, so
``mixagent --help`` stays instant.

The older entry points keep working and run the same code: ``python -m mixagent.data``,
``.env.base_model``, ``.trajectories``, ``.agent``, ``.train_agent`` (the mission's), ``.model_based``,
``.study``, ``.deploy`` and ``.demo``.
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
from collections.abc import Callable

__all__ = ["Job", "JOBS", "main"]


@dataclasses.dataclass(frozen=True)
class Job:
    """A job: ``module:function`` called with ``prefix + argv`` (the function returns the exit code)."""

    target: str
    help: str
    prefix: tuple[str, ...] = ()
    group: str = "product"

    def run(self, argv: list[str]) -> int:
        module, function = self.target.split(":")
        fn: Callable[[list[str]], int] = getattr(importlib.import_module(module), function)
        return int(fn([*self.prefix, *argv]) or 0)


JOBS: dict[str, Job] = {
    "data": Job("mixagent.data.__main__:main", "build the corpora and tokenizer from registry packages (data build)"),
    "base-model": Job("mixagent.env.base_model:main", "pre-train and cache a base checkpoint (the proxy's by default)"),
    "collect": Job("mixagent.trajectories.__main__:main", "collect branching trajectories into the crash-safe store",
                   ("collect",)),
    "trajectories": Job("mixagent.trajectories.__main__:main", "list, summarise, verify or pack collected runs"),
    "train-agent": Job("mixagent.agent.__main__:main", "train the agent: BC, then CQL (d3rlpy); FQE; online table"),
    "deploy": Job("mixagent.deploy.__main__:main", "a policy drives the mixture of a Hugging Face Trainer run (YAML)"),
    "feature-ranges": Job("mixagent.agent.feature_ranges:main", "record a policy artifact's feature ranges (the "
                          "deploy job's policy.ood guard)"),
    "demo": Job("mixagent.demo:main", "the whole pipeline at demo scale (make demo)"),
    "audit": Job("mixagent.study.__main__:main", "headroom audit: static grid vs schedules vs an oracle", ("audit",),
                 "research"),
    "compare": Job("mixagent.study.__main__:main", "every method (baselines, published methods, agents) on held-out "
                   "seeds", ("compare",), "research"),
    "generalize": Job("mixagent.study.__main__:main", "the agent against the baselines in held-out cases",
                      ("generalize",), "research"),
    "ranks": Job("mixagent.study.__main__:main", "a rank table across finished comparisons", ("ranks",), "research"),
    "settings": Job("mixagent.study.__main__:main", "a settings suite, checked: training distribution and held-out "
                    "settings", ("settings",), "research"),
    "oracle-table": Job("mixagent.study.__main__:main", "per held-out setting: the oracle over the single best fixed "
                        "rule (the closed gap's denominator)", ("oracle-table",), "research"),
    "efficiency": Job("mixagent.study.__main__:main", "target data efficiency over unique target budgets (the "
                      "oracle table's budget settings)", ("efficiency",), "research"),
    "closed-gap": Job("mixagent.study.__main__:main", "policies between the single best fixed rule and the per-setting "
                      "oracle, with bootstrap intervals (agent v2's bar)", ("closed-gap",), "research"),
    "judge-check": Job("mixagent.study.judge_check:main", "is the judge a judge: validity against corrupted text, and "
                       "which models' continuations it tells apart", (), "research"),
    "world-model": Job("mixagent.model_based.__main__:world_model", "fit, measure and commit the world model "
                       "(surrogate env)", (), "research"),
    "world-model-settings": Job("mixagent.model_based.__main__:world_model_settings", "fit and measure the world "
                                "model across a suite's settings (per setting, left out)", (), "research"),
    "plan": Job("mixagent.model_based.__main__:plan", "model-predictive control over a world model, in the real env",
                (), "research"),
    "variants": Job("mixagent.model_based.__main__:variants", "every agent variant against the baselines, one table",
                    (), "research"),
    "per-domain": Job("mixagent.agent.__main__:per_domain", "behaviour cloning of the per-domain policy (any domain "
                      "space)", (), "research"),
}


def _usage() -> str:
    width = max(map(len, JOBS))
    lines = ["usage: mixagent <job> [args ...]   (python -m mixagent <job> ... is the same; "
             "mixagent <job> --help for a job's options)"]
    for group, title in (("product", "jobs"), ("research", "research jobs")):
        lines += ["", f"{title}:"] + [f"  {name:<{width}}  {job.help}" for name, job in JOBS.items()
                                      if job.group == group]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run ``mixagent <job> ...``; returns the exit code (2 for an unknown job, with suggestions)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from mixagent import __version__

        print(f"mixagent {__version__}")
        return 0
    if argv[0] not in JOBS:
        from mixagent.errors import suggest

        print(f"error: unknown job {argv[0]!r}{suggest(argv[0], JOBS)}\n\n{_usage()}", file=sys.stderr)
        return 2
    return JOBS[argv[0]].run(argv[1:])
