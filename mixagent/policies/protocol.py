"""The ``MixingPolicy`` protocol.

Every policy — the baselines, the behaviour policies of collection and the trained agent — implements
``reset(space)`` and ``act(observation) -> DomainWeights``, so any of them drives the environment, the
collector and a real training run alike.

A method that learns from short probe trainings inside each step (Aioli) also implements
:class:`ProbingPolicy`: before each ``act`` the rollout asks it for a :class:`ProbePlan`, trains the probe
mixtures on the proxy (``MixingEnv.probe``, the tokens taken from that step's budget) and hands back the
per-domain losses measured around them.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol, runtime_checkable

import numpy as np

from mixagent.domains import DomainSpace, DomainWeights

__all__ = ["MixingPolicy", "RunningState", "ProbePlan", "ProbingPolicy"]


@runtime_checkable
class MixingPolicy(Protocol):
    """Chooses the next mixture from an observation (``mixagent.env.observation`` layout)."""

    def reset(self, space: DomainSpace) -> None:
        """Start a run in ``space``."""

    def act(self, observation: np.ndarray) -> DomainWeights:
        """The mixture for the next segment."""


@dataclasses.dataclass(frozen=True)
class ProbePlan:
    """Probe trainings a :class:`ProbingPolicy` asks for before its next decision.

    Attributes:
        mixtures: ``(P, K)`` mixtures trained one after another, ``batches`` optimizer batches each (the
            tokens count in the coming step's budget: the step then trains ``P * batches`` fewer batches).
        batches: optimizer batches per probe (>= 1).
        windows: held-out windows per domain the probe losses are measured on (>= 1).
    """

    mixtures: np.ndarray
    batches: int = 1
    windows: int = 4


@runtime_checkable
class ProbingPolicy(Protocol):
    """A :class:`MixingPolicy` that learns from probe trainings (``MixingEnv.probe``) before each decision."""

    def probe_plan(self, observation: np.ndarray) -> ProbePlan | None:
        """The probes to train before the next ``act`` (``None``: none this step)."""

    def observe_probes(self, losses: np.ndarray) -> None:
        """``(P + 1, K)`` per-domain held-out loss over the run's start (``b / b_0``, ``MixingEnv.probe``):
        before the first probe, then after each."""


def _encode(value: object) -> object:
    if isinstance(value, np.ndarray):
        return {"ndarray": value.tolist()}
    if isinstance(value, tuple):
        return {"tuple": [_encode(v) for v in value]}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, dict):  # a nested running state (a policy that delegates to another)
        return {"dict": {str(k): _encode(v) for k, v in value.items()}}
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"running state of type {type(value).__name__} is not serialisable")


def _decode(value: object) -> object:
    if isinstance(value, dict) and set(value) == {"ndarray"}:
        return np.asarray(value["ndarray"], dtype=np.float64)
    if isinstance(value, dict) and set(value) == {"tuple"}:
        return tuple(_decode(v) for v in value["tuple"])
    if isinstance(value, dict) and set(value) == {"dict"}:
        return {k: _decode(v) for k, v in value["dict"].items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


class RunningState:
    """``state_dict()`` / ``load_state_dict()`` for policies whose decisions depend on what they saw earlier
    in the run (the online methods' weights and statistics, a heuristic's switch). Each class lists its
    running attributes in ``STATE`` (collected over the class hierarchy); the state is JSON (nested states as
    ``{"dict": {...}}``, arrays as ``{"ndarray": [...]}``), stored by
    :class:`~mixagent.deploy.scheduler.MixingScheduler` in every checkpoint, so a resumed training run
    continues the policy's decisions exactly. Load it after ``reset(space)``."""

    STATE: tuple[str, ...] = ()

    def _state_names(self) -> list[str]:
        names: list[str] = []
        for cls in reversed(type(self).__mro__):
            names += [n for n in cls.__dict__.get("STATE", ()) if n not in names]
        return names

    def state_dict(self) -> dict:
        """The running state as JSON: ``{"class", "state": {attribute: value}}``."""
        return {"class": type(self).__name__,
                "state": {n: _encode(getattr(self, n)) for n in self._state_names() if hasattr(self, n)}}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` output.

        Raises:
            ValueError: a state of another policy class or with unknown attributes.
        """
        if not isinstance(state, dict) or state.get("class") != type(self).__name__:
            raise ValueError(f"a running state of {state.get('class') if isinstance(state, dict) else state!r} "
                             f"cannot be loaded into {type(self).__name__}")
        unknown = set(state["state"]) - set(self._state_names())
        if unknown:
            raise ValueError(f"unknown running-state attributes {sorted(unknown)} for {type(self).__name__}")
        for name, value in state["state"].items():
            setattr(self, name, _decode(value))
