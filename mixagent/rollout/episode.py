"""The episode: a :class:`~mixagent.policies.MixingPolicy` rolled out in a :class:`~mixagent.env.MixingEnv`
as an :class:`~mixagent.rollout.record.EpisodeRecord`, and its summaries (:func:`summarize`: a table row;
:func:`episode_record`: the episode cache's stored form)."""

from __future__ import annotations

from collections.abc import Generator

import numpy as np

from mixagent.domains import DomainSpace, weights_to_action
from mixagent.env.environment import MixingEnv
from mixagent.policies import MixingPolicy
from mixagent.policies.protocol import ProbingPolicy
from mixagent.rollout.record import EpisodeRecord

__all__ = ["rollout", "iter_rollout", "summarize", "episode_record", "policy_report", "EPISODE_VERSION"]

EPISODE_VERSION = 1


def iter_rollout(env: MixingEnv, policy: MixingPolicy, seed: int, key: str = ""
                 ) -> Generator[dict, None, EpisodeRecord]:
    """Run one episode, yielding each step's record; the generator returns the :class:`EpisodeRecord`
    (``key``: what is rolled out, e.g. the policy's cache key). The policy's exact weights are trained on
    (``env.step_weights``); the action recorded beside them is their image under the inverse action map.
    Each step keeps the env's ``info`` (``train_loss``, timings...) beside ``weights`` (``K`` floats),
    ``eval``, ``reward`` and ``balanced_score``; a segment that diverged has no evaluation (``None``).

    A :class:`~mixagent.policies.protocol.ProbingPolicy` gets its probes trained before each decision
    (``env.probe``, out of that step's tokens), recorded in the step as ``probe_batches``. What the policy
    reports of itself at the end (``diagnostics()``, and ``fallbacks``: decisions where it kept its last
    weights because it could not decide) goes to the record's ``extra["policy"]``."""
    obs, info = env.reset(seed=seed)
    policy.reset(env.space)
    start = info["eval"]
    probing = isinstance(policy, ProbingPolicy)
    steps, ret, done, truncated = [], 0.0, False, False
    while not done:
        probed = 0
        if probing:
            plan = policy.probe_plan(obs)  # type: ignore[union-attr]
            if plan is not None:
                policy.observe_probes(env.probe(plan.mixtures, plan.batches, plan.windows))  # type: ignore[union-attr]
                probed = len(plan.mixtures) * plan.batches
        weights = policy.act(obs)
        action = weights_to_action(weights, env.spec_.action.temperature, env.spec_.action.floor)
        obs, reward, terminated, truncated, info = env.step_weights(weights)
        ret += reward
        steps.append({"action": action.tolist(), "reward": reward, "eval": None, "balanced_score": None, **info,
                      "weights": list(info["weights"].values())} | ({"probe_batches": probed} if probing else {}))
        done = terminated or truncated
        yield steps[-1]
    evaluated = [s["eval"] for s in steps if s["eval"] is not None]
    return EpisodeRecord(key, seed, start, tuple(steps), evaluated[-1] if evaluated else start, ret, truncated,
                         {"policy": policy_report(policy)})


def policy_report(policy: MixingPolicy) -> dict:
    """What a policy says of its run: ``fallbacks`` (decisions it could not make and kept its last weights
    for; 0 for a policy that never falls back) and its ``diagnostics()`` where it has them."""
    out: dict = {"fallbacks": int(getattr(policy, "fallbacks", 0))}
    diagnostics = getattr(policy, "diagnostics", None)
    if callable(diagnostics):
        out.update(diagnostics())
    return out


def rollout(env: MixingEnv, policy: MixingPolicy, seed: int, progress=None, key: str = "") -> EpisodeRecord:
    """Run one episode (see :func:`iter_rollout`); ``progress(info)`` is called after every step."""
    steps = iter_rollout(env, policy, seed, key)
    while True:
        try:
            info = next(steps)
        except StopIteration as done:
            return done.value
        if progress is not None:
            progress(info)


def summarize(r: EpisodeRecord, space: DomainSpace, seed: int | None = None) -> dict:
    """One episode as plain JSON: final scores and bits per byte per field, balanced score, return,
    whether it diverged, the start evaluation and the mixture of every step (``seed``: the record's)."""
    final = r.final_eval
    start = r.start_eval
    return {"seed": r.seed if seed is None else seed, "source_score": final.scores["source"],
            "target_score": final.scores["target"], "source_bpb": final.field_bpb(space, "source"),
            "target_bpb": final.field_bpb(space, "target"), "balanced": r.balanced, "return": r.ret,
            "truncated": r.truncated, "start": start.to_json() if start is not None else None,
            "final": final.to_json(), "weights": [[round(w, 6) for w in s["weights"]] for s in r.steps]}


def episode_record(r: EpisodeRecord, space: DomainSpace, seed: int | None = None) -> dict:
    """The episode cache's stored form of an episode (version :data:`EPISODE_VERSION`): the
    :func:`summarize` row plus the per-step evaluations, balanced scores and the target-field share summed
    over evaluated steps."""
    out = summarize(r, space, seed)
    out["version"] = EPISODE_VERSION
    out["evals"] = [s["eval"] for s in r.steps if s.get("eval") is not None]
    out["scores"] = [s["balanced_score"] for s in r.steps if s.get("balanced_score") is not None]
    target = space.field_mask("target")
    out["target_tokens"] = float(sum(np.asarray(s["weights"])[target].sum()  # trained and evaluated
                                     for s in r.steps if s.get("eval") is not None))
    if "policy" in r.extra:  # what the policy said of its run (fallbacks, diagnostics); absent in older records
        out["policy"] = r.extra["policy"]
    return out
