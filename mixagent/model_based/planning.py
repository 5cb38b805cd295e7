"""Model-predictive control over the world model (the planning variant).

At every step the planner rebuilds the current evaluation from the observation (the observation holds every
domain's bits per byte and both scores relative to the start, and their last change, so with the start
evaluation the model recorded they are exact), searches the remaining schedule in the world model, and trains
the first step of the best one (receding horizon; Garcia et al. 1989, as in PETS, Chua et al. 2018).

The search space is the replay schedule family of the headroom audit: one source share ``rho_t`` per
remaining step, each field's share split by its domains' natural shares. The objective is the final
balanced score the ensemble mean predicts, minus ``penalty`` x the summed ensemble disagreement along the
plan (MOPO's penalty, so the plan stays where the data was). The search is Optuna's TPE sampler, seeded per
decision, ``trials`` plans per decision.
"""

from __future__ import annotations

import copy
import json
import logging

import numpy as np

from mixagent.domains import DomainSpace, DomainWeights, replay_weights
from mixagent.env.evaluation import EvalResult
from mixagent.env.rewards import balanced_score
from mixagent.errors import WorldModelError
from mixagent.model_based.surrogate import make_surrogate_env
from mixagent.model_based.world_model import WorldModel

__all__ = ["WorldModelPlanner", "evaluate_planner"]

log = logging.getLogger(__name__)


class WorldModelPlanner:
    """A :class:`~mixagent.policies.MixingPolicy` that plans each step in the world model.

    Args:
        model: the fitted world model (its spec is the env's the planner drives).
        trials: plans evaluated per decision.
        penalty: weight of the ensemble disagreement summed along a plan.
        seed: seeds the search (decision ``t`` uses ``seed + t``).

    Raises:
        WorldModelError: ``reset`` in a space other than the model's.
    """

    def __init__(self, model: WorldModel, trials: int = 64, penalty: float = 0.0, seed: int = 0) -> None:
        self.model = model
        self.trials = trials
        self.penalty = penalty
        self.seed = seed
        self.env = make_surrogate_env(model)
        self.backend = self.env.backend
        self.spec = self.env.spec_
        self.start = model.start()
        self.plans: list[list[float]] = []

    def reset(self, space: DomainSpace) -> None:
        if list(space.names) != list(self.model.space.names):
            raise WorldModelError(f"the planner's world model predicts the space {list(self.model.space.names)}, "
                                  f"not {list(space.names)}; fit a world model on trajectories of that space")
        self.space = space
        self.plans = []

    def _state(self, obs: np.ndarray) -> tuple[int, dict]:
        """The step and the backend state the observation describes."""
        k, horizon = self.space.k, self.spec.steps
        names, fields = self.space.names, ("source", "target")
        b0 = np.array([self.start.bpb[n] for n in names])
        s0 = np.array([self.start.scores[f] for f in fields])
        b_now = b0 * (1 + obs[k:2 * k])
        b_prev = b_now - obs[2 * k:3 * k] * b0
        s_now = s0 * (1 + obs[3 * k:3 * k + 2])
        s_prev = s_now - obs[3 * k + 2:3 * k + 4] * s0
        t = int(round(float(obs[3 * k + 4]) * horizon))
        acc = dict(self.start.accuracy)  # not observed; the model's inputs do not read it

        def result(b: np.ndarray, s: np.ndarray) -> EvalResult:
            return EvalResult(dict(zip(names, map(float, b))), dict(zip(fields, map(float, s))), acc,
                              t * self.spec.segment_tokens, self.start.eval_tokens)

        self.backend.reset(0)
        state = self.backend.state()
        state.update(prev=result(b_prev, s_prev), now=result(b_now, s_now), weights=np.asarray(obs[:k], np.float64),
                     t=t, tokens_seen=t * self.spec.segment_tokens)
        return t, state

    def _score(self, state: dict, t: int, rhos: list[float]) -> float:
        self.backend.load_state(copy.deepcopy(state))
        natural = self.env.natural.values
        uncertainty = 0.0
        for i, rho in enumerate(rhos):
            self.backend.train(replay_weights(self.space, natural, rho), t + i)
            uncertainty += self.backend.disagreement
        r = self.spec.reward
        final = balanced_score(r.name, r.lam, self.start, self.backend.evaluate(), self.space, self.env.reference)
        return final - self.penalty * uncertainty

    def act(self, observation: np.ndarray) -> DomainWeights:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        t, state = self._state(np.asarray(observation, dtype=np.float64))
        remaining = self.spec.steps - t
        sampler = optuna.samplers.TPESampler(seed=self.seed + t)
        study = optuna.create_study(direction="maximize", sampler=sampler)
        study.optimize(lambda trial: self._score(state, t, [trial.suggest_float(f"rho{i}", 0.0, 1.0)
                                                             for i in range(remaining)]), n_trials=self.trials)
        plan = [study.best_params[f"rho{i}"] for i in range(remaining)]
        self.plans.append(plan)
        return DomainWeights(self.space, replay_weights(self.space, self.env.natural.values, plan[0]))


def evaluate_planner(world_model: str, seeds: list[int], out: str, trials: int = 64, penalty: float = 0.05,
                     progress: bool = True) -> list[dict]:
    """Roll the planner out in the **real** env of the world model's spec on ``seeds`` (held-out: the audit's
    and the comparison's), one episode JSON per seed under ``out`` (``<seed>.json``, the comparison's episode
    summary plus each decision's plan); a seed already there is not rerun. Returns the episodes.
    """
    from tqdm.auto import tqdm

    from mixagent.config import from_dict
    from mixagent.env.environment import MixingEnv
    from mixagent.env.spec import EnvSpec
    from mixagent.model_based.world_model import load_world_model
    from mixagent.paths import REPO_ROOT, atomic_write_json
    from mixagent.rollout.episode import rollout, summarize

    model = load_world_model(REPO_ROOT / world_model)
    env = MixingEnv(from_dict(EnvSpec, model.meta["spec"], "world model spec"))
    root = REPO_ROOT / out
    episodes = []
    with tqdm(total=len(seeds) * env.horizon, desc="planner in the real env", unit="segment",
              disable=not progress) as bar:
        for seed in seeds:
            path = root / f"{seed}.json"
            if path.is_file():
                episodes.append(json.loads(path.read_text()))
                bar.update(env.horizon)
                continue
            planner = WorldModelPlanner(model, trials=trials, penalty=penalty, seed=seed)
            r = rollout(env, planner, seed, progress=lambda _: bar.update())
            record = summarize(r, env.space, seed) | {"plans": planner.plans, "trials": trials, "penalty": penalty,
                                                      "world_model": world_model, "spec_hash": env.spec_.spec_hash()}
            root.mkdir(parents=True, exist_ok=True)
            atomic_write_json(path, record)
            episodes.append(record)
    return episodes
