"""Schedule heuristics from the continual pre-training literature, as
:class:`~mixagent.policies.MixingPolicy` objects. Both are replay schedules: step ``t`` trains a share
``rho`` of source-field data and the rest target-field data, natural shares within each field
(:class:`~mixagent.policies.ReplayPolicy`). Their defaults are set a priori, not tuned on any seed.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from mixagent.domains import DomainSpace, DomainWeights
from mixagent.env.observation import SETTING_FEATURES
from mixagent.errors import ConfigError, UsageError
from mixagent.policies.baselines import ReplayPolicy
from mixagent.policies.protocol import RunningState

__all__ = ["DecaySwitchPolicy", "EndUpsamplePolicy", "TwoPhasePolicy"]


def _check_rhos(who: str, **rhos: float) -> None:
    bad = [f"{k} must be in [0, 1], got {v}" for k, v in rhos.items() if not 0.0 <= v <= 1.0]
    if bad:
        raise ConfigError(who, bad)


class _TwoRho(RunningState):
    """Replay share ``first`` until ``switched(observation)`` first holds, ``second`` from then on."""

    STATE = ("_switched",)

    def __init__(self, first: float, second: float, shares: Mapping[str, float] | None) -> None:
        self.first, self.second, self.shares = float(first), float(second), dict(shares) if shares else None

    def reset(self, space: DomainSpace) -> None:
        self.space, self.k = space, space.k
        self._mixtures = {r: ReplayPolicy(r, self.shares).weights_for(space) for r in (self.first, self.second)}
        self._switched = False
        self._reset_state()

    def _reset_state(self) -> None:
        pass

    def switched(self, observation: np.ndarray) -> bool:
        raise NotImplementedError

    def act(self, observation: np.ndarray) -> DomainWeights:
        if not hasattr(self, "_mixtures"):
            raise UsageError(f"{type(self).__name__}: call reset(space) before act()")
        dims = (3 * self.k + 5, 3 * self.k + 6, 3 * self.k + 6 + len(SETTING_FEATURES))  # v1, v1 + LR, v2
        if np.shape(observation) not in [(d,) for d in dims]:
            raise UsageError(f"observation of shape {np.shape(observation)} for a {self.k}-domain space: expected "
                             f"one of {[(d,) for d in dims]} (mixagent.env.observation: version 1, version 1 "
                             f"with the LR, version 2)")
        self._switched = self._switched or self.switched(np.asarray(observation, dtype=np.float64))
        return self._mixtures[self.second if self._switched else self.first]


class DecaySwitchPolicy(_TwoRho):
    """Two-stage replay that switches to the target blend when the learning rate starts to decay (Parmar
    et al., *Reuse, Don't Retrain*, arXiv 2407.07263: switch the data distribution at the start of the LR
    decay; replay with LR re-warm and re-decay, Ibrahim et al., arXiv 2403.08763).

    Rule: replay share ``stable_rho`` while the learning rate is rising or at its peak, ``decay_rho`` from
    the first step whose learning rate (observation entry ``3K+5``: version 1 on ``observe_lr`` envs and
    version 2; the Trainer's LR in deployment) falls below the highest seen so far. Without an LR in the
    observation the switch happens at progress ``switch`` (required then).

    Args:
        shares: ``{domain: natural token share}`` within each field.
        stable_rho: replay share before the decay (default 0.5: an even source/target mix).
        decay_rho: replay share during the decay (default 0.25: target upweighted, as the paper upweights
            its quality blend).
        switch: progress ``t/T`` of the switch when the LR is not observed.

    Raises:
        ConfigError: a share outside [0, 1] or ``switch`` outside (0, 1).
        UsageError: an observation without an LR and no ``switch``.
    """

    STATE = ("_peak",)

    def __init__(self, shares: Mapping[str, float] | None, stable_rho: float = 0.5, decay_rho: float = 0.25,
                 switch: float | None = None) -> None:
        _check_rhos("decay_switch", stable_rho=stable_rho, decay_rho=decay_rho)
        if switch is not None and not 0.0 < switch < 1.0:
            raise ConfigError("decay_switch", [f"switch must be a progress in (0, 1), got {switch}"])
        super().__init__(stable_rho, decay_rho, shares)
        self.switch = switch

    def _reset_state(self) -> None:
        self._peak = -np.inf

    def switched(self, observation: np.ndarray) -> bool:
        if observation.shape[0] > 3 * self.k + 5:  # the LR at 3K+5: version 1 on observe_lr envs, version 2
            lr = float(observation[3 * self.k + 5])
            decaying = lr < self._peak - 1e-9
            self._peak = max(self._peak, lr)
            return decaying
        if self.switch is None:
            raise UsageError("decay_switch: the observation has no learning rate (an env without observe_lr); give "
                             "switch=<progress of the decay start>")
        return float(observation[3 * self.k + 4]) >= self.switch - 1e-6  # float32 observation


class EndUpsamplePolicy(_TwoRho):
    """Upsample the target field at the end of the run (Blakeney et al., *Does your data spark joy?
    Performance gains from domain upsampling at the end of training*, arXiv 2406.03476).

    Rule: replay share ``rho``, then ``end_rho`` for the last ``max(1, floor(last * T))`` of the run's ``T``
    re-weighting segments (``T`` read from the first step's progress ``1/T``), so a short run upsamples
    its last segment rather than none.

    Args:
        shares: ``{domain: natural token share}`` within each field.
        rho: replay share of the main phase (default 0.5).
        end_rho: replay share of the last phase (default 0.1: mostly target).
        last: the final share of the run that is upsampled (paper: 10-20%; default 0.2).
    """

    STATE = ("_horizon",)

    def __init__(self, shares: Mapping[str, float] | None, rho: float = 0.5, end_rho: float = 0.1,
                 last: float = 0.2) -> None:
        _check_rhos("end_upsample", rho=rho, end_rho=end_rho)
        if not 0.0 < last < 1.0:
            raise ConfigError("end_upsample", [f"last must be a share of the run in (0, 1), got {last}"])
        super().__init__(rho, end_rho, shares)
        self.last = float(last)

    def _reset_state(self) -> None:
        self._horizon: int | None = None

    def switched(self, observation: np.ndarray) -> bool:
        progress = float(observation[3 * self.k + 4])
        if progress <= 0.0:
            return False
        if self._horizon is None:  # the first step after the start is at progress 1/T
            self._horizon = max(1, round(1.0 / progress))
        upsampled = max(1, int(self.last * self._horizon + 1e-6))
        step = round(progress * self._horizon)  # an index: the observation is float32
        return step >= self._horizon - upsampled


class TwoPhasePolicy(_TwoRho):
    """A fixed two-phase schedule: replay share ``rho1`` for the first ``switch`` of the run's ``T``
    re-weighting segments, ``rho2`` for the rest (the headroom audit's ``two_phase`` rows as a policy, so a
    schedule selected on tuning seeds can be scored on held-out seeds and deployed; ``T`` is read from the
    second step's progress ``1/T``).

    Args:
        shares: ``{domain: natural token share}`` within each field.
        rho1, rho2: the replay shares before and after the switch.
        switch: the number of segments at ``rho1`` (``>= 1``; a run of ``T <= switch`` segments never switches).

    Raises:
        ConfigError: a share outside [0, 1] or ``switch < 1``.
    """

    STATE = ("_horizon",)

    def __init__(self, shares: Mapping[str, float] | None, rho1: float = 0.5, rho2: float = 0.5,
                 switch: int = 4) -> None:
        _check_rhos("two_phase", rho1=rho1, rho2=rho2)
        if int(switch) != switch or switch < 1:
            raise ConfigError("two_phase", [f"switch must be a whole number of segments >= 1, got {switch}"])
        super().__init__(rho1, rho2, shares)
        self.switch = int(switch)

    def _reset_state(self) -> None:
        self._horizon: int | None = None

    def switched(self, observation: np.ndarray) -> bool:
        progress = float(observation[3 * self.k + 4])
        if progress <= 0.0:
            return False
        if self._horizon is None:
            self._horizon = max(1, round(1.0 / progress))
        return round(progress * self._horizon) >= self.switch  # the segment index (float32 observation)
