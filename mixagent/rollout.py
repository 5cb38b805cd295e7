"""Roll a :class:`~mixagent.policies.MixingPolicy` out in a :class:`~mixagent.env.MixingEnv`."""

from __future__ import annotations

import dataclasses

import numpy as np

from mixagent.domains import weights_to_action
from mixagent.env import MixingEnv
from mixagent.evaluation import EvalResult
from mixagent.policies import MixingPolicy

__all__ = ["Rollout", "rollout"]


@dataclasses.dataclass
class Rollout:
    """One episode: the start evaluation and, per step, weights, reward, balanced score and evaluation."""

    start: EvalResult
    steps: list[dict]
    ret: float
    truncated: bool

    @property
    def final(self) -> EvalResult:
        return EvalResult.from_json(self.steps[-1]["eval"]) if self.steps and "eval" in self.steps[-1] else self.start


def rollout(env: MixingEnv, policy: MixingPolicy, seed: int, progress=None) -> Rollout:
    """Run one episode; the policy's weights are turned into the env's action by the inverse mapping."""
    obs, info = env.reset(seed=seed)
    policy.reset(env.space)
    start = EvalResult.from_json(info["eval"])
    steps, ret, done, truncated = [], 0.0, False, False
    while not done:
        weights = policy.act(obs)
        action = weights_to_action(weights, env.spec_.action.temperature, env.spec_.action.floor)
        obs, reward, terminated, truncated, info = env.step(action)
        ret += reward
        steps.append({"action": action.tolist(), "reward": reward, **info})
        done = terminated or truncated
        if progress is not None:
            progress(info)
    return Rollout(start, steps, ret, truncated)


def summarize(r: Rollout) -> dict[str, float]:
    """Final source/target score, accuracy, field bits per byte and the balanced score."""
    final = r.final
    return {"source": final.scores["source"], "target": final.scores["target"],
            "source_acc": final.accuracy["source"], "target_acc": final.accuracy["target"],
            "balanced": float(r.steps[-1].get("balanced_score", np.nan)) if r.steps else 0.0}
