"""The data-mixing environment (``gymnasium.make("mixagent.envs:mixagent/<spec>-v<version>")``, or the plain
id after ``mixagent.register_envs()``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from mixagent.data.sources import load_space
from mixagent.domains import DomainWeights, action_to_weights, check_action_mapping
from mixagent.env.backends import ProxyBackend, make_backend
from mixagent.env.evaluation import EvalResult
from mixagent.env.observation import CLIP, observation_builder
from mixagent.env.proxy import lr_at
from mixagent.env.references import get_reference
from mixagent.env.rewards import Reference, balanced_score, needs_reference, reward_measure, step_reward
from mixagent.env.spec import EnvSpec, load_spec
from mixagent.errors import ActionError, ConfigError, UsageError, WeightsError

__all__ = ["MixingEnv"]


class MixingEnv(gym.Env):
    """Continual pre-training of a proxy LM whose data mixture the agent chooses step by step.

    ## Description

    An episode is one continual pre-training (CPT) run of a small Llama-style proxy, starting from a base
    checkpoint pre-trained on the source field. At each of ``T`` re-weighting steps the agent picks a
    mixture over the ``K`` domains of a domain space; the proxy trains one segment of ``segment_tokens``
    tokens drawn under that mixture, then an evaluation environment scores it: held-out bits per byte
    per domain and one log-likelihood benchmark per field (source and target).

    ## Action Space

    ``Box(-1, 1, (K,), float32)``: one logit per domain, mapped to weights by
    ``floor + (1 - K*floor) * softmax(action / temperature)`` (``mixagent.domains.action_to_weights``).
    Wrong shapes or non-finite entries raise ``ActionError``.

    ## Observation Space

    ``Box(-10, 10, (3K + 5,), float32)`` built by ``mixagent.env.observation.ObservationBuilder``: current
    weights; per-domain bits per byte relative to the start and its change since the last step; per-field
    benchmark scores relative to the start and their last change; progress ``t/T``. Specs with
    ``observe_lr`` append the coming segment's learning rate over the peak (``3K + 6``).
    Specs with ``observation: 2`` observe version 2 instead
    (:class:`~mixagent.env.observation.SettingObservationBuilder`, ``3K + 11``: the spec's stated setting too).

    ## Rewards

    The change of a balanced score ``B_t = lam * target_improvement + (1 - lam) * source_improvement``
    (each relative to the start of the run; ``mixagent.env.rewards``), so the return is ``B_T - B_0``.
    Normalised rewards (v1) scale each field by source-only and target-only reference runs at the same
    budget (run once per spec hash, cached; ``env.reference``), so ``B_0`` is the base model's score.
    ``info["balanced_score"]`` holds ``B_t``; ``info["eval"]`` the raw EvalResult. Wall-clock timings of
    the last step (not deterministic, so not in ``info``) are in ``env.unwrapped.timings``.

    ## Starting State

    The base checkpoint with the spec's ``initial_mixture`` (natural token shares or uniform) as current
    weights; zero relative changes; progress 0. The seed fixes the training data order.

    ## Episode End

    ``terminated`` after ``T`` steps (the token budget is spent). ``truncated`` when a segment hits a
    NaN/Inf loss (``info["nonfinite_loss"] = True``); the episode cannot continue from a diverged proxy.

    ## Arguments

    ``spec``: an :class:`~mixagent.env.spec.EnvSpec` or the path of an ``envs/*.yaml`` file;
    ``backend``: an optional :class:`~mixagent.env.backends.ProxyBackend` (default: the spec's);
    ``overrides``: ``key=value`` strings applied to the spec file.

    ## Version History

    * v0: initial version.
    * v1 (``math-cpt-v1``): warmup-stable-decay LR observed in the state, a cap on unique target tokens, a
      base that saw 3% math, math sub-domains, the ``champ_solution`` benchmark and the normalised reward.
      v0 specs keep their meaning and hashes.
    """

    metadata = {"render_modes": ["ansi"]}

    def __init__(self, spec: EnvSpec | str | Path, backend: ProxyBackend | None = None,
                 overrides: tuple[str, ...] | list[str] = (), render_mode: str | None = None) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ConfigError("MixingEnv", [f"render_mode {render_mode!r} is not supported; use one of "
                                            f"{self.metadata['render_modes']} or None"])
        self.spec_ = spec if isinstance(spec, EnvSpec) else load_spec(spec, overrides)
        self.space = load_space(self.spec_.space_path())
        check_action_mapping(self.space.k, self.spec_.action.temperature, self.spec_.action.floor)  # before any model
        self.backend = backend if backend is not None else make_backend(self.spec_, self.space)
        from mixagent.env.setting import stated_from_spec  # version 2 observes the spec's stated setting

        self.obs_builder = observation_builder(self.space, self.spec_.observation, self.spec_.observe_lr,
                                               stated_from_spec(self.spec_))
        self._lrs = self.lr_schedule()  # fixed by the spec and the backend: computed once, read every step
        self.reference: Reference | None = None
        if needs_reference(self.spec_.reward.name):  # run (once per spec hash, then cached) before any episode
            self.reference = get_reference(self.spec_, self.backend, self.space)
            if problems := self.reference.problems(reward_measure(self.spec_.reward.name)):
                raise ConfigError(f"reward {self.spec_.reward.name} of {self.spec_.env_id}", problems)
        k = self.space.k
        self.action_space = gym.spaces.Box(-1.0, 1.0, (k,), np.float32)
        self.observation_space = gym.spaces.Box(-CLIP, CLIP, (self.obs_builder.dim,), np.float32)
        self.render_mode = render_mode
        self.natural = DomainWeights.normalised(self.space, self.backend.natural)
        self._t = 0
        self._start: EvalResult | None = None
        self.timings = {"train_seconds": 0.0, "eval_seconds": 0.0}

    @property
    def horizon(self) -> int:
        return self.spec_.steps

    def initial_weights(self) -> DomainWeights:
        if self.spec_.initial_mixture == "uniform":
            return DomainWeights.normalised(self.space, np.ones(self.space.k))
        return self.natural

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        episode_seed = int(self.np_random.integers(2**31 - 1))
        self._start = self._prev = self.backend.reset(episode_seed)
        self._weights = self.initial_weights()
        self._t = 0
        self._last_obs = self.obs_builder(self._weights.values, self._start, self._start, self._start, 0.0,
                                          self._lr(0))
        r = self.spec_.reward
        return self._last_obs, {"eval": self._start.to_json(), "weights": self._weights.to_mapping(),
                                "episode_seed": episode_seed,
                                "balanced_score": balanced_score(r.name, r.lam, self._start, self._start, self.space,
                                                                 self.reference)}

    def lr_schedule(self) -> list[float] | None:
        """The observed learning rate of each segment ``t = 0..T-1``: the LR of its first optimizer step over
        the peak, in ``(0, 1]`` (``None`` unless the spec has ``observe_lr``). Runs record it (meta.json
        ``proxy.observed_lr``) so datasets rebuild the observation without a model."""
        if not self.spec_.observe_lr:
            return None
        per = getattr(self.backend, "steps_per_segment", 1)
        return [lr_at(t * per, self.spec_.steps * per, self.spec_.optim) / self.spec_.optim.lr
                for t in range(self.spec_.steps)]

    def _lr(self, t: int) -> float | None:
        """The learning rate at the start of segment ``t`` over the peak (``None`` unless observed)."""
        return None if self._lrs is None else self._lrs[t]

    def step(self, action):
        try:
            a = np.asarray(action, dtype=np.float64)
        except (TypeError, ValueError):
            raise ActionError(f"action {action!r} is not numeric; give {self.space.k} finite numbers in "
                              f"[-1, 1]") from None
        if a.shape != (self.space.k,):
            raise ActionError(f"action has shape {a.shape}, expected ({self.space.k},): one logit per domain of "
                              f"space {self.space.name!r}")
        return self.step_weights(action_to_weights(self.space, a, self.spec_.action.temperature,
                                                   self.spec_.action.floor))

    def step_weights(self, weights: DomainWeights):
        """Step with a mixture directly (what baselines and deployed policies produce), bypassing the
        action map, which cannot express exact zeros. Returns what :meth:`step` returns."""
        if self._start is None:
            raise gym.error.ResetNeeded("call reset() before step()")
        if self._t >= self.spec_.steps:
            raise gym.error.ResetNeeded("the episode has ended; call reset()")
        if weights.space is not self.space and weights.space.names != self.space.names:
            raise WeightsError(f"weights are for space {weights.space.name!r} ({', '.join(weights.space.names[:6])}"
                               f"...), this env's space {self.space.name!r} has {', '.join(self.space.names[:6])}...; "
                               f"build them with DomainWeights(env.space, ...)")
        t0 = time.perf_counter()
        stats = self.backend.train(weights.values, self._t)
        train_s = time.perf_counter() - t0
        self.timings = {"train_seconds": train_s, "eval_seconds": 0.0}
        info: dict[str, Any] = {"weights": weights.to_mapping(), "train_loss": stats.mean_loss,
                                "segment_tokens": stats.tokens, "nonfinite_loss": stats.nonfinite}
        if stats.nonfinite:
            self._start = None  # a diverged proxy cannot continue: force a reset
            return self._last_obs, 0.0, False, True, info
        t1 = time.perf_counter()
        now = self.backend.evaluate()
        self.timings["eval_seconds"] = time.perf_counter() - t1
        if not now.is_finite():
            info["nonfinite_loss"] = True
            self._start = None
            return self._last_obs, 0.0, False, True, info
        self._t += 1
        r = self.spec_.reward
        reward = step_reward(r.name, r.lam, self._start, self._prev, now, self.space, self.reference)
        obs = self.obs_builder(weights.values, self._start, self._prev, now, self._t / self.spec_.steps,
                               self._lr(min(self._t, self.spec_.steps - 1)))
        self._prev, self._weights, self._last_obs = now, weights, obs
        info.update(eval=now.to_json(),
                    balanced_score=balanced_score(r.name, r.lam, self._start, now, self.space, self.reference))
        return obs, float(reward), self._t >= self.spec_.steps, False, info

    def probe(self, mixtures: np.ndarray, batches: int = 1, windows: int = 4) -> np.ndarray:
        """Train probe mixtures inside the coming segment, before its main mixture (Aioli's LearnParams).

        Each of ``mixtures`` (``(P, K)``) trains ``batches`` optimizer batches on the proxy, one after another;
        the tokens come out of the coming step's budget (the next :meth:`step` trains ``P * batches`` fewer
        batches, so every method spends the same tokens per episode). Returns ``(P + 1, K)`` per-domain bits
        per byte on the first ``windows`` held-out windows of each domain over the episode's start (``b / b_0``,
        ``b_0`` on all windows: a constant factor per domain, so differences between rows are on the
        observation's scale): before the first probe, then after each (NaN rows after a probe that diverged;
        the step then ends
        the episode as any divergence does).

        Raises:
            gymnasium.error.ResetNeeded: no episode running.
            UsageError: a backend that cannot train probes (the analytic and LM backends can), or ``batches``
                or ``windows`` not an integer >= 1.
            WeightsError: mixtures of the wrong shape or not on the simplex.
            ConfigError: probes that would take the whole segment.
        """
        if self._start is None or self._t >= self.spec_.steps:
            raise gym.error.ResetNeeded("call reset() before probe()")
        if not hasattr(self.backend, "probe"):
            raise UsageError(f"backend {type(self.backend).__name__} cannot train probe mixtures (Aioli needs an env "
                             f"whose backend implements ProbingBackend.probe)")
        if not (isinstance(batches, int | np.integer) and batches >= 1 and isinstance(windows, int | np.integer)
                and windows >= 1):
            raise UsageError(f"probe batches and windows must be integers >= 1, got {batches!r}, {windows!r}")
        m = np.asarray(mixtures, dtype=np.float64)
        if m.ndim != 2 or m.shape[1] != self.space.k or not np.isfinite(m).all() or (m < 0).any() \
                or not np.allclose(m.sum(1), 1.0, atol=1e-6):
            raise WeightsError(f"probe mixtures must be (P, {self.space.k}) rows on the simplex, got shape {m.shape}")
        bpb = self.backend.probe(m, int(batches), int(windows), self._t)
        start = np.array([self._start.bpb[n] for n in self.space.names])
        return bpb / start

    def snapshot(self) -> dict:
        """Everything a later :meth:`restore` needs to continue this episode from the current step
        (proxy weights, optimizer, data cursors, start/previous evaluations). In memory only."""
        if self._start is None:
            raise gym.error.ResetNeeded("nothing to snapshot: call reset() first (or the episode diverged)")
        return {"backend": self.backend.state(), "t": self._t, "start": self._start, "prev": self._prev,
                "weights": self._weights, "obs": self._last_obs.copy()}

    def restore(self, snap: dict) -> np.ndarray:
        """Return to a :meth:`snapshot` (which stays reusable); returns the observation at that step."""
        self.backend.load_state(snap["backend"])
        self._t, self._start, self._prev, self._weights = snap["t"], snap["start"], snap["prev"], snap["weights"]
        self._last_obs = snap["obs"].copy()
        return self._last_obs.copy()

    def render(self) -> str | None:
        if self.render_mode != "ansi" or self._start is None:
            return None
        top = sorted(self._weights.to_mapping().items(), key=lambda kv: -kv[1])[:5]
        return (f"t={self._t}/{self.spec_.steps} source={self._prev.scores['source']:.4f} "
                f"target={self._prev.scores['target']:.4f} weights: " + ", ".join(f"{n}={w:.2f}" for n, w in top))
