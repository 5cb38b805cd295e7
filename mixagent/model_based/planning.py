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
from pathlib import Path

import numpy as np

from mixagent.domains import DomainSpace, DomainWeights, replay_weights
from mixagent.env.evaluation import EvalResult
from mixagent.env.rewards import balanced_score
from mixagent.errors import WorldModelError
from mixagent.model_based.surrogate import make_surrogate_env
from mixagent.model_based.world_model import WorldModel
from mixagent.rollout.cache import same_start

__all__ = ["PLANNER_VERSION", "WorldModelPlanner", "evaluate_planner", "planner_key", "world_model_digest"]

log = logging.getLogger(__name__)
# The planner's rule (state rebuild, search space, objective, search) and its episode record: bump it when either
# changes, and the episodes stored under the old version are run again.
PLANNER_VERSION = 1


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


def world_model_digest(path: str | Path) -> str:
    """12 hex digits of what a world model predicts with: its ``meta.json`` (which records the weights' sha256,
    checked on load) less its measurements (``metrics``) and the paths it was fitted from (``runs``), which a
    re-measured or moved model rewrites without changing a prediction."""
    from mixagent.rollout.identity import content_digest

    meta = json.loads((Path(path) / "meta.json").read_text())
    return content_digest({k: v for k, v in meta.items() if k not in ("metrics", "runs")})


def planner_key(world_model: str, trials: int, penalty: float) -> dict:
    """Everything a planner episode in the real env depends on besides its seed: the world model's content
    (:func:`world_model_digest`), the search (``trials``, ``penalty``), the real env's spec hash (the world
    model's spec) and the planner's rule version; ``digest`` names the episodes' directory.

    Raises:
        WorldModelError: no world-model artifact at ``world_model``.
    """
    from mixagent.config import from_dict
    from mixagent.env.spec import EnvSpec
    from mixagent.paths import REPO_ROOT
    from mixagent.rollout.identity import content_digest

    path = REPO_ROOT / world_model
    if not (path / "meta.json").is_file():
        raise WorldModelError(f"{path} is not a world-model artifact (no meta.json); fit one with mixagent world-model "
                              f"--config configs/world_model/default.yaml")
    spec = from_dict(EnvSpec, json.loads((path / "meta.json").read_text())["spec"], "world model spec")
    key = {"world_model_digest": world_model_digest(path), "trials": int(trials), "penalty": float(penalty),
           "spec_hash": spec.spec_hash(), "planner_version": PLANNER_VERSION}
    return key | {"digest": content_digest(key)}


def evaluate_planner(world_model: str, seeds: list[int], out: str, trials: int = 64, penalty: float = 0.05,
                     progress: bool = True) -> list[dict]:
    """Roll the planner out in the **real** env of the world model's spec on ``seeds`` (held-out: the audit's
    and the comparison's), one episode JSON per seed under ``out/<key digest>/`` (``<seed>.json``: the
    comparison's episode summary, each decision's plan and the :func:`planner_key` it ran under). A seed
    stored under the same key is read back, not rerun; a refitted world model, other ``trials`` or ``penalty``,
    another spec or planner version is another key. Episodes stored by seed only (``out/<seed>.json``, before
    the key) record neither the world model's content nor the rule version: they are left in place and not
    reused. Returns the episodes.
    """
    from tqdm.auto import tqdm

    from mixagent.config import from_dict
    from mixagent.env.environment import MixingEnv
    from mixagent.env.spec import EnvSpec
    from mixagent.model_based.world_model import load_world_model
    from mixagent.paths import REPO_ROOT, atomic_write_json
    from mixagent.rollout.cache import start_eval
    from mixagent.rollout.episode import rollout, summarize

    key = planner_key(world_model, trials, penalty)
    model = load_world_model(REPO_ROOT / world_model)
    env = MixingEnv(from_dict(EnvSpec, model.meta["spec"], "world model spec"))
    root = REPO_ROOT / out / key["digest"]
    legacy = [s for s in seeds if (REPO_ROOT / out / f"{s}.json").is_file() and not (root / f"{s}.json").is_file()]
    if legacy:
        log.warning("%s holds planner episodes stored by seed only (seeds %s), without the world model's content or "
                    "the planner's version: not reused, run again into %s", REPO_ROOT / out, legacy, root)
    episodes = []
    start = start_eval(env) if any((root / f"{s}.json").is_file() for s in seeds) else None
    with tqdm(total=len(seeds) * env.horizon, desc="planner in the real env", unit="segment",
              disable=not progress) as bar:
        for seed in seeds:
            path = root / f"{seed}.json"
            stored = _stored(path, key, seed, start)
            if stored is not None:
                episodes.append(stored)
                bar.update(env.horizon)
                continue
            planner = WorldModelPlanner(model, trials=trials, penalty=penalty, seed=seed)
            r = rollout(env, planner, seed, progress=lambda _: bar.update())
            record = summarize(r, env.space, seed) | {"plans": planner.plans, "trials": trials, "penalty": penalty,
                                                      "world_model": world_model, "spec_hash": key["spec_hash"],
                                                      "key": key}
            root.mkdir(parents=True, exist_ok=True)
            atomic_write_json(path, record)
            episodes.append(record)
    return episodes


def _stored(path: Path, key: dict, seed: int, start: dict | None) -> dict | None:
    """The episode stored at ``path`` when it ran under ``key`` on ``seed`` from the base model whose start
    evaluation is ``start`` (:func:`mixagent.rollout.cache.same_start`: the key names the spec, whose base
    checkpoint is not bit-reproducible across machines), else ``None`` (it is then run again, logged)."""
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        if record.get("key") == key and record.get("seed") == seed:
            if same_start(start, record.get("start")):
                return record
            log.warning("stored planner episode %s started from another base model than this env's (its start "
                        "evaluation differs); running it again", path)
            return None
    except (OSError, ValueError, AttributeError):
        pass
    log.warning("stored planner episode %s is unreadable or of another key; running it again", path)
    return None
