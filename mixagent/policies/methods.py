"""Online data-mixing methods from the literature, as :class:`~mixagent.policies.MixingPolicy` objects that
re-weight from the per-step held-out losses of the observation.

The published methods update from per-batch *training* losses (or gradients) many thousand times per run;
here they update once per re-weighting step from what the observation gives every policy alike:

* the weights trained on in the segment just finished, ``obs[:K]``;
* each domain's held-out bits per byte relative to the start, ``L_t = b_t / b_0 = 1 + obs[K:2K]``
  (scale-free: every domain starts at 1), and its change over that segment, ``obs[2K:3K]``;
* progress ``t / T`` (``obs[3K+4]``), so tokens seen are counted in units of the run's budget.

Each class docstring gives the source, the update rule as implemented and what was adapted. Every method
starts (progress 0) from its published initial mixture. A non-finite observation keeps the last weights and
logs it (``fallbacks`` counts them); the env's observation builder already maps NaN to 0 and clips, so
this guards callers that build observations themselves (deployment, tests).

===============  ================================================  ============================================
name             method                                            needs
===============  ================================================  ============================================
``doremi``       excess loss vs a reference run, exponentiated     a :class:`ReferenceCurve` (a natural run)
                 gradient with smoothing (Xie et al. 2023)
``odm``          EXP3 bandit over domains (Albalak et al. 2023)    --
``ado``          per-domain power-law fits (Jiang et al. 2024)     natural shares
``velocitune``   learning velocity vs a scaling-law target         natural shares, a :class:`ReferenceCurve`
                 (Luo et al. 2024)
``aioli``        linear mixing law fitted online (Chen et al.      natural shares
                 2024)
===============  ================================================  ============================================
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping

import numpy as np

from mixagent.domains import DomainSpace, DomainWeights
from mixagent.errors import ConfigError, UsageError
from mixagent.policies.protocol import RunningState

__all__ = ["ObservationView", "ReferenceCurve", "DoReMiPolicy", "ODMPolicy", "ADOPolicy", "VelocitunePolicy",
           "AioliPolicy", "fit_power_law"]

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ObservationView:
    """The parts of an observation (``mixagent.env.observation`` layout, ``3K+5`` or ``3K+6`` long) the
    online methods read.

    Attributes:
        weights: ``(K,)`` the mixture trained on in the segment just finished.
        loss: ``(K,)`` held-out bits per byte relative to the start, ``b_t / b_0`` (1 at the start).
        change: ``(K,)`` change of ``loss`` over the last segment (negative = improved).
        progress: ``t / T`` in [0, 1].
        lr: the coming segment's learning rate over the peak, or ``None`` when not observed.
    """

    weights: np.ndarray
    loss: np.ndarray
    change: np.ndarray
    progress: float
    lr: float | None

    @classmethod
    def parse(cls, observation: np.ndarray, k: int) -> ObservationView:
        """Raises:
            UsageError: an observation whose length is neither ``3K+5`` nor ``3K+6``."""
        obs = np.asarray(observation, dtype=np.float64)
        if obs.shape not in ((3 * k + 5,), (3 * k + 6,)):
            raise UsageError(f"observation of shape {obs.shape} for a {k}-domain space: expected ({3 * k + 5},) "
                             f"or ({3 * k + 6},) (mixagent.env.observation)")
        return cls(obs[:k], 1.0 + obs[k:2 * k], obs[2 * k:3 * k], float(obs[3 * k + 4]),
                   float(obs[3 * k + 5]) if obs.shape[0] == 3 * k + 6 else None)

    @property
    def finite(self) -> bool:
        return bool(np.isfinite(self.weights).all() and np.isfinite(self.loss).all()
                    and np.isfinite(self.change).all() and math.isfinite(self.progress))


@dataclasses.dataclass(frozen=True)
class ReferenceCurve:
    """Per-domain held-out loss along a reference run (DoReMi's reference model, Velocitune's scaling-law
    fit): ``loss[i, k]`` = domain ``k``'s ``b_t / b_0`` at ``progress[i]``, trained on ``weights``.

    Args:
        domains: domain names, in the space's order.
        progress: ``(n,)`` increasing points in [0, 1] (``t / T``), starting at 0.
        loss: ``(n, K)`` relative bits per byte (1 at progress 0).
        weights: ``(K,)`` the reference run's (constant) mixture, usually the natural shares.
        label: where it came from, for reports (e.g. ``natural, seed 100``).
    """

    domains: tuple[str, ...]
    progress: tuple[float, ...]
    loss: tuple[tuple[float, ...], ...]
    weights: tuple[float, ...]
    label: str = ""

    def problems(self) -> list[str]:
        k, p, loss = len(self.domains), np.asarray(self.progress), np.asarray(self.loss, dtype=np.float64)
        out = []
        if len(p) < 2 or p[0] != 0.0 or np.any(np.diff(p) <= 0) or p[-1] > 1.0:
            out.append(f"progress must start at 0, increase and end <= 1, got {list(self.progress)}")
        if loss.shape != (len(p), k) or not np.isfinite(loss).all() or np.any(loss <= 0):
            out.append(f"loss must be ({len(p)}, {k}) finite positive relative bits per byte")
        if len(self.weights) != k:
            out.append(f"weights must have {k} entries, got {len(self.weights)}")
        return out

    def check_space(self, space: DomainSpace, who: str) -> None:
        """Raises:
            ConfigError: a malformed curve, or one recorded on other domains than ``space``'s."""
        problems = self.problems()
        if tuple(space.names) != tuple(self.domains):
            problems.append(f"the reference run has domains {list(self.domains)}, the space {space.name!r} has "
                            f"{list(space.names)}: record the reference run in this space")
        if problems:
            raise ConfigError(f"{who} reference", problems)

    def at(self, progress: float) -> np.ndarray:
        """``(K,)`` the reference loss at ``progress`` (linear interpolation; held at the ends)."""
        loss = np.asarray(self.loss, dtype=np.float64)
        return np.array([np.interp(progress, self.progress, loss[:, k]) for k in range(loss.shape[1])])

    def tokens(self) -> np.ndarray:
        """``(n, K)`` tokens each domain had seen at each point, in units of the run's budget."""
        return np.outer(self.progress, self.weights)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: Mapping) -> ReferenceCurve:
        return cls(tuple(d["domains"]), tuple(float(x) for x in d["progress"]),
                   tuple(tuple(float(x) for x in row) for row in d["loss"]),
                   tuple(float(x) for x in d["weights"]), str(d.get("label", "")))


