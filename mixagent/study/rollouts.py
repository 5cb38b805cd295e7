"""Roll a :class:`~mixagent.policies.MixingPolicy` out in a :class:`~mixagent.env.MixingEnv`."""

from __future__ import annotations

import dataclasses
from collections.abc import Generator

from mixagent.domains import weights_to_action
from mixagent.env.environment import MixingEnv
from mixagent.env.evaluation import EvalResult
from mixagent.policies import MixingPolicy

__all__ = ["Rollout", "rollout", "iter_rollout"]


@dataclasses.dataclass
class Rollout:
    """One episode: the start evaluation and, per step, weights, reward, balanced score and evaluation."""

    start: EvalResult
    steps: list[dict]
    ret: float
    truncated: bool

    @property
    def final(self) -> EvalResult:
        """The last evaluation that happened (before a divergence, if the run was truncated)."""
        done = [s["eval"] for s in self.steps if "eval" in s]
        return EvalResult.from_json(done[-1]) if done else self.start

    @property
    def balanced(self) -> float:
        """The last balanced score reached."""
        done = [s["balanced_score"] for s in self.steps if "balanced_score" in s]
        return done[-1] if done else 0.0


def iter_rollout(env: MixingEnv, policy: MixingPolicy, seed: int) -> Generator[dict, None, Rollout]:
    """Run one episode, yielding each step's record; the generator returns the :class:`Rollout`.
    The policy's exact weights are trained on (``env.step_weights``); the action recorded beside them is
    their image under the inverse action map."""
    obs, info = env.reset(seed=seed)
    policy.reset(env.space)
    start = EvalResult.from_json(info["eval"])
    steps, ret, done, truncated = [], 0.0, False, False
    while not done:
        weights = policy.act(obs)
        action = weights_to_action(weights, env.spec_.action.temperature, env.spec_.action.floor)
        obs, reward, terminated, truncated, info = env.step_weights(weights)
        ret += reward
        steps.append({"action": action.tolist(), "reward": reward, **info})
        done = terminated or truncated
        yield steps[-1]
    return Rollout(start, steps, ret, truncated)


def rollout(env: MixingEnv, policy: MixingPolicy, seed: int, progress=None) -> Rollout:
    """Run one episode (see :func:`iter_rollout`); ``progress(info)`` is called after every step."""
    steps = iter_rollout(env, policy, seed)
    while True:
        try:
            info = next(steps)
        except StopIteration as done:
            return done.value
        if progress is not None:
            progress(info)

