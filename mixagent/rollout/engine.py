"""The episode engine: any mixing policy rolled out in one environment on given seeds, on the collection
launchers, every finished episode stored in the :class:`~mixagent.rollout.cache.EpisodeCache` under the
env's spec hash and the policy's identity (:mod:`mixagent.rollout.identity`).

The comparison (``mixagent compare``), the agent's online evaluation (``mixagent train-agent``) and so the
demo all run their episodes here, so an episode one of them ran is an episode the others reuse: same spec
hash, same policy identity, same file.

Workers build the one runner (:class:`~mixagent.rollout.runner.RunnerSetup`): the env once from the spec
(as a dict) or from a factory (tests), checked to score with the expected reference extremes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from tqdm import tqdm

from mixagent.errors import ConfigError
from mixagent.rollout.cache import EpisodeCache
from mixagent.rollout.identity import artifact_dir, is_named, policy_context, policy_key
from mixagent.rollout.launchers import LAUNCHERS, InlineLauncher, Launcher, Ready, cpu_count
from mixagent.rollout.runner import Episode, FamilyPoint, PolicyEpisode, RunnerSetup, Segment, Task, horizon_of

__all__ = ["launch", "roll_policies"]


def launch(setup: RunnerSetup, tasks: Sequence[Task], horizon: int, desc: str, spec_hash: str, *,
           launcher: str | Launcher = "local", workers: int = 0, progress: bool = True, base: str | None = None,
           unit: str = "segment", cap_workers: bool = True) -> Iterator[Any]:
    """Run ``tasks`` on ``launcher`` with one progress bar (over segments, see :func:`horizon_of`); yields every
    event but the launcher's ``Ready`` and the runners' :class:`Segment` (finished episodes, family points...).

    ``launcher`` is a name (``local``, ``inline``, ``ray``: built and closed here with ``workers`` processes,
    0 = one per core, at most one per task unless ``cap_workers`` is false and ``workers`` is given) or a
    launcher the caller owns, whose workers use ``setup.threads``.

    Raises:
        ConfigError: a worker built an env of another spec hash than ``spec_hash`` (or from another base
            checkpoint than ``base``, when given).
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
            n = max(1, min(workers or cores, len(tasks)) if cap_workers or not workers else workers)
            runner = LAUNCHERS[launcher](n)
            setup = dataclasses.replace(setup, threads=max(1, cores // n))
    else:
        runner = launcher  # type: ignore[assignment]
    total = sum(horizon_of(t, horizon) for t in tasks)
    try:
        with tqdm(total=total, desc=desc, unit=unit, disable=not progress) as bar:
            for event in runner.events(setup, list(tasks)):
                if isinstance(event, Ready):
                    theirs = (event.identity.get("spec_hash"), event.identity.get("base"))
                    if theirs[0] != spec_hash or (base is not None and theirs[1] != base):
                        raise ConfigError("episodes", [
                            f"a worker built an env of spec {theirs[0]} from base {theirs[1]}, the driver expects "
                            f"spec {spec_hash}" + (f" from base {base}" if base is not None else "") + ": the base "
                            "model, data or domain space differ; workers need the same data and base checkpoint"])
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


def roll_policies(env, policies: Mapping[str, str], seeds: list[int], cache: EpisodeCache, setup: RunnerSetup,
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
        tasks += [PolicyEpisode(keys[label], s, str(path) if path else spec) for s in seeds
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
