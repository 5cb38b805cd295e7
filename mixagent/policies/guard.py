"""The out-of-distribution guard of a deployment: before each decision, a learned policy's observation is checked
against the range its features had in training (:mod:`mixagent.policies.ranges`), and an observation outside it
is handled by the ``ood`` mode:

* ``warn``: log it and act as the policy says;
* ``clip``: act on the observation's features clipped into the training range (the policy's ``act_clipped``);
* ``fallback`` (the deploy job's default): the fallback policy decides this update (``ood_fallback``: a baseline
  or a method that needs only the natural shares, ``replay:0.5`` by default). It is reset to the run's domain
  space and stepped at every update, so its running state is its own whichever policy decided.

A feature is out of range when it lies beyond either end by more than ``tolerance`` times the range's width.
Only learned artifacts are checked (:class:`~mixagent.policies.ranges.RangeChecked`); baselines and methods never
are. ``clip`` and ``fallback`` need the ranges the artifact records: an artifact without them is refused
(:func:`guard_problem`), while ``warn`` acts on it unchecked, with one warning. Each decision's history entry
records ``ood``: ``{"action", "features": [OutOfRange.to_json(), ...]}``, or ``None`` when it was in range (or
not checked); :func:`ood_summary` counts them for the deploy report.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from mixagent.domains import DomainSpace
from mixagent.errors import ConfigError, suggest
from mixagent.policies.protocol import MixingPolicy
from mixagent.policies.ranges import OutOfRange, RangeChecked

__all__ = ["OOD_MODES", "OODConfig", "OODGuard", "guard_problem", "ood_summary"]

log = logging.getLogger(__name__)
OOD_MODES = ("warn", "clip", "fallback")


@dataclasses.dataclass(frozen=True)
class OODConfig:
    """What to do with an observation outside the policy's training range.

    Args:
        mode: ``warn``, ``clip`` or ``fallback`` (see the module docstring).
        fallback: the fallback policy's spec (built by the caller in the run's context; it labels the policy
            handed to :class:`OODGuard`).
        tolerance: how far beyond either end of a feature's range is still in range, as a share of the range's
            width (0.05: 5%); >= 0.
    """

    mode: str = "fallback"
    fallback: str = "replay:0.5"
    tolerance: float = 0.05

    def check(self) -> list[str]:
        """Every problem, named by the deploy config's fields (``ood``, ``ood_tolerance``)."""
        problems = []
        if self.mode not in OOD_MODES:
            problems.append(f"ood must be one of {', '.join(OOD_MODES)}, got {self.mode!r}"
                            f"{suggest(str(self.mode), OOD_MODES)}: warn logs and acts, clip acts on the features "
                            f"clipped into the training range, fallback lets ood_fallback decide")
        tol = self.tolerance
        if isinstance(tol, bool) or not isinstance(tol, int | float) or not (math.isfinite(tol) and tol >= 0):
            problems.append(f"ood_tolerance must be a finite share of each feature's training range >= 0 (0.05: 5% "
                            f"beyond either end still counts as in range), got {tol!r}")
        return problems


def guard_problem(policy: MixingPolicy, config: OODConfig) -> str | None:
    """Why ``config`` cannot guard ``policy`` (``None`` when it can): ``clip`` and ``fallback`` need the training
    ranges a learned artifact records, and this one records none."""
    if config.mode == "warn" or not isinstance(policy, RangeChecked) or policy.feature_ranges is not None:
        return None
    return (f"ood {config.mode!r} needs the training range of the policy's features, and the artifact "
            f"{policy.path} records none (meta.json training.feature_ranges): record them with `mixagent "
            f"feature-ranges --artifact {policy.path}` (a per-domain policy; retrain a dense one with `mixagent "
            f"train-agent`), or set policy.ood: warn to act on it unchecked")


