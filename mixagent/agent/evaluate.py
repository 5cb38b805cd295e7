"""Online evaluation: learned policies and baselines rolled out in the real env on held-out seeds.

The episodes run on the comparison's engine (:mod:`mixagent.rollout.engine`): the collection launchers
(``local`` worker processes or ``inline``), every finished episode one JSON file in the episode cache keyed
by the env's spec hash and the policy's identity (a baseline's spec, a method's fingerprint, an agent
artifact's content). An interrupted evaluation resumes where it stopped, and the episodes
``mixagent compare`` ran on the same spec and seeds (the committed ``audits/compare``
among them) are reused, not rerun.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from mixagent.env.environment import MixingEnv
from mixagent.errors import ConfigError
from mixagent.policies import baseline_problems, parse_baseline
from mixagent.rollout.cache import EpisodeCache, start_eval
from mixagent.rollout.engine import roll_policies
from mixagent.rollout.runner import RunnerSetup

log = logging.getLogger(__name__)

__all__ = ["evaluate_online", "baseline_label", "check_held_out"]


def baseline_label(name: str) -> str:
    """The table label of baseline spec ``name`` (``replay:0.5`` -> ``replay rho=0.5``)."""
    from mixagent.policies.registry import is_method

    if is_method(name):
        return name
    spec = parse_baseline(name)
    if spec is None:
        raise ConfigError("baselines", baseline_problems(name))
    return spec.label


def check_held_out(seeds: list[int], used: set[int]) -> None:
    """Refuse evaluation seeds that collection used as episode seeds."""
    clash = sorted(set(seeds) & used)
    if clash:
        raise ConfigError("eval.seeds", [f"seeds {clash} were used as episode seeds in collection; evaluate on "
                                         f"held-out seeds (e.g. {max(used | set(seeds)) + 1})"])


def evaluate_online(spec: dict, spec_hash: str, policies: Mapping[str, str], seeds: list[int], cache: Path,
                    launcher: str = "local", workers: int = 0, env_factory: Callable[[], MixingEnv] | None = None,
                    progress: bool = True, reference: dict | None = None,
                    read_also: tuple[Path, ...] = (), report_dir: Path | None = None) -> dict[str, list[dict]]:
    """Roll every policy out on every seed; returns ``{label: [episode record per seed]}`` (the
    :func:`~mixagent.rollout.episode.summarize` row plus per-step evaluations).

    Args:
        spec: the env spec as recorded by the trajectory runs (a dict), with any evaluation overrides.
        spec_hash: the hash the env built from ``spec`` must have.
        policies: ``{label: spec}``: a policy artifact directory, a baseline or a method needing no
            preparation runs (``mixagent.policies.registry``).
        cache: the episode cache's root; ``read_also``: roots reused read only (the committed comparison).
        env_factory: builds the env in this process instead of ``spec`` (tests; forces the inline launcher).
        reference: the extremes the training data was scored with; an env that scores with others is
            refused.
        report_dir: where to write the comparison's report of these episodes (``table.md``, ``report.md``,
            the mixture, dynamics and front plots, the audit's oracles when an audit covers the seeds).

    Raises:
        ConfigError: the env built from ``spec`` has another hash (the base model, data or space changed
            since collection), scores with other reference extremes, or a policy the registry refuses.
    """
    setup = RunnerSetup(spec, 1, env_factory, reference=reference)
    env = dataclasses.replace(setup, threads=torch.get_num_threads()).make_runner().env  # checks the extremes
    if env.spec_.spec_hash() != spec_hash:
        raise ConfigError("online evaluation", [
            f"the env built from the recorded spec has hash {env.spec_.spec_hash()}, the trajectories were "
            f"collected with {spec_hash}: the base model, data or domain space changed since collection; "
            f"rebuild them as they were or collect again"])
    store = EpisodeCache(cache, (env.spec_.name, env.spec_.version, spec_hash), read_also, space=env.space,
                         start=start_eval(env))
    results = roll_policies(env, policies, list(seeds), store, setup,
                            desc="online eval", launcher="inline" if env_factory is not None else launcher,
                            workers=workers, progress=progress)
    if report_dir is not None:
        from mixagent.study.compare_report import report_episodes

        report_episodes(env, results, policies, list(seeds), report_dir, report_dir.parent.name)
    return results
