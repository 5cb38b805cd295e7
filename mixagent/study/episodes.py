"""The episode engine: any mixing policy rolled out in one environment on given seeds, on the collection
launchers, with every finished episode cached as one JSON file keyed by the env's spec hash and the
policy's identity.

The comparison (``python -m mixagent.study compare``), the agent's online evaluation
(``python -m mixagent.train_agent``) and so the demo all run their episodes here, so an episode one of them
ran is an episode the others reuse: same spec hash, same policy identity, same file.

* **Policy identity** (:func:`policy_key`): a constant baseline is its spec string (``uniform``,
  ``replay:0.5``); a registered method is ``<name>@<digest>`` of its :func:`~mixagent.policies.registry.
  policy_fingerprint` (a changed default or rule reruns it); a trained artifact is ``artifact@<digest>`` of
  its weights and the behaviour part of its ``meta.json`` (a retrained agent reruns; a resumed one does not).
* **The cache** (:class:`EpisodeCache`): ``<root>/cache/<env name>-v<version>/<spec hash>/<key>/<seed>.json``
  (``/`` and ``:`` in the key become ``_``);
  read-only roots (the committed ``audits/compare``) are looked up after the writable one. A stored episode
  that is unreadable or holds invalid values is run again.
* **Workers** (:class:`EpisodeSetup`): each builds the env once from the spec (as a dict) or from a factory
  (tests), checks it scores with the expected reference extremes, then runs tasks.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mixagent.config import from_dict, is_number
from mixagent.domains import DomainSpace, weights_problem
from mixagent.env.evaluation import eval_json_problem
from mixagent.env.spec import EnvSpec
from mixagent.errors import ConfigError
from mixagent.paths import REPO_ROOT, atomic_write_json
from mixagent.policies.baselines import parse_baseline
from mixagent.policies.online import ReferenceCurve
from mixagent.policies.registry import METHODS, PolicyContext, build_policy, policy_fingerprint
from mixagent.workers import LAUNCHERS, InlineLauncher, Launcher, Ready, cpu_count

__all__ = ["EPISODE_VERSION", "EpisodeCache", "EpisodeSetup", "EpisodeRunner", "Segment", "Episode", "FamilyPoint",
           "policy_key", "policy_identity", "policy_context", "artifact_dir", "content_digest", "launch",
           "roll_policies"]

log = logging.getLogger(__name__)
EPISODE_VERSION = 1


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


def artifact_dir(spec: str) -> Path | None:
    """The policy artifact directory ``spec`` names (as given, or relative to the repository root), else
    ``None``."""
    for path in (Path(spec), REPO_ROOT / spec):
        if path.is_dir():
            return path.resolve()
    return None


def content_digest(obj: object) -> str:
    """12 hex digits of the SHA-256 of ``obj`` as canonical JSON."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]


def _artifact_id(path: Path) -> str:
    """What defines an artifact's behaviour: its weight and tensor files and its ``meta.json`` less the
    record of how it was trained (``training``, ``versions``: a resumed run with other evaluation settings
    rewrites those, the policy is the same)."""
    h = hashlib.sha256()
    for f in sorted(path.glob("*")):
        if f.is_file() and f.name != "meta.json":
            h.update(f.name.encode() + f.read_bytes())
    meta = path / "meta.json"
    if meta.is_file():
        try:
            acts = {k: v for k, v in json.loads(meta.read_text()).items() if k not in ("training", "versions")}
        except ValueError:  # unreadable: its bytes are its identity (loading it fails with a typed error)
            acts = {"bytes": meta.read_text(errors="replace")}
        h.update(b"meta.json" + json.dumps(acts, sort_keys=True).encode())
    return h.hexdigest()[:12]


def _is_named(spec: str) -> bool:
    """A registered method or constant baseline (names win over a directory of the same name)."""
    return spec in METHODS or parse_baseline(spec) is not None


def policy_identity(policy: str) -> str:
    """A method spec as written; an artifact directory by its content (a retrained agent at the same path is
    another policy). The identity a comparison's or a deploy case's table records per row."""
    path = None if _is_named(policy) else artifact_dir(policy)
    return f"artifact@{_artifact_id(path)}" if path is not None else policy


def policy_key(spec: str, ctx: PolicyContext) -> str:
    """The cache identity of policy ``spec`` in context ``ctx`` (see the module docstring)."""
    if spec in METHODS:
        return f"{spec}@{content_digest(policy_fingerprint(build_policy(spec, ctx)))}"
    path = None if _is_named(spec) else artifact_dir(spec)
    if path is not None:
        return f"artifact@{_artifact_id(path)}"
    return spec


def policy_context(context: Mapping, env) -> PolicyContext:
    """What the methods need in ``env``: its natural shares, the preparation runs' results (``context``,
    JSON: ``reference`` curve, ``regmix`` mixture) and the optimizer batches per segment (ODM counts its
    updates in batches)."""
    reference = ReferenceCurve.from_json(context["reference"]) if context.get("reference") else None
    return PolicyContext(env.natural.to_mapping(), reference, context.get("regmix"),
                         getattr(env.backend, "steps_per_segment", 1))


