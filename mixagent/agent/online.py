"""Online evaluation: learned policies and baselines rolled out in the real env on held-out seeds.

Episodes run on the collection launchers (``local`` worker processes or ``inline``), each worker building
its env once. Finished episodes are written one JSON file each, so an interrupted evaluation resumes
where it stopped; baseline episodes do not depend on the agent and are cached by env spec hash.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from tqdm import tqdm

from mixagent.config import from_dict, is_number
from mixagent.domains import weights_problem
from mixagent.env.base_model import get_base_model
from mixagent.env.environment import MixingEnv
from mixagent.env.evaluation import eval_json_problem
from mixagent.env.spec import EnvSpec
from mixagent.errors import ConfigError
from mixagent.paths import atomic_write_json
from mixagent.policies import MixingPolicy, baseline_problems, parse_baseline, policy_from_spec
from mixagent.study.rollouts import iter_rollout
from mixagent.study.tables import summarize
from mixagent.workers import InlineLauncher, LocalLauncher, Ready, cpu_count

log = logging.getLogger(__name__)

__all__ = ["PolicyRef", "EvalSetup", "EvalRunner", "evaluate_online", "baseline_label", "check_held_out"]


@dataclasses.dataclass(frozen=True)
class PolicyRef:
    """A policy a worker can build: a baseline name (``uniform``, ``natural``, ``target_only``,
    ``replay:<rho>``), a registered method that needs only the natural shares (``decay_switch``, ``odm``,
    ...) or a policy artifact directory."""

    label: str
    baseline: str = ""
    artifact: str = ""

    def build(self, env: MixingEnv) -> MixingPolicy:
        return policy_from_spec(self.artifact or self.baseline, env.natural.to_mapping())


def baseline_label(name: str) -> str:
    """The table label of baseline spec ``name`` (``replay:0.5`` -> ``replay rho=0.5``)."""
    from mixagent.policies.registry import METHODS

    if name in METHODS:
        return name
    spec = parse_baseline(name)
    if spec is None:
        raise ConfigError("baselines", baseline_problems(name))
    return spec.label


@dataclasses.dataclass(frozen=True)
class Segment:
    """An evaluation worker trained one segment of ``label``'s episode on ``seed``."""

    label: str
    seed: int


@dataclasses.dataclass(frozen=True)
class Episode:
    """An evaluation episode ended; ``summary`` is its :func:`~mixagent.study.tables.summarize` row."""

    label: str
    seed: int
    summary: dict


@dataclasses.dataclass(frozen=True)
class EvalSetup:
    """What an evaluation worker needs (picklable): the env spec as recorded by the trajectory runs."""

    spec: dict
    threads: int
    env_factory: Callable[[], MixingEnv] | None = None
    reference: dict | None = None  # the extremes the dataset's rewards used (normalised rewards)

    def make_runner(self) -> EvalRunner:
        return EvalRunner(self)


class EvalRunner:
    """Runs evaluation episodes in one worker (one env, built once)."""

    def __init__(self, setup: EvalSetup) -> None:
        torch.set_num_threads(setup.threads)
        if setup.env_factory is not None:
            self.env = setup.env_factory()
        else:
            spec = dict(setup.spec, optim={**setup.spec["optim"], "threads": setup.threads})
            self.env = MixingEnv(from_dict(EnvSpec, spec, "recorded env spec"))
        self.identity = {"spec_hash": self.env.spec_.spec_hash()}
        mine = self.env.reference.to_json() if self.env.reference is not None else None
        if setup.reference is not None and mine is not None and \
                (mine["best"], mine["worst"]) != (setup.reference["best"], setup.reference["worst"]):
            raise ConfigError("online evaluation", [
                f"the env's reference extremes {mine} differ from the ones the trajectories were scored with "
                f"{setup.reference}: agents and baselines would be scored on another scale. Restore the dataset's "
                f"checkpoints/references/{mine['spec_hash']}.json (or delete a stale "
                f"data/cache/references/{mine['spec_hash']}.json)"])

    def run(self, ref: PolicyRef, seed: int) -> Iterator[Segment | Episode]:
        policy = ref.build(self.env)
        steps = iter_rollout(self.env, policy, seed)
        while True:
            try:
                next(steps)
            except StopIteration as done:
                yield Episode(ref.label, seed, summarize(done.value, self.env.space, seed))
                return
            yield Segment(ref.label, seed)