def _shares_vector(space: DomainSpace, shares: Mapping[str, float] | None, who: str) -> np.ndarray:
    if shares is None:
        raise ConfigError(who, ["needs the domains' natural token shares (env.unwrapped.natural.to_mapping())"])
    return DomainWeights.from_mapping(space, shares).values.astype(np.float64)


class _OnlineMethod(RunningState):
    """Shared plumbing of the online methods: ``reset``, observation parsing, the non-finite guard and the
    running state a resumed run restores (``STATE``). Subclasses set ``name`` and ``STATE`` and implement
    ``start(space) -> (K,)`` and ``update(view) -> (K,)``."""

    name = "online"
    STATE = ("_weights", "fallbacks")

    def reset(self, space: DomainSpace) -> None:
        self.space = space
        self.k = space.k
        self.fallbacks = 0
        self._weights = np.asarray(self.start(space), dtype=np.float64)

    def start(self, space: DomainSpace) -> np.ndarray:
        raise NotImplementedError

    def update(self, view: ObservationView) -> np.ndarray:
        raise NotImplementedError

    def act(self, observation: np.ndarray) -> DomainWeights:
        if not hasattr(self, "_weights"):
            raise UsageError(f"{type(self).__name__}: call reset(space) before act()")
        view = ObservationView.parse(observation, self.k)
        if not view.finite:
            self.fallbacks += 1
            log.warning("%s: non-finite losses in the observation; keeping the last weights", self.name)
        elif view.progress > 0.0:
            w = np.asarray(self.update(view), dtype=np.float64)
            if np.isfinite(w).all() and w.sum() > 0:
                self._weights = w / w.sum()
            else:
                self.fallbacks += 1
                log.warning("%s: its update gave non-finite weights; keeping the last weights", self.name)
        return DomainWeights.normalised(self.space, self._weights)


