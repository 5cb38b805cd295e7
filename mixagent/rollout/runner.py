"""The one runner: what a worker (in-process, a local process or a Ray actor; :mod:`mixagent.rollout.launchers`)
builds once and then runs tasks with, for every job that trains the proxy.

A worker builds one env from the spec (:class:`RunnerSetup`) and runs typed tasks until they run out:

=====================================  ================================================  =====================
task                                   what it runs                                      used by
=====================================  ================================================  =====================
:class:`PolicyEpisode`                 a policy (baseline, method, artifact) on a seed   compare, agent eval
:class:`FixedEpisode`                  a constant mixture on a seed (RegMix's probes)    compare
:class:`TargetOnlyRun`                 a target-only run of fewer steps (its own LR)     compare
:class:`CollectTree`                   a collection tree of behaviour policies           collect
:class:`ScheduleTree`                  audit rows on a seed through one prefix tree      audit
=====================================  ================================================  =====================

Events go back to the driver, the only writer: :class:`Segment` (progress: a trained segment, or a
schedule tree's finished row), :class:`Episode` (a finished
:class:`~mixagent.rollout.record.EpisodeRecord`), :class:`FamilyPoint`, and a collection tree's streamed
``Open`` / ``Step`` / ``Close`` / ``TreeDone`` (:mod:`mixagent.rollout.tree`), written line by line for crash
safety. The worker's identity (spec hash, base checkpoint, the proxy's data) comes back first in the
launcher's ``Ready`` event, so the driver refuses workers that built another env.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

from mixagent.config import from_dict
from mixagent.env.spec import EnvSpec
from mixagent.errors import ConfigError
from mixagent.policies.behaviour import BehaviourSpec
from mixagent.policies.registry import build_policy
from mixagent.rollout.episode import iter_rollout
from mixagent.rollout.identity import artifact_dir, is_named, policy_context
from mixagent.rollout.record import EpisodeRecord
from mixagent.rollout.schedules import Schedule
from mixagent.rollout.tree import CollectionTree, TreeConfig, TreeEvent, proxy_identity, schedule_tree

__all__ = ["RunnerSetup", "Runner", "Task", "PolicyEpisode", "FixedEpisode", "TargetOnlyRun", "CollectTree",
           "ScheduleTree", "Segment", "Episode", "FamilyPoint", "horizon_of"]


# --- tasks ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PolicyEpisode:
    """Roll policy ``policy`` (a baseline or method spec, or an artifact directory) out on ``seed``; the
    record is stored under ``key`` (:func:`mixagent.rollout.identity.policy_key`)."""

    key: str
    seed: int
    policy: str


@dataclasses.dataclass(frozen=True)
class FixedEpisode:
    """Roll the constant mixture ``weights`` (``K`` floats, the space's order) out on ``seed``."""

    key: str
    seed: int
    weights: tuple[float, ...]


@dataclasses.dataclass(frozen=True)
class TargetOnlyRun:
    """A target-only run of ``steps`` steps (its own LR schedule over the shorter run) on ``seed``: target
    data efficiency. Needs the spec (not an env factory)."""

    steps: int
    seed: int


@dataclasses.dataclass(frozen=True)
class CollectTree:
    """Collection tree ``tree``, skipping the trajectories in ``done`` (ids of finished ones)."""

    tree: int
    done: frozenset[str] = frozenset()


@dataclasses.dataclass(frozen=True)
class ScheduleTree:
    """Every schedule on ``seed`` through one prefix tree (audit rows; ``trial``: an oracle trial's number)."""

    seed: int
    schedules: tuple[Schedule, ...]
    trial: int | None = None


Task = PolicyEpisode | FixedEpisode | TargetOnlyRun | CollectTree | ScheduleTree


def horizon_of(task: Task, horizon: int) -> int:
    """Progress units of a task (:class:`Segment` and :class:`FamilyPoint` events): an episode's ``horizon``
    segments, a schedule tree's rows, one for the others."""
    if isinstance(task, PolicyEpisode | FixedEpisode):
        return horizon
    return len(task.schedules) if isinstance(task, ScheduleTree) else 1


# --- events --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Segment:
    """A worker trained one segment of the episode ``key``."""

    key: str
    seed: int


@dataclasses.dataclass(frozen=True)
class Episode:
    """A finished episode of ``key`` on ``seed``."""

    key: str
    seed: int
    record: EpisodeRecord


@dataclasses.dataclass(frozen=True)
class FamilyPoint:
    """A target-only run of ``steps`` steps: its final target-field bits per byte."""

    steps: int
    seed: int
    target_bpb: float


# --- the runner ----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RunnerSetup:
    """What a worker needs to build its runner (picklable for worker processes and Ray actors).

    Args:
        spec: the env spec as a dict (``to_dict(EnvSpec)``); ``optim.threads`` is set to ``threads``.
        threads: torch threads of the worker.
        env_factory: builds the env in-process instead (tests; the inline launcher only).
        context: the preparation runs' results, JSON (:func:`~mixagent.rollout.identity.policy_context`),
            for registered methods.
        reference: the reference extremes scores must use (an agent's training data's); an env that scores
            with other extremes is refused (:class:`ConfigError`).
        behaviours: collection's behaviour mix; tree: its tree shape; seed: its seed (data orders and
            behaviour draws).
    """

    spec: dict
    threads: int = 1
    env_factory: Callable[[], Any] | None = None
    context: dict = dataclasses.field(default_factory=dict)
    reference: dict | None = None
    behaviours: tuple[BehaviourSpec, ...] = ()
    tree: TreeConfig = TreeConfig()
    seed: int = 0

    def env_spec(self, **changes: object) -> EnvSpec:
        """The spec with the worker's threads (and ``changes``, e.g. ``steps``)."""
        spec = dict(self.spec, optim={**self.spec["optim"], "threads": self.threads}, **changes)
        return from_dict(EnvSpec, spec, "env spec")

    def make_runner(self) -> Runner:
        return Runner(self)


class Runner:
    """Runs tasks in one worker: one env, built once.

    ``identity``: ``spec_hash`` and ``base`` (the base checkpoint) of the env it built, and ``proxy``
    (:func:`~mixagent.rollout.tree.proxy_identity`: base, natural shares, reference extremes, observed LR).

    Raises:
        ConfigError: the env scores with other reference extremes than ``setup.reference``.
    """

    def __init__(self, setup: RunnerSetup) -> None:
        import torch

        from mixagent.env.environment import MixingEnv
        from mixagent.env.proxy import torch_threads

        torch.set_num_threads(torch_threads(setup.threads))
        self.setup = setup
        self.env = setup.env_factory() if setup.env_factory is not None else MixingEnv(setup.env_spec())
        spec = self.env.spec_
        self.identity = {"env": spec.env_id, "spec_hash": spec.spec_hash(),
                         "base": getattr(self.env.backend, "base_id", ""), "proxy": proxy_identity(self.env)}
        mine = self.env.reference.to_json() if self.env.reference is not None else None
        want = setup.reference
        if want is not None and mine is not None and (mine["best"], mine["worst"]) != (want["best"], want["worst"]):
            raise ConfigError("online evaluation", [
                f"the env's reference extremes {mine} differ from the ones the trajectories were scored with "
                f"{want}: agents and baselines would be scored on another scale. Restore the dataset's "
                f"checkpoints/references/{mine['spec_hash']}.json (or delete a stale "
                f"data/cache/references/{mine['spec_hash']}.json)"])
        self.context = policy_context(setup.context, self.env)
        self._collection: CollectionTree | None = None

    def run(self, task: Task) -> Iterator[Segment | Episode | FamilyPoint | TreeEvent]:
        """Run one task, yielding its events."""
        match task:
            case CollectTree(tree=tree, done=done):
                if self._collection is None:
                    s = self.setup
                    self._collection = CollectionTree(self.env, s.behaviours, s.tree, s.seed)
                yield from self._collection.run(tree, done)
            case ScheduleTree(seed=seed, schedules=schedules, trial=trial):
                for record in schedule_tree(self.env.backend, self.env.space, self.env.horizon, seed, schedules,
                                            trial):
                    yield Segment(record.key, seed)  # one progress unit per row
                    yield Episode(record.key, seed, record)
            case TargetOnlyRun(steps=steps, seed=seed):
                yield FamilyPoint(steps, seed, self._target_only(steps, seed))
            case PolicyEpisode(key=key, seed=seed) | FixedEpisode(key=key, seed=seed):
                steps = iter_rollout(self.env, self._policy(task), seed, key)
                while True:
                    try:
                        next(steps)
                    except StopIteration as done:
                        yield Episode(key, seed, done.value)
                        return
                    yield Segment(key, seed)
            case _:
                raise TypeError(f"unknown task {task!r}")

    def _policy(self, task: PolicyEpisode | FixedEpisode) -> Any:
        if isinstance(task, FixedEpisode):
            from mixagent.policies.baselines import FixedPolicy

            return FixedPolicy(dict(zip(self.env.space.names, task.weights)))
        path = None if is_named(task.policy) else artifact_dir(task.policy)
        if path is not None:
            from mixagent.policies.artifact import load_policy

            return load_policy(path)
        return build_policy(task.policy, self.context)

    def _target_only(self, steps: int, seed: int) -> float:
        from mixagent.domains import replay_weights
        from mixagent.env.backends import make_backend
        from mixagent.rollout.seeds import episode_seed_of

        if self.setup.env_factory is not None:
            raise ConfigError("compare", ["the target-only family needs the env spec, not an env factory"])
        backend = make_backend(self.setup.env_spec(steps=steps), self.env.space)
        backend.reset(episode_seed_of(seed))
        w = replay_weights(self.env.space, backend.natural, 0.0)
        for t in range(steps):
            backend.train(w, t)
        return float(backend.evaluate().field_bpb(self.env.space, "target"))