def _read_episode(path: Path, seed: int) -> dict | None:
    """A stored episode summary, or ``None`` (it is then run again) when it is unreadable or holds invalid
    values: another seed, non-finite or missing scores, evaluations or mixtures that are not valid."""
    try:
        ep = json.loads(path.read_text())
        numbers = [ep[k] for k in ("source_score", "target_score", "source_bpb", "target_bpb", "balanced", "return")]
        domains = ep["start"]["bpb"] if isinstance(ep["start"], dict) else None
        ok = (ep["seed"] == seed and isinstance(ep["truncated"], bool) and all(is_number(x) for x in numbers)
              and isinstance(domains, dict) and not any(eval_json_problem(ep[k], domains) for k in ("start", "final"))
              and isinstance(ep["weights"], list) and len(ep["weights"]) > 0
              and not any(weights_problem(w, len(domains), tol=1e-4) for w in ep["weights"]))  # stored to 6 digits
    except (OSError, ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        log.warning("stored episode %s is unreadable or invalid; running it again", path)
        return None
    return ep


def check_held_out(seeds: list[int], used: set[int]) -> None:
    """Refuse evaluation seeds that collection used as episode seeds."""
    clash = sorted(set(seeds) & used)
    if clash:
        raise ConfigError("eval.seeds", [f"seeds {clash} were used as episode seeds in collection; evaluate on "
                                         f"held-out seeds (e.g. {max(used | set(seeds)) + 1})"])


def evaluate_online(spec: dict, spec_hash: str, policies: list[PolicyRef], seeds: list[int], out: Path,
                    cache: Path | None, horizon: int, launcher: str = "local", workers: int = 0,
                    env_factory: Callable[[], MixingEnv] | None = None,
                    progress: bool = True, reference: dict | None = None) -> dict[str, list[dict]]:
    """Roll every policy out on every seed; returns ``{label: [episode summary per seed]}``.

    Episodes already on disk (``out/<label>/<seed>.json``, or the baseline cache) are not rerun.
    ``reference``: the extremes the training data was scored with; an env that scores with others is
    refused (:class:`ConfigError`).
    """
    def where(ref: PolicyRef, seed: int) -> Path:
        if ref.baseline and cache is not None:
            return cache / spec_hash / f"{ref.baseline.replace(':', '_')}" / f"{seed}.json"
        return out / ref.label.replace(" ", "_").replace("=", "") / f"{seed}.json"

    results: dict[str, dict[int, dict]] = {ref.label: {} for ref in policies}
    todo = []
    for ref in policies:
        for seed in seeds:
            path = where(ref, seed)
            cached = _read_episode(path, seed) if path.is_file() else None
            if cached is not None:
                results[ref.label][seed] = cached
            else:
                todo.append((ref, seed))
    refs = {ref.label: ref for ref in policies}
    if todo:
        cores = cpu_count()
        if launcher == "inline" or env_factory is not None:
            runner, threads = InlineLauncher(), cores
        else:
            n = min(workers or cores, len(todo))
            runner, threads = LocalLauncher(n), max(1, cores // n)
            env_spec = from_dict(EnvSpec, spec, "recorded env spec")
            if env_spec.backend == "lm":  # a missing base model is pre-trained once here, not once per worker
                get_base_model(env_spec.base_config())
        setup = EvalSetup(spec, threads, env_factory, reference)
        bar = tqdm(total=len(todo) * horizon, desc="online eval", unit="segment", disable=not progress)
        try:
            for event in runner.events(setup, todo):
                match event:
                    case Ready(identity=identity) if identity["spec_hash"] != spec_hash:
                        raise ConfigError("online evaluation", [
                            f"the env built from the recorded spec has hash {identity['spec_hash']}, the trajectories "
                            f"were collected with {spec_hash}: the base model, data or domain space changed since "
                            f"collection; rebuild them as they were or collect again"])
                    case Segment(label=label, seed=seed):
                        bar.update()
                        bar.set_postfix_str(f"{label} seed {seed}")
                    case Episode(label=label, seed=seed, summary=summary):
                        path = where(refs[label], seed)
                        path.parent.mkdir(parents=True, exist_ok=True)
                        atomic_write_json(path, summary)
                        results[label][seed] = summary
        finally:
            runner.close()
            bar.close()
    return {label: [by_seed[s] for s in seeds] for label, by_seed in results.items()}