class DoReMiPolicy(_OnlineMethod):
    """DoReMi's domain-weight update, used online (Xie et al., *DoReMi: Optimizing Data Mixtures Speeds Up
    Language Model Pretraining*, arXiv 2305.10429; sangmichaelxie/doremi).

    Update at every step after the first, from uniform ``alpha``:
    ``lambda_k = max(L_k - L_ref_k, 0)``; ``alpha <- softmax(log alpha + eta * lambda)``;
    ``alpha <- (1 - c) alpha + c / K``.

    Adaptation: the proxy's per-domain held-out loss ``L = b_t / b_0`` replaces its per-batch training loss,
    and the reference model is a reference *run* (a :class:`ReferenceCurve`, trained on natural weights as
    the paper's issue #5 advises), read at the same progress. DoReMi proper hands the time-averaged alpha
    to a second run; ``average=True`` drives the mixture with the running average instead of the current
    alpha (the online variant, the default, uses alpha directly).

    Args:
        reference: the reference run's losses (required: DoReMi has no meaning without it).
        eta: step size (paper: 1).
        smoothing: ``c`` (paper: 1e-3).
        average: drive with the running average of alpha.

    Raises:
        ConfigError: no reference, or one for other domains (at ``reset``).
    """

    name = "doremi"
    STATE = ("alpha", "_sum", "_n")

    def __init__(self, reference: ReferenceCurve | None, eta: float = 1.0, smoothing: float = 1e-3,
                 average: bool = False) -> None:
        if reference is None:
            raise ConfigError("doremi", ["DoReMi needs a reference run (a ReferenceCurve of a natural-weights run "
                                         "in the same env); `mixagent compare` records one"])
        if not (eta > 0 and 0 <= smoothing <= 1):
            raise ConfigError("doremi", [f"eta must be > 0 and smoothing in [0, 1], got {eta}, {smoothing}"])
        self.reference, self.eta, self.smoothing, self.average = reference, float(eta), float(smoothing), average

    def start(self, space: DomainSpace) -> np.ndarray:
        self.reference.check_space(space, "doremi")
        self.alpha = np.full(space.k, 1.0 / space.k)
        self._sum, self._n = self.alpha.copy(), 1
        return self.alpha

    def update(self, view: ObservationView) -> np.ndarray:
        excess = np.maximum(view.loss - self.reference.at(view.progress), 0.0)
        logits = np.log(self.alpha) + self.eta * excess
        alpha = np.exp(logits - logits.max())
        self.alpha = (1.0 - self.smoothing) * alpha / alpha.sum() + self.smoothing / self.k
        self._sum, self._n = self._sum + self.alpha, self._n + 1
        return self._sum / self._n if self.average else self.alpha


