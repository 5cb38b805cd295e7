"""A learned policy behind its out-of-distribution guard, as one policy: what a comparison or the closed gap
scores when it should score the agent *as deployed* (``guarded:agent=runs/agent/v2/bc,ood=clip``).

The deploy job guards a learned artifact with :class:`~mixagent.policies.guard.OODGuard`: before each decision the
observation is checked against the range every feature had in training, and an observation outside it is
logged and acted on (``warn``), acted on with its features clipped into the range (``clip``), or handed to a
fallback policy (``fallback``, e.g. the single best fixed rule). A comparison runs an artifact raw; this wraps
it the way the scheduler does (the policy is asked once per decision, ``act_clipped`` under ``clip``; the
fallback is asked at every decision, so its running state is its own), so the same policy can be scored both
ways. Its identity covers the artifact's content and the guard's settings.
"""

from __future__ import annotations

import numpy as np

from mixagent.domains import DomainSpace, DomainWeights
from mixagent.errors import ConfigError, UsageError
from mixagent.policies.ranges import GUARD_VERSION

__all__ = ["GuardedPolicy"]


class GuardedPolicy:
    """A policy artifact behind its out-of-distribution guard (see the module docstring).

    Args:
        natural: ``{domain: token share}`` of the run (the fallback's context).
        agent: the policy artifact directory (as given, or relative to the repository root); it must record
            its feature ranges for ``clip`` and ``fallback``.
        ood: ``warn``, ``clip`` or ``fallback`` (:data:`mixagent.policies.guard.OOD_MODES`).
        fallback: the fallback policy's spec, a baseline (``replay:0.6``, ``uniform``); used under ``fallback``.
        tolerance: how far beyond either end of a feature's training range still counts as in range, as a share
            of the range's width (>= 0).
        commit_after: ``N > 0``: the first ``N`` decisions are the policy's, guarded as above, and every later
            decision repeats decision ``N`` (a learned probe-then-commit: with ``N = 2`` the policy probes one
            segment and commits after reading its dynamics); 0: every decision is the policy's.

    Raises:
        ConfigError: no artifact at ``agent``, a bad mode, tolerance, fallback or ``commit_after``, or ``clip`` /
            ``fallback`` for an artifact that records no feature ranges.
    """

    name = "guarded"

    def __init__(self, natural=None, agent: str = "", ood: str = "fallback", fallback: str = "replay:0.5",
                 tolerance: float = 0.05, commit_after: int = 0) -> None:
        from mixagent.policies.artifact import load_policy
        from mixagent.policies.baselines import parse_baseline
        from mixagent.policies.guard import OODConfig, guard_problem
        from mixagent.policies.locate import artifact_dir, artifact_id

        path = artifact_dir(agent) if agent else None
        if path is None:
            raise ConfigError("policy", [f"guarded: agent={agent!r} is not a policy artifact directory; name one, "
                                         f"e.g. guarded:agent=runs/agent/v2/bc,ood=clip"])
        self._config = OODConfig(ood, fallback, float(tolerance))
        if isinstance(commit_after, bool) or not isinstance(commit_after, int | float) or commit_after < 0 \
                or commit_after != int(commit_after):
            raise ConfigError("policy", [f"guarded: commit_after must be a whole number of decisions >= 0 (0: never "
                                         f"commit; 2: probe one segment, then hold the second decision), got "
                                         f"{commit_after!r}"])
        if problems := self._config.check():
            raise ConfigError("policy", [f"guarded: {p}" for p in problems])
        self._policy = load_policy(path)
        if problem := guard_problem(self._policy, self._config):
            raise ConfigError("policy", [f"guarded: {problem}"])
        baseline = parse_baseline(fallback)
        if ood == "fallback" and baseline is None:
            raise ConfigError("policy", [f"guarded: fallback={fallback!r} is not a baseline; give the rule to fall "
                                         f"back to, e.g. the single best fixed rule (replay:0.6), uniform or natural"])
        self._baseline, self._natural = baseline, natural  # built at reset where a check had no natural shares
        self._fallback = baseline.build(natural) if ood == "fallback" and natural is not None else None
        # the fingerprint: the artifact by content, not path; the ranges the guard checks (meta training, which the
        # artifact's id leaves out) and the guard's rules version: re-recorded ranges or new rules are another policy
        self.agent_id = artifact_id(path)
        self.feature_ranges = getattr(self._policy, "feature_ranges", None)
        self.guard_version = GUARD_VERSION
        self.ood, self.fallback, self.tolerance = ood, fallback, float(tolerance)
        self._commit_after = int(commit_after)
        if self._commit_after:  # public (so in the fingerprint) only when set: the guarded specs before it keep theirs
            self.commit_after = self._commit_after
        self._held: DomainWeights | None = None
        self._guard = None
        self._decisions = self._affected = 0

    @property
    def decisions(self) -> int:
        """Decisions since the last :meth:`reset`."""
        return self._decisions

    @property
    def affected(self) -> int:
        """Decisions since the last :meth:`reset` whose observation was out of the training range."""
        return self._affected

    def reset(self, space: DomainSpace) -> None:
        from mixagent.policies.guard import OODGuard

        if self.ood == "fallback" and self._fallback is None:
            self._fallback = self._baseline.build(self._natural)  # ConfigError: the shares it needs are missing
        self._policy.reset(space)
        self._guard = OODGuard(self._policy, self._config, self._fallback, space)  # resets the fallback
        self._decisions = self._affected = 0
        self._held = None

    def act(self, observation: np.ndarray) -> DomainWeights:
        guard = self._guard
        if guard is None:
            raise UsageError("guarded: act before reset(space); reset the policy in the run's domain space first")
        if self._held is not None:  # committed: the held decision, the policy no longer asked
            self._decisions += 1
            return self._held
        found = guard.check(observation)
        alt = guard.fallback.act(observation) if guard.fallback is not None else None  # stepped every decision
        self._decisions += 1
        self._affected += bool(found)
        if found and self.ood == "clip":
            chosen = self._policy.act_clipped(observation)  # type: ignore[attr-defined]
        else:
            proposal = self._policy.act(observation)
            chosen = alt if found and alt is not None else proposal
        if self._commit_after and self._decisions == self._commit_after:
            self._held = chosen
        return chosen
