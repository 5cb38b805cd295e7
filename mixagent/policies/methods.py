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
``aioli``        linear mixing law from probe trainings in every   natural shares, an env that trains probes
                 round (Chen et al. 2024)
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
from mixagent.policies.protocol import ProbePlan, RunningState

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

    The paper updates once per optimizer batch. A re-weighting step here stands for ``B = batches_per_step``
    optimizer batches, and the held-out losses are observed once per step, so the update is applied ``B``
    times with that step's excess loss, from uniform ``alpha``:
    ``lambda_k = max(L_k - L_ref_k, 0)``; repeat ``B`` times: ``alpha <- softmax(log alpha + eta * lambda)``,
    ``alpha <- (1 - c) alpha + c / K``. (One update per re-weighting step, the rule before, left the mixture
    within total variation 0.02 of uniform on v1: DoReMi's row was really uniform.)

    **Reference.** DoReMi's reference model is trained to the end on the reference weights; its loss on the
    batch is the bar the proxy's loss is measured against. Here the reference is a *run* on natural weights
    (a :class:`ReferenceCurve`, as the paper's issue #5 advises) and, by default, its loss **at the end** of
    the run (``reference_at="end"``: the paper's trained reference model). ``reference_at="progress"``
    reads the reference run at the same progress instead (the rule before: excess over where a natural run
    would be now, not over what a trained model reaches).

    Adaptation: the proxy's per-domain held-out loss ``L = b_t / b_0`` (relative to the start) replaces its
    per-batch training loss in nats, so the excess is on another scale than the paper's and ``eta`` is
    tuned (the comparison's equal tuning budget). DoReMi proper hands the time-averaged alpha to a second
    run; ``average=True`` drives the mixture with the running average instead of the current alpha (the
    online variant, the default, uses alpha directly).

    Args:
        reference: the reference run's losses (required: DoReMi has no meaning without it).
        eta: step size (paper: 1).
        smoothing: ``c`` (paper: 1e-3).
        average: drive with the running average of alpha.
        batches_per_step: optimizer batches one re-weighting step stands for (``B``).
        reference_at: ``end`` (the reference model trained to the end) or ``progress``.

    Raises:
        ConfigError: no reference, bad numbers, or a reference for other domains (at ``reset``).
    """

    name = "doremi"
    STATE = ("alpha", "_sum", "_n")
    REFERENCE_AT = ("end", "progress")

    def __init__(self, reference: ReferenceCurve | None, eta: float = 1.0, smoothing: float = 1e-3,
                 average: bool = False, batches_per_step: int = 1, reference_at: str = "end") -> None:
        if reference is None:
            raise ConfigError("doremi", ["DoReMi needs a reference run (a ReferenceCurve of a natural-weights run "
                                         "in the same env); `mixagent compare` records one"])
        problems = []
        if not (eta > 0 and 0 <= smoothing <= 1):
            problems.append(f"eta must be > 0 and smoothing in [0, 1], got {eta}, {smoothing}")
        if batches_per_step < 1:
            problems.append(f"batches_per_step must be >= 1, got {batches_per_step}")
        if reference_at not in self.REFERENCE_AT:
            problems.append(f"reference_at must be one of {self.REFERENCE_AT}, got {reference_at!r}")
        if problems:
            raise ConfigError("doremi", problems)
        self.reference, self.eta, self.smoothing, self.average = reference, float(eta), float(smoothing), average
        self.batches, self.reference_at = int(batches_per_step), reference_at

    def start(self, space: DomainSpace) -> np.ndarray:
        self.reference.check_space(space, "doremi")
        self.alpha = np.full(space.k, 1.0 / space.k)
        self._sum, self._n = self.alpha.copy(), 1
        return self.alpha

    def update(self, view: ObservationView) -> np.ndarray:
        bar = self.reference.at(1.0 if self.reference_at == "end" else view.progress)
        excess = np.maximum(view.loss - bar, 0.0)
        alpha = self.alpha
        for _ in range(self.batches):  # one exponentiated-gradient step per optimizer batch
            logits = np.log(alpha) + self.eta * excess
            alpha = np.exp(logits - logits.max())
            alpha = (1.0 - self.smoothing) * alpha / alpha.sum() + self.smoothing / self.k
            self._sum, self._n = self._sum + alpha, self._n + 1
        self.alpha = alpha
        return self._sum / self._n if self.average else self.alpha


class ODMPolicy(_OnlineMethod):
    """Online Data Mixing: an EXP3 bandit over domains (Albalak et al., *Efficient Online Data Mixing For
    Language Model Pre-Training*, arXiv 2312.02406; alon-albalak/online-data-mixing).

    Update at each re-weighting step, which stands for ``B = batches_per_step`` of ODM's per-batch updates:
    reward ``r_k = gain * L_k / 10``; ``R_k <- R_k + B r_k`` (or, with ``moving_average``, ``B`` steps of
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
        gain: scale of the reward (paper: 1, i.e. ``loss / 10``); EXP3's effective step size, so the
            comparison's equal tuning budget searches it.
    """

    name = "odm"
    STATE = ("rewards", "t", "steps")

    def __init__(self, warmup: int = 1, moving_average: bool = False, batches_per_step: int = 1,
                 gain: float = 1.0) -> None:
        if warmup < 0 or batches_per_step < 1 or not gain > 0:
            raise ConfigError("odm", [f"warmup must be >= 0, batches_per_step >= 1 and gain > 0, got {warmup}, "
                                      f"{batches_per_step}, {gain}"])
        self.warmup, self.moving_average, self.batches = int(warmup), moving_average, int(batches_per_step)
        self.gain = float(gain)

    @staticmethod
    def epsilon(k: int, t: int) -> float:
        """``min(1/K, sqrt(ln K / (K t)))``; ``1/K`` at ``t = 0``."""
        return 1.0 / k if t == 0 else min(1.0 / k, math.sqrt(math.log(k) / (k * t)))

    def start(self, space: DomainSpace) -> np.ndarray:
        self.rewards, self.t, self.steps = np.zeros(space.k), 0, 0
        return np.full(space.k, 1.0 / space.k)

    def update(self, view: ObservationView) -> np.ndarray:
        r, b = self.gain * view.loss / 10.0, self.batches
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
    at 0.01 and renormalised; ``pi = (1 - gamma) * mean(rho so far) + gamma * rho`` (``gamma`` 0.1). Until every
    domain has
    ``min_points`` points with ``n > 0``, and at any step where one domain's fit fails, the natural shares
    stand in for the whole mixture (no ``rho`` is recorded for that step).

    Adaptation: ``n_k`` is counted in units of the run's budget (the sum of the domain's weight times the
    progress of each segment) and ``L`` is the relative held-out loss, which is already an average over a
    fixed evaluation set, so it is not smoothed again.

    Args:
        natural: ``{domain: natural token share}`` (``mu`` and the start).
        min_points: points per domain before the first fit (the fit has 3 parameters).
        gamma: weight of the current ``rho`` against the running mean (paper: 0.1).
    """

    name = "ado"
    STATE = ("h", "seen", "points", "rhos", "_progress")

    def __init__(self, natural: Mapping[str, float] | None, min_points: int = 3, gamma: float = 0.1) -> None:
        if min_points < 3 or not 0 <= gamma <= 1:
            raise ConfigError("ado", [f"min_points must be >= 3 (three parameters per fit) and gamma in [0, 1], "
                                      f"got {min_points}, {gamma}"])
        self.natural, self.min_points, self.gamma = natural, int(min_points), float(gamma)

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
        return (1.0 - self.gamma) * np.mean(self.rhos, axis=0) + self.gamma * rho


class VelocitunePolicy(_OnlineMethod):
    """Velocitune: weights that favour domains learning slowest relative to their targets (Luo et al.,
    *Velocitune: A Velocity-based Dynamic Domain Reweighting Method for Continual Pre-training*, arXiv
    2411.14318). The paper publishes no code; the form used here:

    * target loss per domain ``L*_k``: a scaling law ``L(D) = E + B / D^beta`` (:func:`fit_power_law`)
      fitted to the reference run's loss against the tokens it gave domain ``k``, **extrapolated to the
      full budget** (``D = budget`` tokens: what the domain could reach if the whole run were spent on it,
      ``budget`` in units of the run's budget, default 1). Reading the fit at the reference run's own
      endpoint (the rule before) made every domain the natural run had already learned reach its "target"
      early, its velocity pinned at 0 or 1, and the mixture drifted to the source field (v1: target share
      0.238 -> 0.028). A domain whose fit fails (fewer than 3 points, a loss that does not fall) keeps the
      reference's last value, counted in ``fit_failures``;
    * velocity ``V_k = (L_k(t) - L*_k) / (L_k(0) - L*_k)`` with ``L_k(0) = 1`` (relative losses), clipped
      to [0, 1]: 1 = has not moved, 0 = reached its target. ``saturated`` counts the (step, domain)
      velocities that hit a bound, ``velocities`` all of them (:meth:`diagnostics`): a method whose
      velocities sit at the bounds is not measuring learning speed any more;
    * ``w <- normalise(w * exp(eta * V))``, from the natural shares.

    Args:
        natural: ``{domain: natural token share}``.
        reference: the reference run (a natural-weights :class:`ReferenceCurve`).
        eta: step size of the multiplicative update.
        budget: where the targets are read, in units of the run's budget (``D = budget``).
    """

    name = "velocitune"
    STATE = ("w", "saturated", "velocities")

    def __init__(self, natural: Mapping[str, float] | None, reference: ReferenceCurve | None,
                 eta: float = 1.0, budget: float = 1.0) -> None:
        if not (eta > 0 and budget > 0):
            raise ConfigError("velocitune", [f"eta and budget must be > 0, got {eta}, {budget}"])
        if reference is None:
            raise ConfigError("velocitune", ["Velocitune needs a reference run for its target losses (a "
                                             "ReferenceCurve); `mixagent compare` records one"])
        self.natural, self.reference, self.eta, self.budget = natural, reference, float(eta), float(budget)

    def start(self, space: DomainSpace) -> np.ndarray:
        self.reference.check_space(space, "velocitune")
        self.mu = _shares_vector(space, self.natural, "velocitune")
        self.target, self.fit_failures = self.targets(self.reference, np.full(space.k, self.budget))
        self.w = self.mu.copy()
        self.saturated, self.velocities = 0, 0
        return self.w

    @staticmethod
    def targets(reference: ReferenceCurve, budget_tokens: np.ndarray) -> tuple[np.ndarray, int]:
        """``(K,)`` the scaling-law target loss ``L*`` of each domain at ``budget_tokens`` (units of the run's
        budget), and how many domains' fits failed (they keep the reference's last value)."""
        tokens, loss = reference.tokens(), np.asarray(reference.loss, dtype=np.float64)
        out, failed = loss[-1].copy(), 0
        for k in range(loss.shape[1]):
            mask = tokens[:, k] > 0
            if mask.sum() < 3 or budget_tokens[k] <= 0:
                failed += 1
                continue
            try:
                e, a, beta = fit_power_law(tokens[mask, k], loss[mask, k])
            except ValueError:
                failed += 1
                continue
            out[k] = min(out[k], math.exp(e) + math.exp(a) * budget_tokens[k] ** (-beta))
        return np.minimum(out, 1.0 - 1e-6), failed  # a target above the start would make velocity meaningless

    def update(self, view: ObservationView) -> np.ndarray:
        raw = (view.loss - self.target) / (1.0 - self.target)
        velocity = np.clip(raw, 0.0, 1.0)
        self.saturated += int(((raw <= 0.0) | (raw >= 1.0)).sum())
        self.velocities += raw.size
        w = self.w * np.exp(self.eta * velocity)
        self.w = w / w.sum()
        return self.w

    def diagnostics(self) -> dict:
        """``{"saturated": share of velocities at a bound, "fit_failures": domains without a fit}``."""
        return {"saturated": self.saturated / self.velocities if self.velocities else 0.0,
                "fit_failures": self.fit_failures}


class AioliPolicy(_OnlineMethod):
    """Aioli: a linear mixing law estimated from probe trainings in every round (Chen et al., *Aioli: A
    Unified Optimization Framework for Language Model Data Mixing*, arXiv 2411.05735; HazyResearch/aioli).

    Law: ``L_i(after) = L_i(before) - sum_j A_ij p_j``. Each re-weighting step is one of Aioli's rounds:

    1. *LearnParams*: train ``K`` probe mixtures in turn, probe ``j`` the smoothed one-hot
       ``P_j = one_hot * e_j + (1 - one_hot) / (K - 1) * (1 - e_j)``, ``probe_batches`` optimizer batches
       each (a :class:`~mixagent.policies.protocol.ProbePlan`; the env takes the probe tokens from the
       step's budget), measuring every domain's held-out loss before and after each probe on a few windows
       (``probe_windows`` per domain). The loss decrease of domain ``i`` over probe ``j`` is
       ``D_ij = sum_l P_jl A_il``, so row ``i`` of ``A`` solves ``P A_i = D_i`` (``P`` is invertible for
       ``one_hot > 1/K``).
    2. ``p <- p * exp(eta * sum_i A_ij)``, renormalised, from the natural shares; the rest of the step
       trains on ``p``.

    Adaptation: a round is a re-weighting step, the losses are the proxy's held-out bits per byte relative to
    the start (the paper: validation loss in nats), so ``eta`` is tuned (the comparison's equal tuning
    budget). Fitting ``A`` by regression on the run's own mixtures (the rule before, rules version 1) is
    not Aioli: the mixtures a run plays are nearly collinear, so a loss change common to all domains was
    blamed on the heaviest domain (v1: fiction 0.199 -> 0.018). Where no probes were observed before a
    decision (a deployment whose loop cannot train probes) the weights are kept and counted in
    ``fallbacks``.

    Args:
        natural: ``{domain: natural token share}``.
        eta: step size (paper: about 0.2).
        one_hot: the probe's weight on its own domain (in ``(1/K, 1]``).
        probe_batches: optimizer batches per probe.
        probe_windows: held-out windows per domain for each probe loss.
    """

    name = "aioli"
    STATE = ("p", "_pending")

    def __init__(self, natural: Mapping[str, float] | None, eta: float = 0.2, one_hot: float = 0.8,
                 probe_batches: int = 1, probe_windows: int = 4) -> None:
        problems = []
        if not (eta > 0 and 0 < one_hot <= 1):
            problems.append(f"eta must be > 0 and one_hot in (0, 1], got {eta}, {one_hot}")
        if probe_batches < 1 or probe_windows < 1:
            problems.append(f"probe_batches and probe_windows must be >= 1, got {probe_batches}, {probe_windows}")
        if problems:
            raise ConfigError("aioli", problems)
        self.natural, self.eta, self.one_hot = natural, float(eta), float(one_hot)
        self.probe_batches, self.probe_windows = int(probe_batches), int(probe_windows)

    def start(self, space: DomainSpace) -> np.ndarray:
        if space.k > 1 and self.one_hot <= 1.0 / space.k:
            raise ConfigError("aioli", [f"one_hot must be > 1/K = {1.0 / space.k:.3f} so the probes are independent, "
                                        f"got {self.one_hot}"])
        self.p = _shares_vector(space, self.natural, "aioli")
        self._pending: np.ndarray | None = None
        self.probes = self.probe_mixtures(space.k, self.one_hot)
        return self.p

    @staticmethod
    def probe_mixtures(k: int, one_hot: float) -> np.ndarray:
        """``(K, K)`` the smoothed one-hot probe mixtures (row ``j`` = probe ``j``)."""
        if k == 1:
            return np.ones((1, 1))
        return np.full((k, k), (1.0 - one_hot) / (k - 1)) + np.eye(k) * (one_hot - (1.0 - one_hot) / (k - 1))

    def probe_plan(self, observation: np.ndarray) -> ProbePlan:
        return ProbePlan(self.probes.copy(), self.probe_batches, self.probe_windows)

    def observe_probes(self, losses: np.ndarray) -> None:
        self._pending = np.asarray(losses, dtype=np.float64)

    def law(self, losses: np.ndarray) -> np.ndarray:
        """``(K, K)`` ``A`` from one round's probe losses ``(K + 1, K)`` (``A[i, j]``: loss decrease of
        domain ``i`` per unit weight on ``j``)."""
        decrease = losses[:-1] - losses[1:]  # (probe j, domain i)
        return np.linalg.solve(self.probes, decrease).T

    def act(self, observation: np.ndarray) -> DomainWeights:
        if not hasattr(self, "_weights"):
            raise UsageError(f"{type(self).__name__}: call reset(space) before act()")
        ObservationView.parse(observation, self.k)
        pending, self._pending = self._pending, None
        if pending is None or pending.shape != (self.k + 1, self.k) or not np.isfinite(pending).all():
            self.fallbacks += 1
            log.warning("aioli: no finite probe losses before this decision (a loop that cannot train probes?); "
                        "keeping the last weights")
        else:
            p = self.p * np.exp(self.eta * self.law(pending).sum(axis=0))
            if np.isfinite(p).all() and p.sum() > 0:
                self.p = self._weights = p / p.sum()
            else:
                self.fallbacks += 1
        return DomainWeights.normalised(self.space, self._weights)