class ODMPolicy(_OnlineMethod):
    """Online Data Mixing: an EXP3 bandit over domains (Albalak et al., *Efficient Online Data Mixing For
    Language Model Pre-Training*, arXiv 2312.02406; alon-albalak/online-data-mixing).

    Update at each re-weighting step, which stands for ``B = batches_per_step`` of ODM's per-batch updates:
    reward ``r_k = L_k / 10``; ``R_k <- R_k + B r_k`` (or, with ``moving_average``, ``B`` steps of
    ``R <- 0.9 R + 0.1 r``); ``t <- t + B``; ``eps_t = min(1/K, sqrt(ln K / (K t)))`` (``eps_0 = 1/K``);
    ``w_k = exp(eps_{t-1} R_k) (1 - K eps_t) / sum_j exp(eps_{t-1} R_j) + eps_t``; ``pi = w / sum w``.
    The first ``warmup`` re-weighting steps accumulate rewards but keep the uniform start.

    Adaptation: ODM draws one domain per batch and credits it ``r / pi_k`` (importance weighting). Here every
    domain's held-out loss is observed at every step, so each domain is credited its own reward for each of
    the ``B`` batches -- the expectation of the importance-weighted estimate (full-information EXP3, i.e.
    Hedge). ``L`` is the relative held-out loss ``b_t / b_0``. With ``B = 1`` (one update per re-weighting
    step) the exploration floor ``eps_t`` stays at ``1/K`` until ``t > K ln K`` and ODM *is* uniform for the
    whole of a short run (23 steps at K = 10); the comparison passes the env's optimizer steps per segment.

    Args:
        warmup: re-weighting steps that keep uniform weights (rewards still accumulate).
        moving_average: use the 0.9 moving average of rewards instead of their sum.
        batches_per_step: optimizer batches one re-weighting step stands for (``B`` above).
    """

    name = "odm"
    STATE = ("rewards", "t", "steps")

    def __init__(self, warmup: int = 1, moving_average: bool = False, batches_per_step: int = 1) -> None:
        if warmup < 0 or batches_per_step < 1:
            raise ConfigError("odm", [f"warmup must be >= 0 and batches_per_step >= 1, got {warmup}, "
                                      f"{batches_per_step}"])
        self.warmup, self.moving_average, self.batches = int(warmup), moving_average, int(batches_per_step)

    @staticmethod
    def epsilon(k: int, t: int) -> float:
        """``min(1/K, sqrt(ln K / (K t)))``; ``1/K`` at ``t = 0``."""
        return 1.0 / k if t == 0 else min(1.0 / k, math.sqrt(math.log(k) / (k * t)))

    def start(self, space: DomainSpace) -> np.ndarray:
        self.rewards, self.t, self.steps = np.zeros(space.k), 0, 0
        return np.full(space.k, 1.0 / space.k)

    def update(self, view: ObservationView) -> np.ndarray:
        r, b = view.loss / 10.0, self.batches
        if self.moving_average:
            self.rewards = 0.9 ** b * self.rewards + (1.0 - 0.9 ** b) * r
        else:
            self.rewards = self.rewards + b * r
        self.t += b
        self.steps += 1
        if self.steps <= self.warmup:
            return np.full(self.k, 1.0 / self.k)
        prev, now = self.epsilon(self.k, self.t - 1), self.epsilon(self.k, self.t)
        e = np.exp(prev * (self.rewards - self.rewards.max()))  # the shift cancels in the ratio
        w = e * (1.0 - self.k * now) / e.sum() + now
        return w / w.sum()


def fit_power_law(n: np.ndarray, loss: np.ndarray, huber: bool = True) -> tuple[float, float, float]:
    """Fit ``L(n) = exp(e) + exp(a) * n^(-alpha)`` to losses ``loss`` at token counts ``n`` (both ``(m,)``,
    ``n > 0``) by least squares on ``log L`` (Huber loss, as ADO), with scipy's ``least_squares``.

    Returns:
        ``(e, a, alpha)``, ``alpha`` in [0, 5].

    Raises:
        ValueError: fewer than 3 points, or non-positive ``n`` or ``loss``.
    """
    from scipy.optimize import least_squares

    n, loss = np.asarray(n, dtype=np.float64), np.asarray(loss, dtype=np.float64)
    if n.shape != loss.shape or n.size < 3 or np.any(n <= 0) or np.any(loss <= 0):
        raise ValueError("fit_power_law needs >= 3 points with n > 0 and loss > 0")
    log_l = np.log(loss)

    def residual(x: np.ndarray) -> np.ndarray:
        return np.log(np.exp(x[0]) + np.exp(x[1]) * n ** (-x[2])) - log_l

    x0 = np.array([math.log(0.5 * loss.min()), math.log(max(loss.max() - 0.5 * loss.min(), 1e-6)), 0.5])
    fit = least_squares(residual, x0, bounds=([-20.0, -20.0, 0.0], [5.0, 5.0, 5.0]),
                        loss="huber" if huber else "linear", f_scale=0.01, method="trf")
    e, a, alpha = fit.x
    return float(e), float(a), float(alpha)


