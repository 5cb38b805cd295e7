"""Stage 2 with a world model: synthetic transitions branched from real states, and
online RL in the surrogate env. Selected by the agent config's ``model`` section.

* ``model.kind: synthetic`` (MOPO, Yu et al. 2020; MBPO's branched rollouts, Janner et al. 2019): from
  ``branches`` real states drawn from the dataset, roll ``horizon`` steps in the surrogate
  (``mode="sample"``: one ensemble member per step) with the SFT policy plus Gaussian exploration noise,
  each reward penalised by ``penalty`` x the ensemble's disagreement; the offline algorithm (CQL) then
  trains on real + synthetic transitions.
* ``model.kind: surrogate``: d3rlpy's online SAC or TD3 (``rl.algo: sac | td3``, ``fit_online``, in
  :mod:`mixagent.agent.train`, handed a :class:`WorldModelData`) in the penalised surrogate env for
  ``online_steps`` env steps, the actor started from the SFT policy.

d3rlpy 2.x trains on any ``MDPDataset`` and in any Gymnasium env but has no model-based algorithm (1.x's
MOPO and COMBO were dropped in 2.0), so what is written here is only the branching: restoring a real
state into the surrogate and laying the rollouts out as transitions. The world model, the surrogate env
and the penalty are :mod:`mixagent.model_based.world_model` and :mod:`mixagent.model_based.surrogate`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from mixagent.agent.config import AgentConfig, ModelBasedConfig
from mixagent.agent.dataset import TrajectorySet, Transitions
from mixagent.domains import DomainWeights
from mixagent.errors import WorldModelError

__all__ = ["WorldModelData", "world_model_data", "synthetic_transitions", "surrogate_for"]

def surrogate_for(cfg: ModelBasedConfig, tset: TrajectorySet, mode: str) -> Any:
    """The penalised surrogate env of ``cfg.world_model``, checked against the runs' spec.

    Raises:
        WorldModelError: the world model was fitted on another spec or domain space than the runs.
    """
    from mixagent.model_based.surrogate import make_surrogate_env
    from mixagent.model_based.world_model import load_world_model
    from mixagent.paths import REPO_ROOT

    model = load_world_model(REPO_ROOT / cfg.world_model)
    if model.meta["spec_hash"] != tset.env["spec_hash"] or list(model.space.names) != list(tset.space.names):
        raise WorldModelError(f"the world model {cfg.world_model} was fitted on {model.meta['env_id']} (spec hash "
                              f"{model.meta['spec_hash']}), the runs were collected on {tset.env['id']} (spec hash "
                              f"{tset.env['spec_hash']}); fit one on these runs (mixagent world-model "
                              f"data=[<run>] out=<dir>) and set model.world_model")
    return make_surrogate_env(model, mode=mode, penalty=cfg.penalty)


def _states(tset: TrajectorySet) -> list[tuple]:
    """Every real decision point: ``(start, prev, now, weights, t)`` of each trajectory step ``t`` with an
    evaluation before it (prefixes shared by branched trajectories appear once per trajectory)."""
    out = []
    for _, traj in sorted(tset.trajectories, key=lambda rt: (rt[0], rt[1].id)):
        before = [traj.start] + list(traj.evals)
        weights = [np.asarray(traj.header["start_weights"], np.float64)] + [
            np.asarray(s["weights"], np.float64) for s in traj.steps[:len(traj.evals)]]
        for t in range(min(len(before), tset.horizon)):
            out.append((traj.start, before[t - 1] if t else traj.start, before[t], weights[t], t))
    return out


def synthetic_transitions(tset: TrajectorySet, cfg: ModelBasedConfig, act: Callable[[np.ndarray], np.ndarray],
                          seed: int, progress: bool = True) -> Transitions:
    """``cfg.branches`` penalised rollouts of ``cfg.horizon`` steps in the surrogate from real states, in
    :class:`~mixagent.agent.dataset.Transitions` layout (a branch ending before the horizon ends in a
    timeout with a final-observation row, as real trajectories cut short do).

    Args:
        tset: the real runs (their states are the branch points).
        cfg: the model section (world model, penalty, branches, horizon, noise).
        act: the branching policy: observations ``(N, D)`` -> actions ``(N, K)`` in [-1, 1] (the SFT policy).
        seed: seeds the draws of states, noise and ensemble members.

    Raises:
        WorldModelError: the world model does not fit the runs (see :func:`surrogate_for`).
    """
    from tqdm.auto import tqdm

    env = surrogate_for(cfg, tset, mode="sample")
    base = env.unwrapped
    states = _states(tset)
    rng = np.random.default_rng(seed)
    picks = rng.integers(len(states), size=cfg.branches)
    obs_l, act_l, rew_l, term_l, out_l, final_l, episodes = [], [], [], [], [], [], []
    for b in tqdm(range(cfg.branches), desc="synthetic branches", unit="branch", disable=not progress):
        start, prev, now, weights, t = states[picks[b]]
        base.reset(seed=int(rng.integers(2**31 - 1)))
        backend = base.backend
        state = backend.state() | {"start": start, "prev": prev, "now": now, "weights": weights, "t": t,
                                   "tokens_seen": t * base.spec_.segment_tokens}
        dw = DomainWeights(base.space, weights)
        obs = base.obs_builder(weights, start, prev, now, t / base.horizon, base._lr(t))
        # the env's "prev" is the latest evaluation (the next reward is measured from it); the backend keeps both
        base.restore({"backend": state, "t": t, "start": start, "prev": now, "weights": dw, "obs": obs})
        row, ret, done = len(obs_l), 0.0, False
        for _ in range(min(cfg.horizon, base.horizon - t)):
            a = np.clip(act(obs[None])[0] + rng.normal(0.0, cfg.noise, base.space.k), -1.0, 1.0).astype(np.float32)
            nxt, reward, done, truncated, _ = env.step(a)
            if truncated or not np.isfinite(reward):  # a non-finite prediction: the branch ends before it
                break
            obs_l.append(obs)
            act_l.append(a)
            rew_l.append(float(reward))
            term_l.append(float(done))
            out_l.append(0.0)
            final_l.append(False)
            ret += float(reward)
            obs = nxt
        if not done:  # cut at the branch horizon: the observation after the last step as a final row
            obs_l.append(obs)
            act_l.append(np.zeros(base.space.k, np.float32))
            rew_l.append(0.0)
            term_l.append(0.0)
            out_l.append(1.0)
            final_l.append(True)
        if len(obs_l) == row:
            continue
        # "first_step" is the branch point and "return" the penalised branch's (not a whole trajectory's)
        episodes.append({"run": "synthetic", "id": f"branch-{b}", "row": row, "first_step": t,
                         "steps": len(obs_l) - row - (not done), "return": ret})
    return Transitions(np.asarray(obs_l, np.float32), np.asarray(act_l, np.float32), np.asarray(rew_l, np.float32),
                       np.asarray(term_l, np.float32), np.asarray(out_l, np.float32), episodes,
                       np.asarray(final_l, bool))


@dataclasses.dataclass(frozen=True)
class WorldModelData:
    """The world model's side of model-based stage 2, handed to
    :func:`mixagent.agent.train.train_agent` (``world_model=``): the agent package trains, this room supplies
    the surrogate env and the synthetic transitions (the agent never imports the world model).

    Args:
        cfg: the agent config's ``model`` section.
    """

    cfg: ModelBasedConfig

    def env(self, tset: TrajectorySet) -> Any:
        """The penalised surrogate env (``mode="sample"``), checked against the runs."""
        return surrogate_for(self.cfg, tset, mode="sample")

    def synthetic(self, tset: TrajectorySet, act: Callable[[np.ndarray], np.ndarray], seed: int,
                  progress: bool = True) -> Transitions:
        """Synthetic transitions branched from the runs' real states (:func:`synthetic_transitions`)."""
        return synthetic_transitions(tset, self.cfg, act, seed, progress)


def world_model_data(cfg: AgentConfig) -> WorldModelData | None:
    """What :func:`~mixagent.agent.train.train_agent` needs for ``cfg.model.kind`` (``None``: real data only)."""
    return WorldModelData(cfg.model) if cfg.model.kind else None
