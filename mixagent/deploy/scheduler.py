"""The mixing scheduler: a :class:`~mixagent.policies.MixingPolicy` behind safety guards.

It owns the policy, the shared :class:`~mixagent.env.observation.ObservationBuilder` (the same observations
the policy saw in the environment) and the weights history. ``step(eval_result)`` turns an evaluation of
the model being trained into the next mixture:

1. the policy proposes a mixture from the observation; with an out-of-distribution guard (``ood``,
   :mod:`mixagent.policies.guard`), a learned policy's observation is first checked against its training range and,
   outside it, logged (``warn``), clipped into it (``clip``) or handed to the fallback policy (``fallback``);
2. a proposal that raises, is non-finite, negative, all zero or for another domain space is replaced by
   the fallback mixture (logged; training continues);
3. the floor is enforced (domains below it are raised to it, the others scaled down proportionally);
4. the change is capped: when the total-variation distance to the current mixture exceeds
   ``max_change``, the move is shortened along the same direction.

The scheduler is pure computation on one process. Distributed runs call it on every rank with the same
all-reduced evaluation and then broadcast rank 0's result (:mod:`mixagent.deploy.distributed`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from mixagent.domains import DomainSpace, DomainWeights
from mixagent.env.evaluation import EvalResult, eval_json_problem
from mixagent.env.observation import OBSERVATION_V2, OBSERVATION_VERSION, observation_builder
from mixagent.errors import ConfigError, CorruptArtifactError, MixagentError, SchemaVersionError, UsageError
from mixagent.policies import MixingPolicy

if TYPE_CHECKING:
    from mixagent.deploy.mapping import DomainMapping
    from mixagent.policies.guard import OODConfig

__all__ = ["SchedulerConfig", "MixingScheduler", "SchedulerStateError", "SCHEDULER_FORMAT"]

log = logging.getLogger(__name__)
SCHEDULER_FORMAT = 1
FALLBACKS = ("initial", "previous")


class SchedulerStateError(MixagentError, ValueError):
    """A saved scheduler state belongs to another run (domains, policy or config) or another format."""


@dataclasses.dataclass(frozen=True)
class SchedulerConfig:
    """Guards around the policy.

    Args:
        floor: minimum weight of every domain (``floor * K < 1``); keeps every domain's data flowing.
        max_change: largest total-variation distance ``0.5 * |w_new - w_old|_1`` allowed per update, in
            ``(0, 1]``; 1 disables the cap.
        fallback: mixture used when the policy fails: ``initial`` (the run's starting mixture) or
            ``previous`` (keep the current one).
    """

    floor: float = 0.0
    max_change: float = 1.0
    fallback: str = "initial"

    def check(self, k: int | None = None) -> list[str]:
        problems = []
        if self.floor < 0 or (k is not None and self.floor * k >= 1):
            problems.append(f"floor must be >= 0 with floor * K < 1, got floor={self.floor}"
                            + (f", K={k}; use floor < {1 / k:.4g}" if k else ""))
        if not 0 < self.max_change <= 1:
            problems.append(f"max_change must be in (0, 1] (1 disables the cap), got {self.max_change}")
        if self.fallback not in FALLBACKS:
            problems.append(f"fallback must be one of {FALLBACKS}, got {self.fallback!r}")
        return problems


def apply_floor(values: np.ndarray, floor: float) -> np.ndarray:
    """Raise entries below ``floor`` to it and scale the rest down proportionally (sum stays 1)."""
    p = values / values.sum()
    if floor <= 0:
        return p
    fixed = np.zeros(len(p), dtype=bool)
    for _ in range(len(p)):  # each pass fixes at least one more domain at the floor, or stops
        low = (p < floor) & ~fixed
        if not low.any():
            break
        fixed |= low
        free = ~fixed
        p[fixed] = floor
        p[free] *= (1.0 - floor * fixed.sum()) / p[free].sum()
    return p


def cap_change(new: np.ndarray, old: np.ndarray, max_change: float) -> tuple[np.ndarray, bool]:
    """Shorten the move ``old -> new`` to total-variation distance ``max_change``; returns (weights, capped)."""
    tv = 0.5 * float(np.abs(new - old).sum())
    if tv <= max_change + 1e-12:
        return new, False
    return old + (max_change / tv) * (new - old), True


class MixingScheduler:
    """Drives a training run's mixture with a policy.

    Args:
        policy: any :class:`MixingPolicy` (a baseline or ``mixagent.policies.load_policy(...)``); it is
            ``reset`` to ``space`` here, so a policy for other domains fails before training starts.
        space: the domain space of the run's data.
        initial: the mixture before the first update (default uniform).
        config: guards.
        mapping: a :class:`~mixagent.deploy.mapping.DomainMapping` when the policy acts in another domain
            space than the run's: observations are built in the policy's space and its mixtures mapped back
            (the guards apply to the run's mixture).
        ood: the out-of-distribution guard's config (:class:`~mixagent.policies.guard.OODConfig`); ``None``: a
            learned policy's observations are not checked (the deploy job always passes one, ``fallback`` by
            default).
        ood_fallback: the policy that decides out-of-range updates under ``ood`` mode ``fallback``, built from
            ``ood.fallback`` in the run's context (``build_policy("replay:0.5", PolicyContext(natural))``); it
            acts in the run's domain space.
        stated: what the user states about the run (:func:`mixagent.env.observation.setting_features`: lam,
            steps = decisions, segment_tokens = tokens per decision, target_tokens (0 = unknown), wsd,
            decay_fraction); required by a policy trained on observation version 2, which observes it.

    Raises:
        ConfigError: bad guards; (``policy.ood``) ``clip`` or ``fallback`` for an artifact that records no
            feature ranges; (``policy.ood_fallback``) a ``fallback`` guard without a fallback policy.
    """

    def __init__(self, policy: MixingPolicy, space: DomainSpace, initial: DomainWeights | None = None,
                 config: SchedulerConfig | None = None, mapping: DomainMapping | None = None,
                 ood: OODConfig | None = None, ood_fallback: MixingPolicy | None = None,
                 stated: Mapping[str, float] | None = None) -> None:
        self.config = config or SchedulerConfig()
        if problems := self.config.check(space.k):
            raise ConfigError("SchedulerConfig", problems)
        if not isinstance(policy, MixingPolicy):
            raise ConfigError("MixingScheduler", [f"policy {type(policy).__name__} does not implement MixingPolicy "
                                                  f"(reset(space), act(observation) -> DomainWeights)"])
        if initial is not None and initial.space.names != space.names:
            raise ConfigError("MixingScheduler", [f"initial weights are for domains {list(initial.space.names)}, "
                                                  f"the run's space has {list(space.names)}"])
        if mapping is not None and mapping.user.names != space.names:
            raise ConfigError("MixingScheduler", [f"the mapping is onto domains {list(mapping.user.names)}, the "
                                                  f"run's space has {list(space.names)}"])
        self.mapping = mapping
        self.policy_space = mapping.agent if mapping is not None else space
        policy.reset(self.policy_space)  # raises a typed error when the policy was trained for other domains
        self.policy = policy
        self.space = space
        self.observe_lr = bool(getattr(policy, "observe_lr", False))  # trained on an observe_lr env
        self.observation_version = int(getattr(policy, "observation_version", OBSERVATION_VERSION) or 1)
        self.stated = dict(stated) if stated is not None else None
        self.obs_builder = observation_builder(self.policy_space, self.observation_version, self.observe_lr,
                                               self.stated)  # version 2 refuses a missing stated setting
        self.ood = None
        if ood is not None:
            from mixagent.policies.guard import OODGuard

            self.ood = OODGuard(policy, ood, ood_fallback, space)
        # the fallback policy reads the run's own domains: with a mapping, its observation is built in them
        self.run_obs_builder = (observation_builder(space, self.observation_version, self.observe_lr, self.stated)
                                if mapping is not None else None)
        start = initial if initial is not None else DomainWeights.normalised(space, np.ones(space.k))
        self.initial = DomainWeights(space, apply_floor(start.values.copy(), self.config.floor))
        self.weights = self.initial
        self.start_eval: EvalResult | None = None
        self.prev_eval: EvalResult | None = None
        self.history: list[dict[str, Any]] = []

    @property
    def updates(self) -> int:
        return len(self.history)

    def step(self, result: EvalResult, progress: float, lr: float | None = None) -> DomainWeights:
        """The next mixture after an evaluation; the first call records the run's start evaluation.

        Args:
            result: evaluation of the model now (per-domain bits per byte or per token, field scores).
            progress: share of the run done, in ``[0, 1]`` (the observation's ``t/T``).
            lr: the learning rate of the coming optimizer step over the run's peak, in ``[0, 1]``; required
                when the policy observes it (``policy.observe_lr``, agents trained on ``observe_lr`` envs),
                ignored otherwise.

        Raises:
            UsageError: an evaluation missing domains or fields, or ``lr`` missing for a policy that observes it.
        """
        if self.observe_lr and lr is None:
            raise UsageError(f"MixingScheduler.step: the policy {self.policy!r} observes the learning rate (it was "
                             f"trained on an observe_lr env); pass lr= the coming step's learning rate over the "
                             f"run's peak (MixAgentCallback does this from the Trainer's optimizer)")
        missing = [n for n in self.space.names if n not in result.bpb]
        if missing or any(f not in result.scores for f in ("source", "target")):
            raise UsageError(f"MixingScheduler.step: the evaluation lacks domains {missing} or field scores "
                             f"{sorted(result.scores)}; evaluate every domain of the space and both fields")
        if self.start_eval is not None and result.unit != self.start_eval.unit:
            raise UsageError(f"MixingScheduler.step: the evaluation is in bits per {result.unit}, the run started in "
                             f"bits per {self.start_eval.unit}; evaluate the same way for the whole run")
        finite = result.is_finite()
        if self.start_eval is None and finite:
            self.start_eval = self.prev_eval = result
        ood = None
        if finite and self.start_eval is not None:
            m = self.mapping
            view = (lambda e: e) if m is None else m.eval_to_agent
            weights = self.weights.values if m is None else m.to_agent(self.weights.values)
            lr_seen = float(lr) if self.observe_lr else None
            obs = self.obs_builder(weights, view(self.start_eval), view(self.prev_eval), view(result), float(progress),
                                   lr_seen)
            run_obs = obs if self.run_obs_builder is None else self.run_obs_builder(
                self.weights.values, self.start_eval, self.prev_eval, result, float(progress), lr_seen)
            proposal, reason, ood = self._propose(obs, run_obs)
        else:  # a diverged model gives the policy nothing to go on
            proposal, reason = self._fallback(), "non-finite evaluation (NaN/Inf loss or score)"
        if reason is not None:
            log.warning("mixing policy failed at update %d (%s); using the %s mixture", self.updates, reason,
                        self.config.fallback)
        floored = apply_floor(proposal, self.config.floor)
        values, capped = cap_change(floored, self.weights.values, self.config.max_change)
        self.weights = DomainWeights(self.space, values / values.sum(), floor=self.config.floor)
        if finite:
            self.prev_eval = result
        self.history.append({"update": self.updates, "progress": float(progress), "tokens_seen": result.tokens_seen,
                             "weights": self.weights.values.tolist(), "proposal": np.asarray(proposal).tolist(),
                             "fallback": reason, "capped": capped, "eval": result.to_json() if finite else None,
                             "lr": float(lr) if self.observe_lr else None, "ood": ood})
        return self.weights

    def ood_summary(self) -> dict[str, Any] | None:
        """How many decisions the out-of-distribution guard affected and why (:func:`mixagent.policies.guard.
        ood_summary`); ``None`` without a guard."""
        return self.ood.summary(self.history) if self.ood is not None else None

    def adopt(self, values: np.ndarray) -> None:
        """Replace the last decision with ``values`` (rank 0's, broadcast to the other ranks)."""
        self.weights = DomainWeights(self.space, values, floor=self.config.floor)
        self.history[-1]["weights"] = self.weights.values.tolist()

    def _fallback(self) -> np.ndarray:
        return (self.initial if self.config.fallback == "initial" else self.weights).values.copy()

    def _propose(self, obs: np.ndarray, run_obs: np.ndarray) -> tuple[np.ndarray, str | None, dict | None]:
        """(the run's next mixture, why the guard's fallback mixture replaced the policy's or ``None``, the
        out-of-distribution record or ``None``)."""
        guard, found, alt = self.ood, [], None
        if guard is not None and guard.checked:
            try:
                found = guard.check(obs)
            except Exception:  # noqa: BLE001 — the same fault makes act() fail below, where it is recorded
                found = []
            if guard.fallback is not None:  # stepped at every update: its running state is its own
                alt = self._ask(guard.fallback.act, run_obs, self.space, None)
        ood = guard.record(found) if guard is not None else None
        if ood is not None:
            log.warning("observation at update %d is outside the policy's training range (%s); ood: %s",
                        self.updates, ", ".join(f"{f['feature']}={f['value']:+.3g} not in [{f['lo']:+.3g}, "
                                                f"{f['hi']:+.3g}]" for f in ood["features"][:4]), guard.mode)
        act = self.policy.act_clipped if ood is not None and guard.mode == "clip" else self.policy.act  # type: ignore
        values, reason = self._ask(act, obs, self.policy_space, self.mapping)
        if ood is not None and guard.mode == "fallback" and alt is not None:
            values, reason = alt if alt[1] is None else (self._fallback(), f"ood fallback policy: {alt[1]}")
        return values, reason, ood

    def _ask(self, act: Any, obs: np.ndarray, space: DomainSpace,
             mapping: DomainMapping | None) -> tuple[np.ndarray, str | None]:
        """``act(obs)`` as the run's mixture, or the guard's fallback mixture and the reason it failed."""
        fallback = self._fallback()
        try:
            out = act(obs)
        except Exception as exc:  # noqa: BLE001 — any policy failure must not stop training
            return fallback, f"{type(exc).__name__}: {exc}"
        if isinstance(out, DomainWeights):
            if out.space.names != space.names:
                return fallback, f"weights for another domain space ({out.space.name!r})"
            values = out.values
        else:
            values = np.asarray(out, dtype=np.float64).reshape(-1)
        if values.shape != (space.k,):
            return fallback, f"{values.size} weights for {space.k} domains"
        if not np.all(np.isfinite(values)) or np.any(values < 0) or values.sum() <= 0:
            return fallback, "non-finite, negative or all-zero weights"
        values = values.astype(np.float64)
        return (values if mapping is None else mapping.to_user(values)), None

    # ---- state -------------------------------------------------------------------------------------
    def fingerprint(self) -> dict[str, Any]:
        """What a saved state must match to be resumed here: domains, observation version, guards."""
        out = {"domains": list(self.space.names), "observation_version": self.observation_version,
               "config": dataclasses.asdict(self.config), "policy": type(self.policy).__name__}
        if self.observation_version == OBSERVATION_V2:  # what it observes of the run must not change on resume
            out["stated"] = self.stated
        if self.mapping is not None:  # absent without one, so states saved before mappings existed still resume
            out["mapping"] = self.mapping.to_json()
        if self.ood is not None and (ood := self.ood.fingerprint()) is not None:  # as mapping: absent under warn
            out["ood"] = ood
        return out

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state: weights history, start/previous evaluations, current weights, policy state."""
        policy_state = self.policy.state_dict() if hasattr(self.policy, "state_dict") else None
        out = {"format": SCHEDULER_FORMAT, "fingerprint": self.fingerprint(), "history": self.history,
               "weights": self.weights.values.tolist(), "initial": self.initial.values.tolist(),
               "start_eval": self.start_eval.to_json() if self.start_eval else None,
               "prev_eval": self.prev_eval.to_json() if self.prev_eval else None, "policy": policy_state}
        fallback = self.ood.fallback if self.ood is not None else None
        if fallback is not None and hasattr(fallback, "state_dict"):
            out["ood_fallback"] = fallback.state_dict()
        return out

    def check_state(self, state: dict[str, Any]) -> None:
        """Raise unless ``state`` was saved by a scheduler of this format, domains, policy and guards."""
        if state.get("format") != SCHEDULER_FORMAT:
            raise SchemaVersionError(f"scheduler state format {state.get('format')!r} is not readable by this "
                                     f"mixagent (reads format {SCHEDULER_FORMAT}); resume with the mixagent version "
                                     f"that wrote it or start a new run")
        theirs = state.get("fingerprint")
        if not isinstance(theirs, dict):
            raise CorruptArtifactError(f"the saved mixing state has no fingerprint object (got {theirs!r}); it was "
                                       f"edited or torn — resume from another checkpoint")
        mine = self.fingerprint()
        diff = sorted(k for k in mine if mine[k] != theirs.get(k))
        if diff:
            raise SchedulerStateError(f"the saved mixing state was written by another run: it differs in {diff} "
                                      f"(saved {[theirs.get(k) for k in diff]}, this run {[mine[k] for k in diff]}); "
                                      f"resume with the same domains, policy and guards, or start without resuming")
        problems = []
        for key in ("weights", "initial"):
            try:
                DomainWeights(self.space, state.get(key), floor=self.config.floor)
            except (MixagentError, TypeError, ValueError) as exc:
                problems.append(f"{key}: {exc}")
        for key in ("start_eval", "prev_eval"):
            if key not in state:
                problems.append(f"{key} is missing")
                continue
            problem = state[key] and eval_json_problem(state[key], self.space.names, f"space {self.space.name!r}")
            if problem:
                problems.append(f"{key}: {problem}")
        history = state.get("history")
        if not isinstance(history, list):
            problems.append(f"history is {type(history).__name__}; expected a list")
        else:
            for i, h in enumerate(history):
                try:
                    DomainWeights(self.space, h["weights"], floor=self.config.floor)
                except (MixagentError, TypeError, ValueError, KeyError) as exc:
                    problems.append(f"history[{i}].weights: {exc!r}")
            if state.get("start_eval") and not history:
                problems.append("history is empty although the run has a start evaluation")
        if problems:
            raise CorruptArtifactError(f"the saved mixing state is invalid: {'; '.join(problems)}; it was edited or "
                                       f"torn — resume from another checkpoint")

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output; refuses a state of another run or format."""
        self.check_state(state)
        self.history = list(state["history"])
        self.weights = DomainWeights(self.space, state["weights"], floor=self.config.floor)
        self.initial = DomainWeights(self.space, state["initial"], floor=self.config.floor)
        self.start_eval = EvalResult.from_json(state["start_eval"]) if state["start_eval"] else None
        self.prev_eval = EvalResult.from_json(state["prev_eval"]) if state["prev_eval"] else None
        if state.get("policy") is not None and hasattr(self.policy, "load_state_dict"):
            self.policy.load_state_dict(state["policy"])
        fallback = self.ood.fallback if self.ood is not None else None
        if state.get("ood_fallback") is not None and hasattr(fallback, "load_state_dict"):
            fallback.load_state_dict(state["ood_fallback"])  # type: ignore[union-attr]