class OODGuard:
    """Checks each observation of a learned policy against its training range (see the module docstring).

    Args:
        policy: the deployed policy; checked when it is a :class:`~mixagent.policies.ranges.RangeChecked` that
            records its ranges.
        config: the mode, the fallback's spec and the tolerance.
        fallback: the fallback policy, built from ``config.fallback`` in the run's context; required when a
            checked policy runs under ``fallback`` (then reset to ``space`` here), unused otherwise.
        space: the run's domain space (the fallback acts in it).

    Raises:
        ConfigError: (``policy.ood``) a bad mode or tolerance, or ``clip`` / ``fallback`` for an artifact without
            recorded ranges; (``policy.ood_fallback``) no fallback policy, or a learned one.
    """

    def __init__(self, policy: MixingPolicy, config: OODConfig, fallback: MixingPolicy | None,
                 space: DomainSpace) -> None:
        if problems := config.check():
            raise ConfigError("policy.ood", problems)
        if problem := guard_problem(policy, config):
            raise ConfigError("policy.ood", [problem])
        self.policy, self.config = policy, config
        learned = isinstance(policy, RangeChecked)
        self.checked = learned and policy.feature_ranges is not None
        self.reason = None if self.checked else (
            "the artifact records no feature ranges: acting unchecked (ood: warn)" if learned else
            "not a learned artifact: baselines and methods are not checked")
        if learned and not self.checked:
            log.warning("policy %s records no feature ranges: its observations are not checked (ood: warn); "
                        "record them with `mixagent feature-ranges --artifact %s`", policy.path, policy.path)
        self.fallback: MixingPolicy | None = None
        if self.checked and config.mode == "fallback":
            if fallback is None or isinstance(fallback, RangeChecked):
                raise ConfigError("policy.ood_fallback", [
                    f"ood fallback needs a fallback policy built from ood_fallback ({config.fallback!r}) in the run's "
                    f"context (mixagent.policies.build_policy(spec, PolicyContext(natural))), got "
                    f"{type(fallback).__name__}; a learned policy may itself be out of range: give a baseline"])
            fallback.reset(space)
            self.fallback = fallback

    @property
    def mode(self) -> str:
        return self.config.mode

    def check(self, observation: np.ndarray) -> list[OutOfRange]:
        """The features of ``observation`` outside the training range (empty when in range or not checked)."""
        if not self.checked:
            return []
        return self.policy.out_of_range(observation, self.config.tolerance)  # type: ignore[attr-defined]

    def record(self, found: Sequence[OutOfRange]) -> dict[str, Any] | None:
        """A history entry's ``ood``: ``{"action": mode, "features": [...]}``, ``None`` when nothing was found."""
        return {"action": self.mode, "features": [f.to_json() for f in found]} if found else None

    def fingerprint(self) -> dict[str, Any] | None:
        """What a resumed run must repeat: the config when it changes decisions (a checked policy under ``clip``
        or ``fallback``), else ``None`` (``warn`` acts as an unguarded run did)."""
        return dataclasses.asdict(self.config) if self.checked and self.mode != "warn" else None

    def summary(self, history: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """:func:`ood_summary` of ``history`` with this guard's config."""
        return ood_summary(history, self.config, self.checked, self.reason)


def ood_summary(history: Sequence[dict[str, Any]], config: OODConfig, checked: bool,
                reason: str | None = None) -> dict[str, Any]:
    """How many decisions of ``history`` were out of range and why, per action.

    Returns:
        ``{"mode", "fallback", "tolerance", "checked", "reason", "decisions", "affected", "by_action": {action:
        {"decisions", "features": {feature: {"decisions", "lo", "hi", "furthest", "excess", "relative"}}}}}``:
        per feature the decisions it was out of range in, its training range and its furthest value (``excess``
        beyond the nearer end, in the feature's units; ``relative`` in range widths).
    """
    affected = [h["ood"] for h in history if h.get("ood")]
    by_action: dict[str, dict[str, Any]] = {}
    for entry in affected:
        act = by_action.setdefault(entry["action"], {"decisions": 0, "features": {}})
        act["decisions"] += 1
        for f in entry["features"]:
            row = act["features"].setdefault(f["feature"], {"decisions": 0, "lo": f["lo"], "hi": f["hi"],
                                                            "furthest": f["value"], "excess": f["excess"],
                                                            "relative": f["relative"]})
            row["decisions"] += 1
            if f["excess"] > row["excess"]:
                row.update(furthest=f["value"], excess=f["excess"], relative=f["relative"])
    for act in by_action.values():  # most frequent first
        act["features"] = dict(sorted(act["features"].items(), key=lambda kv: (-kv[1]["decisions"], kv[0])))
    return {"mode": config.mode, "fallback": config.fallback, "tolerance": config.tolerance, "checked": checked,
            "reason": reason, "decisions": len(history), "affected": len(affected), "by_action": by_action}
