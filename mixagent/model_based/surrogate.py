"""The surrogate environment: the world model behind the env's own contract.

:class:`WorldModelBackend` is a :class:`~mixagent.env.backends.ProxyBackend`: instead of training the
proxy LM for a segment it asks the world model for the next evaluation. :class:`~mixagent.env.MixingEnv`
around it builds observations and rewards with the real env's code, so the surrogate and the real env
share their MDP to the byte except for the dynamics. Thousands of episodes a minute on one CPU core.

Use it for tests, quick experiments and model-based training; verdicts come from the real env only.

* ``mode="mean"``: the ensemble mean (deterministic; the seed only fixes nothing);
* ``mode="sample"``: one member drawn per step (MBPO's rollouts), seeded by the episode seed.

``UncertaintyPenalty`` subtracts ``coef x`` the ensemble's disagreement from every reward (MOPO's
penalised MDP): the mean over outputs of the members' standard deviation, in the outputs' standardised
units (a disagreement of 1 is one standard deviation of a real step's change).

``gymnasium.make("mixagent.envs:mixagent/<spec name>-surrogate-v<version>")`` is registered for every committed
world model (``checkpoints/world_models/<spec name>-v<version>/``).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from mixagent.config import from_dict
from mixagent.env.environment import MixingEnv
from mixagent.env.evaluation import EvalResult
from mixagent.env.observation import ObservationBuilder
from mixagent.env.proxy import SegmentStats
from mixagent.env.spec import EnvSpec, load_spec
from mixagent.errors import ConfigError, WorldModelError
from mixagent.model_based.world_model import WorldModel, load_world_model

__all__ = ["WorldModelBackend", "UncertaintyPenalty", "make_surrogate_env", "SURROGATE_MODES"]

SURROGATE_MODES = ("mean", "sample")


class WorldModelBackend:
    """A :class:`~mixagent.env.backends.ProxyBackend` whose segments are world-model predictions.

    Args:
        model: the fitted world model.
        spec: the env spec it was fitted on (the initial mixture, horizon, LR schedule and segment size).
        mode: ``"mean"`` or ``"sample"`` (see the module docstring).

    Attributes:
        disagreement: the last step's ensemble disagreement (standardised units; 0 before a step).
    """

    def __init__(self, model: WorldModel, spec: EnvSpec, mode: str = "mean") -> None:
        if mode not in SURROGATE_MODES:
            raise ConfigError("surrogate", [f"mode must be one of {', '.join(SURROGATE_MODES)}, got {mode!r}"])
        if spec.reward.name in ("judge", "judge_bpb"):
            raise WorldModelError(f"reward {spec.reward.name!r} reads the judge's win rates, which the world model "
                                  f"does not predict (it predicts bits per byte and benchmark scores): plan or "
                                  f"simulate under a reward without the judge (reward.name=normalised_bpb), or train a "
                                  f"model-free agent (bc, cql) on judged trajectories")
        self.model = model
        self.spec = spec
        self.mode = mode
        self.space = model.space
        self.natural = np.asarray(model.meta["natural"], dtype=np.float64)
        self.base_id = model.meta.get("base_model", "")
        self.steps_per_segment = spec.segment_tokens // (spec.optim.micro_batch * spec.base_config().seq_len)
        self.builder = ObservationBuilder(self.space, spec.observe_lr)
        self._lrs = model.meta.get("observed_lr")
        self._model_start = model.start()
        self._start = self._model_start  # a branch from a real state replaces it until the next reset
        self._initial = (np.full(self.space.k, 1.0 / self.space.k) if spec.initial_mixture == "uniform"
                         else self.natural.copy())
        self.disagreement = 0.0
        self.reset(0)

    def reset(self, seed: int) -> EvalResult:
        self.rng = np.random.Generator(np.random.PCG64(seed))
        self._start = self._model_start
        self.prev = self.now = self._start
        self.weights = self._initial.copy()
        self.t = 0
        self.tokens_seen = 0
        self.disagreement = 0.0
        return copy.deepcopy(self._start)

    def train(self, weights: np.ndarray, step: int) -> SegmentStats:
        horizon = self.spec.steps
        lr = None if self._lrs is None else self._lrs[min(step, horizon - 1)]
        obs = self.builder(self.weights, self._start, self.prev, self.now, step / horizon, lr)
        members = self.model.predict_members(np.concatenate([obs, np.asarray(weights, np.float32)]))[:, 0]
        delta = members[self.rng.integers(len(members))] if self.mode == "sample" else members.mean(0)
        self.disagreement = float((members.std(0) / self.model.norm["y_std"]).mean())
        self.tokens_seen += self.spec.segment_tokens
        self.prev, self.now = self.now, self.model.next_eval(self.now, delta, self.tokens_seen)
        self.weights = np.asarray(weights, dtype=np.float64).copy()
        self.t = step + 1
        # no proxy trains: the step reports a training loss of 0 (info["train_loss"])
        return SegmentStats(self.spec.segment_tokens, self.steps_per_segment, 0.0, 0.0, False)

    def evaluate(self) -> EvalResult:
        return copy.deepcopy(self.now)

    def state(self) -> dict:
        return {"start": self._start, "prev": self.prev, "now": self.now, "weights": self.weights.copy(), "t": self.t,
                "tokens_seen": self.tokens_seen, "rng": copy.deepcopy(self.rng.bit_generator.state),
                "disagreement": self.disagreement}

    def load_state(self, state: dict) -> None:
        """Continue from ``state`` (:meth:`state`'s, or a real run's step with its own ``start``)."""
        self._start = state.get("start", self._start)
        self.prev, self.now, self.t = state["prev"], state["now"], state["t"]
        self.weights = state["weights"].copy()
        self.tokens_seen, self.disagreement = state["tokens_seen"], state["disagreement"]
        self.rng.bit_generator.state = copy.deepcopy(state["rng"])


class UncertaintyPenalty(gym.Wrapper):
    """MOPO's penalised reward ``r - coef * u``, ``u`` the world model's disagreement on the step
    (``info["disagreement"]``). Wraps a surrogate env (``make_surrogate_env(..., penalty=coef)``)."""

    def __init__(self, env: gym.Env, coef: float) -> None:
        super().__init__(env)
        if not coef >= 0:
            raise ConfigError("surrogate", [f"penalty must be >= 0, got {coef}"])
        self.coef = coef

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        u = self.env.unwrapped.backend.disagreement
        info["disagreement"] = u
        return obs, reward - self.coef * u, terminated, truncated, info


def make_surrogate_env(world_model: str | Path | WorldModel, spec: str | Path | EnvSpec | None = None,
                       mode: str = "mean", penalty: float = 0.0, render_mode: str | None = None) -> Any:
    """The surrogate env of ``world_model``: a :class:`~mixagent.env.MixingEnv` with a
    :class:`WorldModelBackend`, wrapped in :class:`UncertaintyPenalty` when ``penalty > 0``.

    Args:
        world_model: an artifact directory or a loaded model.
        spec: the env spec (default: the one the model was fitted on); any other spec is refused.
        mode: ``"mean"`` or ``"sample"``.
        penalty: the uncertainty penalty's coefficient (0 = none).

    Raises:
        WorldModelError: ``spec`` is not the spec the model was fitted on (its hash differs), or the spec's
            learning-rate schedule differs from the one the runs recorded.
    """
    if not penalty >= 0:
        raise ConfigError("surrogate", [f"penalty must be >= 0 (the weight of the disagreement), got {penalty}"])
    model = world_model if isinstance(world_model, WorldModel) else load_world_model(world_model)
    fitted = from_dict(EnvSpec, model.meta["spec"], "world model spec")
    if spec is None:
        spec = fitted
    elif not isinstance(spec, EnvSpec):
        spec = load_spec(spec)
    if spec.spec_hash() != model.meta["spec_hash"]:
        raise WorldModelError(f"the world model was fitted on {model.meta['env_id']} (spec hash "
                              f"{model.meta['spec_hash']}), not on {spec.env_id} (spec hash {spec.spec_hash()}); fit "
                              f"one on trajectories of that spec (mixagent world-model data=[<run>])")
    env = MixingEnv(spec, backend=WorldModelBackend(model, spec, mode), render_mode=render_mode)
    recorded = model.meta.get("observed_lr")
    if recorded is not None and not np.allclose(env.lr_schedule(), recorded, atol=1e-9):
        raise WorldModelError(f"the spec's learning-rate schedule {env.lr_schedule()} differs from the one the runs "
                              f"recorded {recorded}; refit the world model on runs of this spec")
    return UncertaintyPenalty(env, penalty) if penalty > 0 else env