class ADOPolicy(_OnlineMethod):
    """Adaptive Data Optimization: per-domain scaling laws fitted during the run (Jiang et al., *Adaptive
    Data Optimization: Dynamic Sample Selection with Scaling Laws*, arXiv 2410.11820; yidingjiang/ado).

    At each step, per domain ``k``: fit ``L_k(n) = exp(e_k) + exp(a_k) n^(-alpha_k)`` (:func:`fit_power_law`)
    to its loss against the tokens it has seen ``n_k``; the learning speed
    ``s_k = alpha_k (L_k(n_k) - exp(e_k)) / n_k``; the score ``s_k mu_k sqrt(h_k (1 - h_k))`` (``mu`` the
    natural shares, ``h`` a 0.9 moving average of realised shares); ``rho`` = the normalised score, floored
    at 0.01 and renormalised; ``pi = 0.9 * mean(rho so far) + 0.1 * rho``. Until every domain has
    ``min_points`` points with ``n > 0``, and at any step where one domain's fit fails, the natural shares
    stand in for the whole mixture (no ``rho`` is recorded for that step).

    Adaptation: ``n_k`` is counted in units of the run's budget (the sum of the domain's weight times the
    progress of each segment) and ``L`` is the relative held-out loss, which is already an average over a
    fixed evaluation set, so it is not smoothed again.

    Args:
        natural: ``{domain: natural token share}`` (``mu`` and the start).
        min_points: points per domain before the first fit (the fit has 3 parameters).
    """

    name = "ado"
    STATE = ("h", "seen", "points", "rhos", "_progress")

    def __init__(self, natural: Mapping[str, float] | None, min_points: int = 3) -> None:
        if min_points < 3:
            raise ConfigError("ado", [f"min_points must be >= 3 (three parameters per fit), got {min_points}"])
        self.natural, self.min_points = natural, int(min_points)

    def start(self, space: DomainSpace) -> np.ndarray:
        self.mu = _shares_vector(space, self.natural, "ado")
        self.h, self.seen = self.mu.copy(), np.zeros(space.k)
        self.points: list[tuple[np.ndarray, np.ndarray]] = []
        self.rhos: list[np.ndarray] = []
        self._progress = 0.0
        return self.mu

    def update(self, view: ObservationView) -> np.ndarray:
        self.seen = self.seen + view.weights * (view.progress - self._progress)
        self._progress = view.progress
        self.points.append((self.seen.copy(), view.loss.copy()))
        self.h = 0.9 * self.h + 0.1 * view.weights
        n = np.array([p[0] for p in self.points])
        loss = np.array([p[1] for p in self.points])
        if min(int((n[:, k] > 0).sum()) for k in range(self.k)) < self.min_points:
            return self.mu
        speed = np.empty(self.k)
        for k in range(self.k):
            mask = n[:, k] > 0
            try:
                e, a, alpha = fit_power_law(n[mask, k], loss[mask, k])
            except ValueError:
                return self.mu
            speed[k] = alpha * np.exp(a) * self.seen[k] ** (-alpha) / self.seen[k]  # = alpha (L - exp e) / n
        score = speed * self.mu * np.sqrt(np.clip(self.h * (1.0 - self.h), 0.0, None))
        rho = score / score.sum() if score.sum() > 0 else self.mu.copy()
        rho = np.maximum(rho, 0.01)
        rho = rho / rho.sum()
        self.rhos.append(rho)
        return 0.9 * np.mean(self.rhos, axis=0) + 0.1 * rho


