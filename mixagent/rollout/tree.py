"""The prefix-tree forker: episodes that share a prefix share its training. One :func:`fork` serves both
trees mixagent walks:

* **collection trees** (:class:`CollectionTree`, ``mixagent collect``): behaviour policies fork at fixed
  steps;
* **schedule trees** (:func:`schedule_tree`, the headroom audit): every row on a seed whose per-step
  mixtures agree up to step ``t`` trains those steps once.

Branching collection: one *tree* of trajectories per root episode, sharing prefix compute.

A tree starts from a reset env and a behaviour drawn from the collect config's mix. At each step of
``branch_at`` every path forks into ``factor`` children: the proxy state is snapshotted, child 0 continues
with the parent's behaviour, children 1.. each draw a new behaviour and start from the restored snapshot.
Every leaf is stored as a full trajectory (its shared prefix copied in) with a pointer to the trajectory it
branched from. With ``branch_at = [2, 4, 6, 7]`` and ``factor = 2`` over T = 8 steps a tree trains 38
segments and logs 16 x 8 = 128 transitions, where independent rollouts would train 128.

A collection tree is a generator of small events the driver writes to the store (the only writer), so it
runs the same in-process, in a local worker process or in a Ray actor (through
:class:`mixagent.rollout.runner.Runner`):

=======================================  =======================================================
``Ready(identity)`` (the launcher's)     the worker built its env (``identity``: :func:`proxy_identity`)
``Open(id, header, prefix)``             a trajectory starts; ``prefix`` = its shared step records
``Step(id | None, line)``                one trained segment (``None``: recomputing a finished prefix)
``Close(id, end)``                       the trajectory is finished (or truncated) with this end record
``TreeDone(tree, segments)``             every leaf of the tree is finished
=======================================  =======================================================
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import numpy as np

from mixagent.domains import DomainSpace, weights_to_action
from mixagent.env.environment import MixingEnv
from mixagent.env.observation import OBSERVATION_VERSION
from mixagent.env.spec import EnvSpec
from mixagent.errors import ConfigError
from mixagent.policies import MixingPolicy
from mixagent.policies.behaviour import BehaviourMix, BehaviourSpec
from mixagent.rollout.record import EpisodeRecord
from mixagent.rollout.schedules import Schedule
from mixagent.rollout.seeds import episode_seed_of

__all__ = ["fork", "Open", "Step", "Close", "TreeDone", "TreeEvent", "TreeConfig", "CollectionTree", "schedule_tree",
           "item_values", "trajectory_id", "parent_of", "spec_identity", "proxy_identity"]

C, S, R = TypeVar("C"), TypeVar("S"), TypeVar("R")


@dataclasses.dataclass(frozen=True)
class Open:
    """Start trajectory ``id``: its header line and the prefix lines it shares with its parent."""

    id: str
    header: dict
    prefix: list[dict]


@dataclasses.dataclass(frozen=True)
class Step:
    """One collected segment; ``id`` is ``None`` while exploring a prefix whose trajectories are done."""

    id: str | None
    line: dict


@dataclasses.dataclass(frozen=True)
class Close:
    """Trajectory ``id`` ended; ``end`` is its end line."""

    id: str
    end: dict


@dataclasses.dataclass(frozen=True)
class TreeDone:
    """Tree ``tree`` finished after ``segments`` trained segments (0 when it was done before)."""

    tree: int
    segments: int


TreeEvent = Open | Step | Close | TreeDone


@dataclasses.dataclass(frozen=True)
class TreeConfig:
    """The shape of every collection tree.

    Args:
        branch_at: steps (each in ``1..T-1``, increasing) at which every path forks; empty = independent
            rollouts.
        factor: children per fork (child 0 keeps the parent's behaviour).
    """

    branch_at: tuple[int, ...] = ()
    factor: int = 2

    def check(self) -> list[str]:
        problems = [] if self.factor >= 1 else [f"factor must be >= 1, got {self.factor}"]
        b = list(self.branch_at)
        if any(x < 1 for x in b) or b != sorted(set(b)):
            problems.append(f"branch_at must be increasing steps >= 1 (forks happen before a step), got {b}")
        return problems

    def check_horizon(self, horizon: int) -> list[str]:
        late = [b for b in self.branch_at if b >= horizon]
        return [f"tree.branch_at {late} must be < the env's steps T={horizon} (a fork needs a step after it)"] \
            if late else []

    @property
    def leaves(self) -> int:
        return self.factor ** len(self.branch_at)

    def leaf_paths(self) -> list[tuple[int, ...]]:
        return list(itertools.product(range(self.factor), repeat=len(self.branch_at)))

    def segments(self, horizon: int) -> int:
        """Segments one tree trains (no divergence)."""
        bounds = [0, *self.branch_at, horizon]
        return sum(self.factor ** i * (bounds[i + 1] - bounds[i]) for i in range(len(bounds) - 1))


def trajectory_id(tree: int, leaf: tuple[int, ...]) -> str:
    return f"t{tree:05d}" + "".join(f"_{c}" for c in leaf)


def parent_of(tree: int, leaf: tuple[int, ...], branch_at: tuple[int, ...]) -> tuple[str | None, int]:
    """The trajectory a leaf branched from and the step where it diverges (``(None, 0)`` for the root)."""
    nonzero = [i for i, c in enumerate(leaf) if c]
    if not nonzero:
        return None, 0
    j = nonzero[-1]
    return trajectory_id(tree, leaf[:j] + (0,) * (len(leaf) - j)), branch_at[j]


def spec_identity(spec: EnvSpec) -> dict[str, Any]:
    """What identifies the MDP a run is collected in, from its spec alone (meta.json ``env``)."""
    return {"id": spec.env_id, "spec": spec.mdp_dict(), "spec_hash": spec.spec_hash(), "horizon": spec.steps,
            "observation_version": OBSERVATION_VERSION}


def proxy_identity(env: MixingEnv) -> dict[str, Any]:
    """What a worker's built env adds: the base checkpoint and the data's natural shares (meta.json
    ``proxy``; every worker must agree, and a resumed run must match). Specs with a normalised reward add
    the ``reference`` extremes, and ``observe_lr`` specs the ``observed_lr`` of each segment, so a dataset
    recomputes rewards and observations without reference runs or a model."""
    identity: dict[str, Any] = {"base_model": getattr(env.backend, "base_id", None),
                                "natural": env.natural.values.tolist()}
    if env.reference is not None:
        identity["reference"] = env.reference.to_json()
    if (lrs := env.lr_schedule()) is not None:
        identity["observed_lr"] = lrs
    return identity


def fork(children: Sequence[C], save: Callable[[], S], restore: Callable[[S], R]) -> Iterator[tuple[C, R | None]]:
    """Visit ``children`` from one state: yield each with ``None`` for the first (it continues from the current
    state) and ``restore(saved)`` for every later one. The state is saved once, before the first child runs,
    and only when more than one child runs. The caller runs each child's subtree before asking for the next.
    """
    saved = save() if len(children) > 1 else None
    for n, child in enumerate(children):
        yield child, (restore(saved) if n else None)  # type: ignore[arg-type]


class CollectionTree:
    """Collection trees in one env (built once by the worker's runner).

    Args:
        env: the worker's env.
        behaviours: the collect config's behaviour mix.
        shape: the tree shape.
        seed: the collect config's seed (every episode's data order and every behaviour draw).
    """

    def __init__(self, env: MixingEnv, behaviours: tuple[BehaviourSpec, ...], shape: TreeConfig, seed: int) -> None:
        self.env, self.mix, self.shape, self.seed = env, BehaviourMix(behaviours), shape, seed
        self.horizon = env.horizon

    def _behaviour(self, tree: int, path: tuple[int, ...]) -> tuple[MixingPolicy, dict]:
        seq = np.random.SeedSequence([self.seed, tree, len(path), *path])
        return self.mix.sample(self.env.space, self.env.natural.values, self.horizon, seq)

    def run(self, tree: int, done: frozenset[str] = frozenset()) -> Iterator[TreeEvent]:
        """Collect tree ``tree``, skipping the leaves in ``done`` (ids of finished trajectories)."""
        leaves = [trajectory_id(tree, p) for p in self.shape.leaf_paths()]
        if all(leaf in done for leaf in leaves):
            yield TreeDone(tree, 0)
            return
        self.tree, self.done, self.segments = tree, done, 0
        episode_seed = int(np.random.SeedSequence([self.seed, tree]).generate_state(1)[0] >> 1)
        obs, info = self.env.reset(seed=episode_seed)
        self.header_base = {"tree": tree, "episode_seed": episode_seed, "start": info["eval"],
                            "start_weights": self.env.initial_weights().values.tolist()}
        policy, record = self._behaviour(tree, ())
        behaviours = [{"from_step": 0, **record}]
        root = (0,) * len(self.shape.branch_at)
        writing = self._maybe_open(root)
        if writing is not None:
            yield Open(writing, self._header(root, behaviours), [])
        yield from self._explore(0, (), policy, behaviours, [], obs, writing)
        yield TreeDone(tree, self.segments)

    def _maybe_open(self, leaf: tuple[int, ...]) -> str | None:
        tid = trajectory_id(self.tree, leaf)
        return None if tid in self.done else tid

    def _header(self, leaf: tuple[int, ...], behaviours: list[dict]) -> dict:
        parent, branch_step = parent_of(self.tree, leaf, self.shape.branch_at)
        return {"id": trajectory_id(self.tree, leaf), "leaf": list(leaf), "parent": parent,
                "branch_step": branch_step, **self.header_base, "behaviour": behaviours}

    def _explore(self, depth: int, path: tuple[int, ...], policy: MixingPolicy, behaviours: list[dict],
                 lines: list[dict], obs: np.ndarray, writing: str | None) -> Iterator[TreeEvent]:
        env, shape = self.env, self.shape
        end = shape.branch_at[depth] if depth < len(shape.branch_at) else self.horizon
        while len(lines) < end:  # the flat collection loop: act, train a segment, log the raw outcome
            weights = policy.act(obs)
            obs, reward, terminated, truncated, info = env.step_weights(weights)
            self.segments += 1
            lines.append(self._record(len(lines), weights, reward, terminated, truncated, info, len(behaviours) - 1,
                                      lines[-1]["tokens_seen"] if lines else 0))
            yield Step(writing, lines[-1])
            if truncated:
                if writing is not None:
                    yield Close(writing, self._end(lines))
                return  # a diverged proxy has no children
        if depth == len(shape.branch_at):
            if writing is not None:
                yield Close(writing, self._end(lines))
            return
        tail = (0,) * (len(shape.branch_at) - depth - 1)
        todo = [c for c in range(shape.factor) if not all(  # children with a trajectory still to collect
            trajectory_id(self.tree, path + (c,) + rest) in self.done
            for rest in itertools.product(range(shape.factor), repeat=len(tail)))]
        parent_obs = obs
        for c, restored in fork(todo, env.snapshot, env.restore):
            child = path + (c,)
            obs = parent_obs if restored is None else restored
            if c == 0:
                yield from self._explore(depth + 1, child, policy, behaviours, list(lines), obs, writing)
                continue
            child_policy, record = self._behaviour(self.tree, child)
            child_behaviours = [*behaviours, {"from_step": end, **record}]
            child_writing = self._maybe_open(child + tail)
            if child_writing is not None:
                yield Open(child_writing, self._header(child + tail, child_behaviours), list(lines))
            yield from self._explore(depth + 1, child, child_policy, child_behaviours, list(lines), obs, child_writing)

    def _record(self, t: int, weights, reward: float, terminated: bool, truncated: bool, info: dict,
                behaviour: int, tokens_before: int) -> dict:
        action = weights_to_action(weights, self.env.spec_.action.temperature, self.env.spec_.action.floor)
        loss = info["train_loss"]
        return {"kind": "step", "t": t, "behaviour": behaviour, "action": action.tolist(),
                "weights": weights.values.tolist(), "reward": float(reward),
                "balanced_score": info.get("balanced_score"), "eval": info.get("eval"),
                "terminated": bool(terminated), "truncated": bool(truncated),
                "nonfinite_loss": bool(info["nonfinite_loss"]),
                "train_loss": float(loss) if loss is not None and math.isfinite(loss) else None,
                "tokens_seen": tokens_before + int(info["segment_tokens"]),
                "wall": {"train_s": round(self.env.timings["train_seconds"], 4),
                         "eval_s": round(self.env.timings["eval_seconds"], 4)}}

    @staticmethod
    def _end(lines: list[dict]) -> dict:
        truncated = bool(lines[-1]["truncated"])
        scores = [ln["balanced_score"] for ln in lines if ln["balanced_score"] is not None]
        return {"return": float(sum(ln["reward"] for ln in lines)), "final_balanced": scores[-1] if scores else 0.0,
                "truncated": truncated,
                "flagged": "nonfinite" if any(ln["nonfinite_loss"] for ln in lines) else None}


def schedule_tree(backend: Any, space: DomainSpace, horizon: int, seed: int, schedules: Sequence[Schedule],
                  trial: int | None = None) -> Iterator[EpisodeRecord]:
    """Train every schedule on ``seed`` through one prefix tree (rows whose mixtures agree up to a step train
    it once); yield one record per schedule, evaluated once at its end (the headroom audit's rows).

    Each record's ``key`` is the schedule's, ``steps`` hold its ``(K,)`` mixtures (no per-step evaluation),
    ``extra`` the evaluator's per-item values (``items``), the wall time since the tree started
    (``seconds``) and the oracle ``trial`` (``None`` for a grid row).

    Raises:
        ConfigError: a row diverged (NaN/Inf loss).
    """
    backend.reset(episode_seed_of(seed))
    natural = backend.natural
    steps = [[np.round(s.weights(space, natural, t), 10) for t in range(horizon)] for s in schedules]
    yield from _walk(backend, seed, schedules, steps, list(range(len(schedules))), 0, horizon, time.perf_counter(),
                     trial)


def _walk(backend: Any, seed: int, schedules: Sequence[Schedule], steps: list[list[np.ndarray]], members: list[int],
          t: int, horizon: int, t0: float, trial: int | None) -> Iterator[EpisodeRecord]:
    if t == horizon:
        now = backend.evaluate().to_json()
        items = item_values(backend)
        for i in members:
            yield EpisodeRecord(schedules[i].key, seed, None, tuple({"weights": w.tolist()} for w in steps[i]), now,
                                None, False, {"items": items, "seconds": time.perf_counter() - t0, "trial": trial})
        return
    groups: dict[bytes, list[int]] = {}
    for i in members:
        groups.setdefault(steps[i][t].tobytes(), []).append(i)
    for group, _ in fork(list(groups.values()), backend.state, backend.load_state):
        stats = backend.train(steps[group[0]][t], t)
        if stats.nonfinite:
            raise ConfigError("audit", [f"row {schedules[group[0]].label!r} diverged (NaN/Inf loss) at step {t} "
                                        f"on seed {seed}; lower optim.lr in the spec"])
        yield from _walk(backend, seed, schedules, steps, group, t + 1, horizon, t0, trial)


def item_values(backend: Any) -> dict:
    """The evaluator's per-item values of its last call, rounded, as JSON (empty for backends without one)."""
    last = getattr(getattr(backend, "evaluator", None), "last_items", {})
    return {k: [np.round(np.asarray(v, dtype=np.float64), 6).tolist() for v in vals] for k, vals in last.items()}
