"""Branching collection: one *tree* of trajectories per root episode, sharing prefix compute.

A tree starts from a reset env and a behaviour drawn from the collect config's mix. At each step of
``branch_at`` every path forks into ``factor`` children: the proxy state is snapshotted, child 0 continues
with the parent's behaviour, children 1.. each draw a new behaviour and start from the restored snapshot.
Every leaf is stored as a full trajectory (its shared prefix copied in) with a pointer to the trajectory it
branched from. With ``branch_at = [2, 4, 6, 7]`` and ``factor = 2`` over T = 8 steps a tree trains 38
segments and logs 16 x 8 = 128 transitions, where independent rollouts would train 128.

The runner is a generator of small events the driver writes to the store (the only writer), so it runs the
same in-process, in a local worker process or in a Ray actor:

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
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from mixagent.domains import weights_to_action
from mixagent.env.environment import MixingEnv
from mixagent.env.observation import OBSERVATION_VERSION
from mixagent.env.spec import EnvSpec
from mixagent.paths import REPO_ROOT
from mixagent.policies import MixingPolicy
from mixagent.policies.behaviour import BehaviourMix, BehaviourSpec

__all__ = ["Open", "Step", "Close", "TreeDone", "TreeEvent", "TreeConfig", "WorkerSetup", "TreeRunner",
           "trajectory_id", "parent_of", "spec_identity", "proxy_identity"]


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


@dataclasses.dataclass(frozen=True)
class WorkerSetup:
    """Everything a worker needs to build its runner (picklable for worker processes and Ray actors).

    ``env_factory`` replaces the spec file for in-process runs (tests inject backends through it).
    """

    env: str
    env_overrides: tuple[str, ...]
    behaviours: tuple[BehaviourSpec, ...]
    tree: TreeConfig
    seed: int
    threads: int
    env_factory: Callable[[], MixingEnv] | None = None

    def make_env(self) -> MixingEnv:
        torch.set_num_threads(self.threads)
        if self.env_factory is not None:
            return self.env_factory()
        return MixingEnv(REPO_ROOT / self.env, overrides=[*self.env_overrides, f"optim.threads={self.threads}"])

    def make_runner(self) -> TreeRunner:
        return TreeRunner(self)


class TreeRunner:
    """Runs collection trees in one worker (one env, built once).

    Args:
        setup: the worker's setup.
    """

    def __init__(self, setup: WorkerSetup) -> None:
        self.setup = setup
        self.env = setup.make_env()
        self.mix = BehaviourMix(setup.behaviours)
        self.horizon = self.env.horizon
        self.shape = setup.tree
        self.identity = proxy_identity(self.env)

    def _behaviour(self, tree: int, path: tuple[int, ...]) -> tuple[MixingPolicy, dict]:
        seq = np.random.SeedSequence([self.setup.seed, tree, len(path), *path])
        return self.mix.sample(self.env.space, self.env.natural.values, self.horizon, seq)

    def run(self, tree: int, done: frozenset[str] = frozenset()) -> Iterator[TreeEvent]:
        """Collect tree ``tree``, skipping the leaves in ``done`` (ids of finished trajectories)."""
        leaves = [trajectory_id(tree, p) for p in self.shape.leaf_paths()]
        if all(leaf in done for leaf in leaves):
            yield TreeDone(tree, 0)
            return
        self.tree, self.done, self.segments = tree, done, 0
        episode_seed = int(np.random.SeedSequence([self.setup.seed, tree]).generate_state(1)[0] >> 1)
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
        snap, fresh = env.snapshot(), True
        for c in range(shape.factor):
            child = path + (c,)
            tail = (0,) * (len(shape.branch_at) - depth - 1)
            under = [trajectory_id(self.tree, child + rest) for rest in
                     itertools.product(range(shape.factor), repeat=len(tail))]
            if all(tid in self.done for tid in under):
                continue
            obs = obs if fresh else env.restore(snap)
            fresh = False
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