class VelocitunePolicy(_OnlineMethod):
    """Velocitune: weights that favour domains learning slowest relative to their targets (Luo et al.,
    *Velocitune: A Velocity-based Dynamic Domain Reweighting Method for Continual Pre-training*, arXiv
    2411.14318). The paper publishes no code; the form used here:

    * target loss per domain ``L*_k``: a scaling law ``L(D) = E + B / D^beta`` (:func:`fit_power_law`)
      fitted to the reference run's loss against the tokens it gave domain ``k``, read at the tokens the
      natural mixture gives it over the whole budget (the reference's last value when the fit fails);
    * velocity ``V_k = (L_k(t) - L*_k) / (L_k(0) - L*_k)`` with ``L_k(0) = 1`` (relative losses), clipped
      to [0, 1]: 1 = has not moved, 0 = reached its target;
    * ``w <- normalise(w * exp(eta * V))``, from the natural shares.

    Args:
        natural: ``{domain: natural token share}``.
        reference: the reference run (a natural-weights :class:`ReferenceCurve`).
        eta: step size of the multiplicative update.
    """

    name = "velocitune"
    STATE = ("w",)

    def __init__(self, natural: Mapping[str, float] | None, reference: ReferenceCurve | None,
                 eta: float = 1.0) -> None:
        if not eta > 0:
            raise ConfigError("velocitune", [f"eta must be > 0, got {eta}"])
        if reference is None:
            raise ConfigError("velocitune", ["Velocitune needs a reference run for its target losses (a "
                                             "ReferenceCurve); `mixagent compare` records one"])
        self.natural, self.reference, self.eta = natural, reference, float(eta)

    def start(self, space: DomainSpace) -> np.ndarray:
        self.reference.check_space(space, "velocitune")
        self.mu = _shares_vector(space, self.natural, "velocitune")
        self.target = self.targets(self.reference, self.mu)
        self.w = self.mu.copy()
        return self.w

    @staticmethod
    def targets(reference: ReferenceCurve, budget_shares: np.ndarray) -> np.ndarray:
        """``(K,)`` the scaling-law target loss ``L*`` of each domain at ``budget_shares`` of the budget."""
        tokens, loss = reference.tokens(), np.asarray(reference.loss, dtype=np.float64)
        out = loss[-1].copy()
        for k in range(loss.shape[1]):
            mask = tokens[:, k] > 0
            if mask.sum() < 3 or budget_shares[k] <= 0:
                continue
            try:
                e, a, beta = fit_power_law(tokens[mask, k], loss[mask, k])
            except ValueError:
                continue
            out[k] = math.exp(e) + math.exp(a) * budget_shares[k] ** (-beta)
        return np.minimum(out, 1.0 - 1e-6)  # a target above the start would make velocity meaningless

    def update(self, view: ObservationView) -> np.ndarray:
        velocity = np.clip((view.loss - self.target) / (1.0 - self.target), 0.0, 1.0)
        w = self.w * np.exp(self.eta * velocity)
        self.w = w / w.sum()
        return self.w


class AioliPolicy(_OnlineMethod):
    """Aioli: a linear mixing law fitted during the run (Chen et al., *Aioli: A Unified Optimization
    Framework for Language Model Data Mixing*, arXiv 2411.05735; HazyResearch/aioli).

    Law: ``L_i(t+1) = L_i(t) - sum_j A_ij p_j``. At each step the run's history of (mixture trained on,
    per-domain loss decrease) pairs is fitted by ridge regression without intercept (scikit-learn's
    ``Ridge``), then ``p <- p * exp(eta * sum_i A_ij)``, renormalised, from the natural shares.

    Adaptation: Aioli estimates ``A`` from short probe trainings on smoothed one-hot mixtures between
    rounds; here it is fitted online from the run's own steps (no extra tokens), as ``BASELINES.md`` allows.

    Args:
        natural: ``{domain: natural token share}``.
        eta: step size (paper: about 0.2).
        ridge: the ridge penalty.
    """

    name = "aioli"
    STATE = ("p", "x", "y")

    def __init__(self, natural: Mapping[str, float] | None, eta: float = 0.2, ridge: float = 1e-3) -> None:
        if not (eta > 0 and ridge > 0):
            raise ConfigError("aioli", [f"eta and ridge must be > 0, got {eta}, {ridge}"])
        self.natural, self.eta, self.ridge = natural, float(eta), float(ridge)

    def start(self, space: DomainSpace) -> np.ndarray:
        self.p = _shares_vector(space, self.natural, "aioli")
        self.x: list[np.ndarray] = []
        self.y: list[np.ndarray] = []
        return self.p

    def law(self) -> np.ndarray:
        """``(K, K)`` the fitted ``A`` (``A[i, j]``: loss decrease of domain ``i`` per unit weight on ``j``)."""
        from sklearn.linear_model import Ridge

        return Ridge(alpha=self.ridge, fit_intercept=False).fit(np.array(self.x), np.array(self.y)).coef_

    def update(self, view: ObservationView) -> np.ndarray:
        self.x.append(view.weights.copy())
        self.y.append(-view.change.copy())
        p = self.p * np.exp(self.eta * self.law().sum(axis=0))
        self.p = p / p.sum()
        return self.p
