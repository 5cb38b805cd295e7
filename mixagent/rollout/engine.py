"""The episode engine: any mixing policy rolled out in one environment on given seeds, on the collection
launchers, every finished episode stored in the :class:`~mixagent.rollout.cache.EpisodeCache` under the
env's spec hash and the policy's identity (:mod:`mixagent.rollout.identity`).

The comparison (``mixagent compare``), the agent's online evaluation (``mixagent train-agent``) and so the
demo all run their episodes here, so an episode one of them ran is an episode the others reuse: same spec
hash, same policy identity, same file.

Workers (:class:`EpisodeSetup`) each build the env once from the spec (as a dict) or from a factory (tests),
check it scores with the expected reference extremes, then run tasks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping

from tqdm import tqdm

from mixagent.config import from_dict
from mixagent.env.spec import EnvSpec
from mixagent.errors import ConfigError
from mixagent.policies.registry import build_policy
from mixagent.rollout.cache import EpisodeCache
from mixagent.rollout.episode import episode_record
from mixagent.rollout.identity import artifact_dir, is_named, policy_context, policy_key
from mixagent.rollout.launchers import LAUNCHERS, InlineLauncher, Launcher, Ready, cpu_count

__all__ = ["EpisodeSetup", "EpisodeRunner", "Segment", "Episode", "FamilyPoint", "launch", "roll_policies"]


@dataclasses.dataclass(frozen=True)
class Segment:
    """A worker trained one segment of the episode ``key``."""

    key: str
    seed: int


@dataclasses.dataclass(frozen=True)
class Episode:
    """A finished episode: ``record`` as stored (the :func:`~mixagent.study.tables.summarize` row plus the
    per-step evaluations, balanced scores and target tokens)."""

    key: str
    seed: int
    record: dict


@dataclasses.dataclass(frozen=True)
class FamilyPoint:
    """A target-only run of ``steps`` steps (its own LR schedule over the shorter run): its final
    target-field bits per byte."""

    steps: int
    seed: int
    target_bpb: float


@dataclasses.dataclass(frozen=True)
class EpisodeSetup:
    """What an episode worker needs (picklable).

    Args:
        spec: the env spec as a dict (``to_dict(EnvSpec)``); ``optim.threads`` is set to ``threads``.
        threads: torch threads of the worker.
        context: the preparation runs' results, JSON (:func:`policy_context`).
        env_factory: builds the env in-process instead (tests; the inline launcher only).
        reference: the reference extremes scores must use (the agent's training data's); an env that
            scores with other extremes is refused (:class:`ConfigError`).
    """

    spec: dict
    threads: int
    context: dict = dataclasses.field(default_factory=dict)
    env_factory: Callable | None = None
    reference: dict | None = None

    def make_runner(self) -> EpisodeRunner:
        return EpisodeRunner(self)


class EpisodeRunner:
    """Runs episode tasks in one worker (one env, built once). Tasks: ``("episode", key, seed, policy spec)``,
    ``("fixed", key, seed, weights)`` and ``("family", key, seed, steps)`` (a target-only run of ``steps``
    steps, for target data efficiency)."""

    def __init__(self, setup: EpisodeSetup) -> None:
        import torch

        from mixagent.env.environment import MixingEnv

        torch.set_num_threads(setup.threads)
        self.setup = setup
        self.env = setup.env_factory() if setup.env_factory is not None else MixingEnv(self._spec())
        self.identity = {"spec_hash": self.env.spec_.spec_hash(), "base": getattr(self.env.backend, "base_id", "")}
        mine = self.env.reference.to_json() if self.env.reference is not None else None
        want = setup.reference
        if want is not None and mine is not None and (mine["best"], mine["worst"]) != (want["best"], want["worst"]):
            raise ConfigError("online evaluation", [
                f"the env's reference extremes {mine} differ from the ones the trajectories were scored with "
                f"{want}: agents and baselines would be scored on another scale. Restore the dataset's "
                f"checkpoints/references/{mine['spec_hash']}.json (or delete a stale "
                f"data/cache/references/{mine['spec_hash']}.json)"])
        self.context = policy_context(setup.context, self.env)

    def _spec(self, **changes: object) -> EnvSpec:
        spec = dict(self.setup.spec, optim={**self.setup.spec["optim"], "threads": self.setup.threads}, **changes)
        return from_dict(EnvSpec, spec, "env spec")

    def run(self, kind: str, key: str, seed: int, arg: object = None) -> Iterator[Segment | Episode | FamilyPoint]:
        if kind == "family":
            yield FamilyPoint(int(arg), seed, self._target_only(int(arg), seed))  # type: ignore[arg-type]
            return
        from mixagent.rollout.episode import iter_rollout

        policy = self._policy(kind, str(arg) if kind == "episode" else arg)
        steps = iter_rollout(self.env, policy, seed)
        while True:
            try:
                next(steps)
            except StopIteration as done:
                yield Episode(key, seed, episode_record(done.value, self.env.space, seed))
                return
            yield Segment(key, seed)

    def _policy(self, kind: str, arg: object):
        from mixagent.policies.baselines import FixedPolicy

        if kind == "fixed":
            return FixedPolicy(dict(zip(self.env.space.names, arg)))  # type: ignore[call-overload]
        path = None if is_named(str(arg)) else artifact_dir(str(arg))
        if path is not None:
            from mixagent.policies.artifact import load_policy

            return load_policy(path)
        return build_policy(str(arg), self.context)

    def _target_only(self, steps: int, seed: int) -> float:
        from mixagent.domains import replay_weights
        from mixagent.env.backends import make_backend
        from mixagent.rollout.seeds import episode_seed_of

        if self.setup.env_factory is not None:
            raise ConfigError("compare", ["the target-only family needs the env spec, not an env factory"])
        backend = make_backend(self._spec(steps=steps), self.env.space)
        backend.reset(episode_seed_of(seed))
        w = replay_weights(self.env.space, backend.natural, 0.0)
        for t in range(steps):
            backend.train(w, t)
        return float(backend.evaluate().field_bpb(self.env.space, "target"))


def launch(setup: EpisodeSetup, tasks: list[tuple], horizon: int, desc: str, spec_hash: str, *,
           launcher: str | Launcher = "local", workers: int = 0, progress: bool = True
           ) -> Iterator[Episode | FamilyPoint]:
    """Run ``tasks`` on ``launcher`` (a name: ``local``, ``inline``, ``ray``, built and closed here with
    ``workers`` processes, 0 = one per core; or a launcher the caller owns, whose workers use
    ``setup.threads``), with one progress bar over their segments; yields finished episodes and family points.

    Raises:
        ConfigError: a worker built an env of another spec hash than ``spec_hash``.
    """
    if not tasks:
        return
    own = isinstance(launcher, str)
    if own:
        cores = cpu_count()
        if launcher == "inline" or setup.env_factory is not None:
            runner: Launcher = InlineLauncher()
            setup = dataclasses.replace(setup, threads=cores)
        else:
            n = max(1, min(workers or cores, len(tasks)))  # at most one worker per task
            runner = LAUNCHERS[launcher](n)
            setup = dataclasses.replace(setup, threads=max(1, cores // n))
    else:
        runner = launcher  # type: ignore[assignment]
    total = sum(horizon if t[0] != "family" else 1 for t in tasks)
    try:
        with tqdm(total=total, desc=desc, unit="segment", disable=not progress) as bar:
            for event in runner.events(setup, tasks):
                if isinstance(event, Ready):
                    if event.identity.get("spec_hash") != spec_hash:
                        raise ConfigError("episodes", [
                            f"a worker built an env of spec {event.identity.get('spec_hash')}, the driver expects "
                            f"{spec_hash}: the base model, data or domain space differ; workers need the same "
                            f"data and base checkpoint"])
                elif isinstance(event, Segment):
                    bar.update()
                    bar.set_postfix_str(f"{event.key[:24]} seed {event.seed}")
                else:
                    if isinstance(event, FamilyPoint):
                        bar.update()
                    yield event
    finally:
        if own:
            runner.close()


def roll_policies(env, policies: Mapping[str, str], seeds: list[int], cache: EpisodeCache, setup: EpisodeSetup,
                  *, desc: str = "episodes", launcher: str | Launcher = "local", workers: int = 0,
                  progress: bool = True) -> dict[str, list[dict]]:
    """Roll every policy out on every seed; returns ``{label: [episode record per seed]}``.

    Args:
        env: the driver's env of the spec (natural shares and the batches per segment key the methods).
        policies: ``{label: policy spec}`` (a baseline, a registered method, an artifact directory).
        seeds: episode seeds.
        cache: where episodes are stored; stored ones are not rerun.
        setup: the workers' setup (spec, preparation context, reference extremes).

    Raises:
        ConfigError: what a method needs missing from the context, a worker that built another spec,
            episodes still missing after the run (callers validate policy specs first: an unknown one fails
            in the worker).
    """
    ctx = policy_context(setup.context, env)
    keys = {label: policy_key(spec, ctx) for label, spec in policies.items()}
    tasks = []
    for label, spec in policies.items():
        path = None if is_named(spec) else artifact_dir(spec)
        tasks += [("episode", keys[label], s, str(path) if path else spec) for s in seeds
                  if cache.summary(keys[label], s) is None]
    for ev in launch(setup, list(dict.fromkeys(tasks)), env.horizon, desc, env.spec_.spec_hash(),
                     launcher=launcher, workers=workers, progress=progress):
        if isinstance(ev, Episode):
            cache.put(ev.record)
    out = {label: [cache.summary(keys[label], s) for s in seeds] for label in policies}
    missing = [f"{label} seed {s}" for label, eps in out.items() for s, e in zip(seeds, eps) if e is None]
    if missing:
        raise ConfigError("episodes", [f"episodes missing after the run: {', '.join(missing)}; rerun to resume"])
    return out  # type: ignore[return-value]