def _record(r, space: DomainSpace, seed: int) -> dict:
    from mixagent.study.tables import summarize

    out = summarize(r, space, seed)
    out["version"] = EPISODE_VERSION
    out["evals"] = [s["eval"] for s in r.steps if "eval" in s]
    out["scores"] = [s["balanced_score"] for s in r.steps if "balanced_score" in s]
    target = space.field_mask("target")
    out["target_tokens"] = float(sum(np.asarray(list(s["weights"].values()))[target].sum()  # trained and evaluated
                                     for s in r.steps if "eval" in s))
    return out


def _valid(ep: dict, seed: int) -> bool:
    """A stored episode holds the seed asked for, finite scores, valid evaluations and mixtures."""
    numbers = [ep[k] for k in ("source_score", "target_score", "source_bpb", "target_bpb", "balanced", "return")]
    domains = ep["start"]["bpb"] if isinstance(ep["start"], dict) else None
    return (ep.get("version") == EPISODE_VERSION and ep["seed"] == seed and isinstance(ep["truncated"], bool)
            and all(is_number(x) for x in numbers) and isinstance(domains, dict)
            and not any(eval_json_problem(e, domains) for e in (ep["start"], ep["final"], *ep["evals"]))
            and all(is_number(x) for x in ep["scores"])
            and isinstance(ep["weights"], list) and len(ep["weights"]) > 0
            and not any(weights_problem(w, len(domains), tol=1e-4) for w in ep["weights"]))  # stored to 6 digits


class EpisodeCache:
    """Episodes on disk, one JSON file each, under ``<root>/cache/<env name>-v<version>/<spec hash>/``.

    Args:
        root: the writable root (a comparison's ``out``, the agent's ``eval.cache``).
        env: ``(name, version, spec hash)`` of the env.
        read_also: further roots looked up (read only) after ``root``, e.g. the committed ``audits/compare``.
    """

    def __init__(self, root: Path, env: tuple[str, int, str], read_also: tuple[Path, ...] = ()) -> None:
        name, version, spec_hash = env
        rel = Path("cache") / f"{name}-v{version}" / spec_hash
        self.dir = Path(root) / rel
        self.read_dirs = [Path(r) / rel for r in read_also if (Path(r) / rel).resolve() != self.dir.resolve()]

    @staticmethod
    def _name(key: str) -> str:
        return key.replace("/", "_").replace(":", "_")

    def path(self, key: str, seed: int) -> Path:
        return self.dir / self._name(key) / f"{seed}.json"

    def get(self, key: str, seed: int) -> dict | None:
        """The stored episode, or ``None`` (it is then run again) when none is stored, or when the stored one
        is unreadable or invalid (logged)."""
        for d in (self.dir, *self.read_dirs):
            p = d / self._name(key) / f"{seed}.json"
            if not p.exists():
                continue
            try:
                ep = json.loads(p.read_text())
                if _valid(ep, seed):
                    return ep
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                pass
            log.warning("stored episode %s is unreadable or invalid; running it again", p)
        return None

    def find(self, name: str) -> Path | None:
        """The first of the cache directories (writable first) holding file ``name``, or ``None``."""
        return next((d / name for d in (self.dir, *self.read_dirs) if (d / name).is_file()), None)

    def put(self, key: str, seed: int, record: dict) -> None:
        p = self.path(key, seed)
        p.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(p, record)


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
        from mixagent.study.rollouts import iter_rollout

        policy = self._policy(kind, str(arg) if kind == "episode" else arg)
        steps = iter_rollout(self.env, policy, seed)
        while True:
            try:
                next(steps)
            except StopIteration as done:
                yield Episode(key, seed, _record(done.value, self.env.space, seed))
                return
            yield Segment(key, seed)

    def _policy(self, kind: str, arg: object):
        from mixagent.policies.baselines import FixedPolicy

        if kind == "fixed":
            return FixedPolicy(dict(zip(self.env.space.names, arg)))  # type: ignore[call-overload]
        path = None if _is_named(str(arg)) else artifact_dir(str(arg))
        if path is not None:
            from mixagent.policies.artifact import load_policy

            return load_policy(path)
        return build_policy(str(arg), self.context)

    def _target_only(self, steps: int, seed: int) -> float:
        from mixagent.domains import replay_weights
        from mixagent.env.backends import make_backend
        from mixagent.study.headroom import episode_seed_of

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
        path = None if _is_named(spec) else artifact_dir(spec)
        tasks += [("episode", keys[label], s, str(path) if path else spec) for s in seeds
                  if cache.get(keys[label], s) is None]
    for ev in launch(setup, list(dict.fromkeys(tasks)), env.horizon, desc, env.spec_.spec_hash(),
                     launcher=launcher, workers=workers, progress=progress):
        if isinstance(ev, Episode):
            cache.put(ev.key, ev.seed, ev.record)
    out = {label: [cache.get(keys[label], s) for s in seeds] for label in policies}
    missing = [f"{label} seed {s}" for label, eps in out.items() for s, e in zip(seeds, eps) if e is None]
    if missing:
        raise ConfigError("episodes", [f"episodes missing after the run: {', '.join(missing)}; rerun to resume"])
    return out  # type: ignore[return-value]
