"""``make collect-trajectories``: collect branching trees of behaviour-policy trajectories into a run.

The driver plans workers and threads, opens (or resumes) the run, hands trees to a launcher and writes
every event the workers stream back; it is the run's only writer.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import platform
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm import tqdm

import mixagent
from mixagent.config import to_dict
from mixagent.data.sources import load_space
from mixagent.env.base_model import get_base_model
from mixagent.env.environment import MixingEnv
from mixagent.env.rewards import needs_reference
from mixagent.env.spec import load_spec
from mixagent.errors import ConfigError, ResumeMismatchError
from mixagent.paths import REPO_ROOT, atomic_write_json
from mixagent.policies.behaviour import BehaviourMix, BehaviourSpec
from mixagent.rollout.launchers import LAUNCHERS, InlineLauncher, Launcher, Ready, cpu_count
from mixagent.rollout.runner import CollectTree, RunnerSetup
from mixagent.rollout.tree import Close, Open, Step, TreeConfig, TreeDone, spec_identity, trajectory_id
from mixagent.trajectories.store import Run, RunWriter

__all__ = ["CollectConfig", "CollectSummary", "collect", "plan_workers", "run_stats", "format_stats"]

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class CollectConfig:
    """A trajectory collection job (``configs/collect/*.yaml``).

    Args:
        run: run name: the directory ``<out_dir>/<run>``.
        env: env spec YAML, relative to the repository root.
        env_overrides: ``key=value`` overrides applied to the env spec.
        trees: root episodes; each grows ``tree.factor ** len(tree.branch_at)`` trajectories.
        seed: seeds every episode's data order and every behaviour draw.
        tree: the branching shape (empty ``branch_at`` = independent rollouts).
        behaviours: the behaviour mix (``mixagent.policies.behaviour``).
        launcher: ``local`` (worker processes), ``ray`` or ``inline`` (in this process).
        workers: workers to run; 0 = one per core, at most one per tree.
        threads_per_worker: torch threads per worker; 0 = cores // workers. It changes results only at
            rounding level (on some CPUs, the 8th significant digit); bit-for-bit reruns need the same value.
        address: Ray cluster address for ``launcher: ray``; empty starts a local Ray.
        out_dir: directory of runs, relative to the repository root (or absolute).
        suite: a settings suite (``configs/settings/*.yaml``): collect across ``settings`` of its training runs,
            ``trees`` trees each, one run per setting under ``<out_dir>/<run>/`` (:mod:`mixagent.trajectories.suite`;
            ``env`` and the runs' overrides then come from the suite; ``env_overrides`` may only add ``reward.*``
            keys, e.g. ``reward.anchors``, which change no run).
        settings: how many distinct training runs of ``suite`` to collect in.
        setting: recorded in the run's ``meta.json`` (set by the suite collection for each setting's run).
        references_from: with a suite, a directory of audits (an oracle table's ``tuning/<suite>/``) whose
            reference and anchor runs a setting adopts where one audited the same runs
            (:func:`mixagent.env.references.from_audits`), instead of running them; not part of the
            collection's identity (the extremes agree to the thread count's rounding).
        pack_to: with a suite, a directory (``trajectories/reference/<run>``, which git keeps) each finished
            setting's run is packed into (:func:`~mixagent.trajectories.store.pack_run`), with the suite index:
            a setting packed there counts as collected, so the data outlives the machine, and the directory
            is itself a suite collection to train on.
    """

    run: str
    env: str = "envs/math-natural.yaml"
    env_overrides: tuple[str, ...] = ()
    trees: int = 1
    seed: int = 0
    tree: TreeConfig = dataclasses.field(default_factory=TreeConfig)
    behaviours: tuple[BehaviourSpec, ...] = (BehaviourSpec("dirichlet"),)
    launcher: str = "local"
    workers: int = 0
    threads_per_worker: int = 0
    address: str = ""
    out_dir: str = "trajectories"
    suite: str = ""
    settings: int = 0
    setting: dict = dataclasses.field(default_factory=dict)
    references_from: str = ""
    pack_to: str = ""

    def check(self) -> list[str]:
        problems = []
        if self.suite and self.settings < 1:
            problems.append(f"settings must be >= 1 with a suite (the training runs to collect in), got "
                            f"{self.settings}")
        if self.pack_to and not self.suite:
            problems.append("pack_to needs suite (it packs each setting's run), or drop it")
        if self.references_from and not self.suite:
            problems.append("references_from needs suite (it adopts each setting's reference runs), or drop it")
        if self.references_from and not (REPO_ROOT / self.references_from).is_dir():
            problems.append(f"references_from: directory {self.references_from!r} not found under {REPO_ROOT} (an "
                            f"oracle table's tuning audits, e.g. audits/settings/math-cpt-v1/tuning/math-cpt-v1)")
        if self.settings and not self.suite:
            problems.append("settings needs suite (a configs/settings/*.yaml file), or drop it")
        if self.suite and not (REPO_ROOT / self.suite).is_file():
            problems.append(f"suite: file {self.suite!r} not found under {REPO_ROOT} (see configs/settings/)")
        runs = [o for o in self.env_overrides if not o.split("=", 1)[0].strip().startswith("reward.")]
        if self.suite and runs:
            problems.append(f"env_overrides {runs} do not apply with a suite: each setting's runs come from the suite; "
                            f"only reward.* overrides (e.g. reward.anchors) may be added, as they change no run")
        if not self.run or "/" in self.run or self.run.startswith("."):
            problems.append(f"run must be a plain directory name, got {self.run!r}")
        if self.trees < 1:
            problems.append(f"trees must be >= 1, got {self.trees}")
        if self.launcher not in LAUNCHERS:
            from mixagent.errors import suggest

            problems.append(f"launcher {self.launcher!r} unknown{suggest(self.launcher, LAUNCHERS)}; use one of "
                            f"{', '.join(LAUNCHERS)}")
        if self.workers < 0 or self.threads_per_worker < 0:
            problems.append("workers and threads_per_worker must be >= 0 (0 = automatic)")
        if not (REPO_ROOT / self.env).is_file():
            problems.append(f"env: file {self.env!r} not found under {REPO_ROOT} (see envs/)")
        if self.address and self.launcher != "ray":
            problems.append(f"address is only used by launcher 'ray' (launcher is {self.launcher!r})")
        return problems + [p for b in self.behaviours for p in b.check()]

    @property
    def run_dir(self) -> Path:
        return (REPO_ROOT / self.out_dir / self.run).resolve()


def plan_workers(cfg: CollectConfig, cores: int | None = None) -> tuple[int, int]:
    """``(workers, threads per worker)``: one worker per core by default (the proxy is small, so two
    single-thread workers outrun one two-thread worker), never more threads than cores on this machine."""
    cores = cores or cpu_count()
    if cfg.launcher == "inline":
        return 1, cfg.threads_per_worker or cores
    workers = cfg.workers or max(1, min(cores, cfg.trees))
    threads = cfg.threads_per_worker or max(1, cores // workers)
    if workers * threads > cores and not (cfg.launcher == "ray" and cfg.address):
        raise ConfigError("collect", [f"workers x threads_per_worker = {workers} x {threads} = {workers * threads} "
                                      f"threads would oversubscribe this machine's {cores} cores; lower workers or "
                                      f"threads_per_worker (0 picks them)"])
    return workers, threads


@dataclasses.dataclass
class CollectSummary:
    """What a collection call did, and the run's statistics after it."""

    run_dir: Path
    new_trajectories: int
    segments: int
    seconds: float
    workers: int
    threads: int
    stats: dict
    new_transitions: int = 0

    @property
    def transitions_per_cpu_hour(self) -> float:
        cpu_hours = self.seconds * self.workers * self.threads / 3600
        return self.new_transitions / cpu_hours if cpu_hours > 0 else 0.0

    def format(self) -> str:
        head = (f"run {self.run_dir}: +{self.new_trajectories} trajectories, +{self.new_transitions} transitions "
                f"({self.segments} segments trained) in {self.seconds:.0f}s on {self.workers} worker(s) x "
                f"{self.threads} thread(s) = {self.transitions_per_cpu_hour:.0f} logged transitions per CPU-hour")
        return head + "\n" + format_stats(self.stats)


def _code_version() -> dict:
    try:
        commit = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"mixagent": mixagent.__version__, "git": commit, "python": platform.python_version()}


def collect(cfg: CollectConfig, resume: bool = False, env_factory: Callable[[], MixingEnv] | None = None,
            progress: bool = True) -> CollectSummary:
    """Collect (or, with ``resume``, continue) the run ``cfg`` describes.

    Args:
        cfg: the collect config.
        resume: continue an existing run (finished trajectories kept, partial ones collected again).
        env_factory: build the env in-process instead of from ``cfg.env`` (forces the inline launcher;
            for tests that inject a backend).
        progress: show a progress bar.
    """
    if cfg.suite:
        raise ConfigError("collect", ["a config with suite collects one run per setting: call "
                                      "mixagent.trajectories.suite.collect_suite (the CLI does)"])
    BehaviourMix(cfg.behaviours)  # the whole mix is validated before anything starts
    workers, threads = plan_workers(cfg)
    setup = RunnerSetup({}, threads, env_factory, behaviours=tuple(cfg.behaviours), tree=cfg.tree, seed=cfg.seed)
    launcher: Launcher
    if env_factory is not None:
        launcher, workers = InlineLauncher(), 1
        launcher.runner = setup.make_runner()
        spec = launcher.runner.env.spec_
    else:
        spec = load_spec(REPO_ROOT / cfg.env, cfg.env_overrides)
        if spec.backend == "lm":  # a missing base model is pre-trained once here, not once per worker
            get_base_model(spec.base_config())
        if needs_reference(spec.reward.name):  # and missing reference runs run once here, then are cached
            env = MixingEnv(spec)
            if cfg.setting:  # a suite's setting: its reference (and anchor) runs are expensive and the cache is
                # this machine's; their extremes are committed at once, so a fresh machine adopts them
                from mixagent.env.references import commit_reference

                commit_reference(env.reference, spec.env_id, getattr(env.backend, "base_id", ""))
        launcher = LAUNCHERS[cfg.launcher](workers, cfg.address)
        setup = dataclasses.replace(setup, spec=to_dict(spec))
    problems = cfg.tree.check_horizon(spec.steps)
    if problems:
        raise ConfigError("collect", problems)
    space = load_space(spec.space_path())
    meta = {"run": cfg.run, "env": spec_identity(spec), "seed": cfg.seed,
            "domains": {"names": list(space.names), "fields": list(space.fields), "space": spec.space},
            "tree": to_dict(cfg.tree), "behaviours": [to_dict(b) for b in cfg.behaviours], "trees": cfg.trees,
            "config": to_dict(cfg), "code": _code_version(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **({"setting": cfg.setting} if cfg.setting else {})}
    writer = RunWriter(cfg.run_dir, meta, resume)
    done, trees_done = writer.done_ids, writer.trees_done
    tasks = [CollectTree(t, frozenset(i for i in done if i == trajectory_id(t, ()) or
                                      i.startswith(trajectory_id(t, ()) + "_")))
             for t in range(writer.meta["trees"]) if t not in trees_done]
    per_tree = cfg.tree.segments(spec.steps)
    session = {"started": meta["created"], "launcher": cfg.launcher if env_factory is None else "inline",
               "workers": workers, "threads": threads, "seconds": 0.0, "segments": 0, "trajectories": 0}
    writer.manifest.setdefault("sessions", []).append(session)
    log.info("collecting %d tree(s) of %d trajectories into %s on %d worker(s) x %d thread(s)",
             len(tasks), cfg.tree.leaves, cfg.run_dir, workers, threads)
    t0 = time.perf_counter()
    new, transitions = 0, 0
    bar = tqdm(total=len(tasks) * per_tree, unit="segment", desc=f"collect {cfg.run}", disable=not progress,
               dynamic_ncols=True)
    try:
        for event in launcher.events(setup, tasks) if tasks else ():
            match event:
                case Step(id=tid, line=line):
                    if tid is not None:
                        writer.step(tid, line)
                    bar.update(1)
                case Open(id=tid, header=header, prefix=prefix):
                    writer.open(tid, header, prefix)
                case Close(id=tid, end=end):
                    entry = writer.close(tid, end)
                    new, transitions = new + 1, transitions + entry["steps"]
                    bar.set_postfix_str(f"trajectories {len(writer.done_ids)}, transitions {transitions}")
                case TreeDone(tree=tree, segments=segments):
                    bar.total -= per_tree - segments  # resumed trees skip finished subtrees
                    bar.refresh()
                    session.update(seconds=round(time.perf_counter() - t0, 1), segments=session["segments"] + segments,
                                   trajectories=new)
                    writer.tree_done(tree)
                case Ready(identity=identity):
                    _check_proxy(writer, identity["proxy"])
                    session["ready_s"] = round(time.perf_counter() - t0, 2)  # worker start-up (the last one to report)
    except BaseException:
        writer.abort()
        raise
    finally:
        bar.close()
        launcher.close()
    seconds = time.perf_counter() - t0
    session.update(seconds=round(seconds, 1), trajectories=new)
    atomic_write_json(cfg.run_dir / "manifest.json", writer.manifest)
    summary = CollectSummary(cfg.run_dir, new, session["segments"], seconds, workers, threads,
                             run_stats(Run(cfg.run_dir)), new_transitions=transitions)
    return summary


def _check_proxy(writer: RunWriter, identity: dict) -> None:
    """The first worker fixes the run's proxy identity; later workers and resumed runs must match it."""
    old = writer.meta.get("proxy")
    if old is None:
        writer.meta["proxy"] = identity
        atomic_write_json(writer.dir / "meta.json", writer.meta)
    elif any(k in identity and k not in old for k in ("reference", "observed_lr")):
        raise ResumeMismatchError(f"the run {writer.dir} was started by an older mixagent that did not record the "
                                  f"reference extremes and learning rates (meta.json proxy.reference / observed_lr) "
                                  f"its datasets need; collect into a new run")
    elif any(json.dumps(old.get(k), sort_keys=True) != json.dumps(identity.get(k), sort_keys=True)
             for k in ("reference", "observed_lr")):
        raise ResumeMismatchError(f"this worker's reference runs or learning-rate schedule differ from the run's "
                                  f"(run: reference {old.get('reference')}, observed_lr {old.get('observed_lr')}; "
                                  f"worker: {identity.get('reference')}, {identity.get('observed_lr')}). The "
                                  f"references are cached per spec hash in data/cache/references/: restore the run's "
                                  f"file there, or collect into a new run")
    elif old["base_model"] != identity["base_model"] or not np.allclose(old["natural"], identity["natural"],
                                                                          rtol=0, atol=1e-12):
        raise ResumeMismatchError(f"the base model or the data differ from the run's: run has base model "
                                  f"{old['base_model']}, this worker {identity['base_model']} (natural shares "
                                  f"{'equal' if np.allclose(old['natural'], identity['natural']) else 'differ'}). "
                                  f"Rebuild the data and base model the run used (same configs and package "
                                  f"versions), or collect into a new run")


def run_stats(run: Run, read_files: bool = False) -> dict:
    """Totals and per-behaviour return statistics of a run, from its manifest (``read_files`` adds mean
    final source/target scores, read from the trajectory files)."""
    entries = list(run.entries.values())
    by: dict[str, list[dict]] = {}
    for e in entries:
        by.setdefault(e["behaviour"], []).append(e)
    rows = {}
    for name, es in sorted(by.items()):
        r = np.array([e["return"] for e in es])
        rows[name] = {"trajectories": len(es), "return_mean": float(r.mean()), "return_std": float(r.std()),
                      "return_min": float(r.min()), "return_max": float(r.max()),
                      "flagged": sum(bool(e["flagged"]) for e in es)}
    if read_files:
        finals: dict[str, list[tuple[float, float]]] = {}
        for traj in run.trajectories():
            evals = traj.evals
            if evals:
                finals.setdefault(traj.header["behaviour"][0]["name"], []).append(
                    (evals[-1].scores["source"], evals[-1].scores["target"]))
        for name, pairs in finals.items():
            rows[name]["final_source"], rows[name]["final_target"] = map(float, np.mean(pairs, axis=0))
    sessions = run.manifest.get("sessions", [])
    return {
        "run": run.name, "env": run.meta["env"]["id"], "trees_done": len(run.manifest["trees_done"]),
        "trees": run.meta["trees"], "trajectories": len(entries),
        "transitions": sum(e["steps"] for e in entries),
        "unique_transitions": sum(e["steps"] - e["branch_step"] for e in entries),
        "truncated": sum(bool(e["truncated"]) for e in entries), "flagged": sum(bool(e["flagged"]) for e in entries),
        "bytes": sum(e["bytes"] for e in entries),
        "compute_seconds": sum(s["seconds"] * s["workers"] * s["threads"] for s in sessions),
        "wall_seconds": sum(s["seconds"] for s in sessions), "by_behaviour": rows,
    }


def format_stats(stats: dict) -> str:
    lines = [f"{stats['run']} ({stats['env']}): trees {stats['trees_done']}/{stats['trees']}, "
             f"{stats['trajectories']} trajectories, {stats['transitions']} transitions "
             f"({stats['unique_transitions']} unique), {stats['truncated']} truncated, {stats['flagged']} flagged, "
             f"{stats['bytes'] / 1e6:.1f} MB, {stats['wall_seconds'] / 60:.1f} min wall, "
             f"{stats['compute_seconds'] / 3600:.2f} CPU-hours",
             ]
    finals = any("final_source" in r for r in stats["by_behaviour"].values())  # only when files were read
    lines += ["| behaviour | trajectories | return mean ± std | min | max |" + (" final source | final target |"
                                                                          if finals else ""),
              "|---|---:|---:|---:|---:|" + ("---:|---:|" if finals else "")]
    for name, r in stats["by_behaviour"].items():
        row = (f"| {name} | {r['trajectories']} | {r['return_mean']:+.4f} ± {r['return_std']:.4f} | "
               f"{r['return_min']:+.4f} | {r['return_max']:+.4f} |")
        if finals:
            fs, ft = r.get("final_source"), r.get("final_target")
            row += f" {'' if fs is None else f'{fs:.4f}'} | {'' if ft is None else f'{ft:.4f}'} |"
        lines.append(row)
    return "\n".join(lines)
