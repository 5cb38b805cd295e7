"""The headroom audit (``python -m mixagent.study headroom``): does any mixing *schedule* beat the best
static mixture in an environment by more than the seed noise? Run it before training an agent there.

Rows (every one on every held-out seed; per-step replay share ``rho`` = the source field's share, natural
shares within each field):

* ``static``: constant ``rho`` over a grid, plus the natural and uniform mixtures;
* ``two_phase``: ``rho1`` for the first ``switch`` steps, then ``rho2`` (a coarse grid);
* ``decay``: one ``rho`` while the learning rate is stable, another during its decay (Blakeney et al.,
  arXiv 2406.03476; Parmar et al., arXiv 2407.07263);
* ``replay_first``: source-only for the first steps, then a target-heavy share;
* ``oracle``: a black-box search over per-step ``rho`` (optuna's TPE sampler) on *tuning* seeds, its best
  schedule then rolled out on the held-out seeds. Its budget (trials x tuning seeds) is in the report.

Rows that share a prefix on a seed share its training: the runner walks a prefix tree and forks the proxy
(``ProxyBackend.state``), so a two-phase schedule costs only its steps after the switch. Each leaf is
evaluated once at the end of the run. Results are appended to
``<out>/<env name>-v<version>/<spec hash>/results.jsonl`` as they arrive (resumable: rerunning skips done
leaves and oracle trials), and the report (``report.json``, ``report.md``, ``*.png``) is rebuilt from them.

The report gives, per reward (the spec's first; all normalised and relative rewards are computed from
the same raw evaluations): mean ± std over seeds per row, the pooled seed standard deviation, the best
static row, the best non-oracle schedule, the oracle, each gap in pooled standard deviations, the spread
of the static grid, per-field extremes, and the item noise of the final score (a bootstrap over
evaluation windows and benchmark items).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mixagent.config import is_number, to_dict
from mixagent.domains import DomainSpace, replay_weights
from mixagent.env.evaluation import EvalResult
from mixagent.env.rewards import NORMALISED_REWARDS, REWARDS, Reference, balanced_score, needs_reference
from mixagent.env.spec import EnvSpec, load_spec
from mixagent.errors import ConfigError, CorruptArtifactError
from mixagent.paths import REPO_ROOT, atomic_write, atomic_write_json
from mixagent.workers import LAUNCHERS, InlineLauncher, Launcher, Ready, cpu_count

__all__ = ["AuditConfig", "Schedule", "Leaf", "build_schedules", "run_audit", "make_report", "resolve_env",
           "episode_seed_of", "FAMILIES"]

log = logging.getLogger(__name__)
FAMILIES = ("static", "two_phase", "decay", "replay_first", "oracle")
SCHEDULE_FAMILIES = ("two_phase", "decay", "replay_first")
RESULTS_VERSION = 1


def episode_seed_of(seed: int) -> int:
    """The backend seed ``MixingEnv.reset(seed=seed)`` trains with, so audit rows and env rollouts on the
    same seed see the same data order."""
    from gymnasium.utils import seeding

    return int(seeding.np_random(seed)[0].integers(2**31 - 1))


@dataclasses.dataclass(frozen=True)
class Schedule:
    """One audit row: a per-step replay share ``rhos`` (``(T,)``, source-field share in [0, 1]), or a
    constant named ``mixture`` (``natural`` or ``uniform``)."""

    label: str
    family: str
    rhos: tuple[float, ...] = ()
    mixture: str = ""

    @property
    def key(self) -> str:
        return self.mixture or "rho:" + ",".join(f"{r:.4f}" for r in self.rhos)

    def weights(self, space: DomainSpace, natural: np.ndarray, t: int) -> np.ndarray:
        """``(K,)`` weights of step ``t``."""
        if self.mixture == "uniform":
            return np.full(space.k, 1.0 / space.k)
        if self.mixture == "natural":
            return np.asarray(natural, dtype=np.float64)
        return replay_weights(space, natural, self.rhos[t])

    def mean_rho(self, space: DomainSpace, natural: np.ndarray) -> float:
        return float(np.mean([self.weights(space, natural, t)[space.field_mask("source")].sum()
                              for t in range(len(self.rhos) or 1)]))


@dataclasses.dataclass(frozen=True)
class AuditConfig:
    """What the audit runs.

    Args:
        env: an env spec file (``envs/*.yaml``) or id (``mixagent/<name>-v<version>``).
        seeds: held-out evaluation seeds (``MixingEnv.reset(seed=...)``), at least 3 for a verdict.
        tune_seeds: seeds the oracle search scores its trials on (disjoint from ``seeds``).
        static_rhos: the static grid of replay shares.
        two_phase_switches: steps after which two-phase schedules switch.
        two_phase_rhos: the coarse grid both phases draw from (``rho1 != rho2``).
        decay_stable_rhos: ``rho`` while the learning rate is stable (``decay`` family).
        decay_rhos: ``rho`` during the decay.
        replay_first_steps: source-only steps before the target-heavy share (``replay_first`` family).
        replay_first_rhos: the share after them.
        oracle_trials: trials of the oracle search (0 = no oracle row).
        oracle_seed: the TPE sampler's seed.
        workers: worker processes (0 = one per core); launcher: ``local``, ``inline`` or ``ray``.
        out: output root, relative to the repository.
    """

    env: str = "envs/math-cpt.yaml"
    seeds: tuple[int, ...] = (0, 1, 2)
    tune_seeds: tuple[int, ...] = (100,)
    static_rhos: tuple[float, ...] = (0.0, 0.25, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    two_phase_switches: tuple[int, ...] = (2, 4, 6)
    two_phase_rhos: tuple[float, ...] = (0.25, 0.6, 0.9)
    decay_stable_rhos: tuple[float, ...] = (0.9, 1.0)
    decay_rhos: tuple[float, ...] = (0.0, 0.25, 0.5)
    replay_first_steps: tuple[int, ...] = (2, 4)
    replay_first_rhos: tuple[float, ...] = (0.25, 0.6)
    oracle_trials: int = 24
    oracle_seed: int = 0
    workers: int = 0
    launcher: str = "local"
    out: str = "runs/headroom"

    def check(self) -> list[str]:
        problems = []
        if not self.seeds:
            problems.append("seeds must list at least one held-out seed (3 or more for a verdict)")
        if len(set(self.seeds)) != len(self.seeds):
            problems.append(f"seeds repeat: {list(self.seeds)}")
        if set(self.seeds) & set(self.tune_seeds):
            problems.append(f"tune_seeds {sorted(set(self.seeds) & set(self.tune_seeds))} are also held-out seeds; "
                            f"the oracle must not be tuned on the seeds it is evaluated on")
        if self.oracle_trials and not self.tune_seeds:
            problems.append("oracle_trials > 0 needs tune_seeds")
        if not self.static_rhos:
            problems.append("static_rhos is empty: the audit needs a static grid to compare schedules against")
        for name in ("static_rhos", "two_phase_rhos", "decay_stable_rhos", "decay_rhos", "replay_first_rhos"):
            bad = [r for r in getattr(self, name) if not (is_number(r) and 0 <= r <= 1)]
            if bad:
                problems.append(f"{name}: replay shares must be in [0, 1], got {bad}")
        if self.oracle_trials < 0 or self.workers < 0:
            problems.append("oracle_trials and workers must be >= 0")
        if self.launcher not in LAUNCHERS:
            problems.append(f"launcher must be one of {', '.join(LAUNCHERS)}, got {self.launcher!r}")
        return problems


def resolve_env(env: str) -> Path:
    """An env spec path from a path or an id ``mixagent/<name>-v<version>``.

    Raises:
        ConfigError: no such file, or no spec under ``envs/`` has that id (with the known ids).
    """
    path = Path(env)
    if path.suffix in (".yaml", ".yml"):
        full = path if path.is_absolute() else REPO_ROOT / path
        if not full.is_file():
            raise ConfigError("audit", [f"env spec file {env!r} not found; give an envs/*.yaml file or an id"])
        return full
    known = {}
    for f in sorted((REPO_ROOT / "envs").glob("*.yaml")):
        try:
            known[load_spec(f).env_id] = f
        except ConfigError:
            continue
    if env not in known:
        from mixagent.errors import suggest

        raise ConfigError("audit", [f"unknown env {env!r}{suggest(env, known)}; known: {', '.join(known)}"])
    return known[env]


def build_schedules(cfg: AuditConfig, spec: EnvSpec) -> list[Schedule]:
    """Every non-oracle row for ``spec``'s horizon (duplicates dropped, first label kept).

    Raises:
        ConfigError: a switch step outside ``1..T-1``.
    """
    T = spec.steps
    bad = [s for s in (*cfg.two_phase_switches, *cfg.replay_first_steps) if not 1 <= s < T]
    if bad:
        raise ConfigError("audit", [f"switch steps must be in 1..{T - 1} for a {T}-step env, got {bad}"])
    rows = [Schedule(f"static rho={r:g}", "static", (float(r),) * T) for r in cfg.static_rhos]
    rows += [Schedule("natural", "static", mixture="natural"), Schedule("uniform", "static", mixture="uniform")]
    for s in cfg.two_phase_switches:
        for r1 in cfg.two_phase_rhos:
            for r2 in cfg.two_phase_rhos:
                if r1 != r2:
                    rows.append(Schedule(f"two-phase {r1:g}->{r2:g} @{s}", "two_phase", (r1,) * s + (r2,) * (T - s)))
    decay_start = decay_step(spec)
    if decay_start is not None:
        for r1 in cfg.decay_stable_rhos:
            for r2 in cfg.decay_rhos:
                rows.append(Schedule(f"decay {r1:g}->{r2:g} @{decay_start}", "decay",
                                     (r1,) * decay_start + (r2,) * (T - decay_start)))
    for s in cfg.replay_first_steps:
        for r2 in cfg.replay_first_rhos:
            rows.append(Schedule(f"replay-first 1->{r2:g} @{s}", "replay_first", (1.0,) * s + (r2,) * (T - s)))
    seen, out = set(), []
    for row in rows:
        if row.key not in seen:
            seen.add(row.key)
            out.append(row)
    return out


def decay_step(spec: EnvSpec) -> int | None:
    """The first re-weighting step whose segment the learning-rate decay reaches (``wsd`` specs), else
    ``None``."""
    if spec.optim.schedule != "wsd":
        return None
    return min(spec.steps - 1, max(1, math.floor(spec.steps * (1 - spec.optim.decay_fraction))))


# --- the runner: one per worker, a prefix tree of schedules per task -----------------------------------


@dataclasses.dataclass(frozen=True)
class Leaf:
    """One finished row on one seed: its final evaluation and the per-item values behind it."""

    seed: int
    key: str
    eval: dict
    items: dict
    seconds: float
    trial: int | None = None


@dataclasses.dataclass(frozen=True)
class _Setup:
    spec_path: str
    overrides: tuple[str, ...]
    threads: int

    def make_runner(self) -> _Runner:
        return _Runner(self)


class _Runner:
    def __init__(self, setup: _Setup) -> None:
        from mixagent.data.sources import load_space
        from mixagent.env.backends import make_backend

        self.spec = load_spec(setup.spec_path, [*setup.overrides, f"optim.threads={setup.threads}"])
        self.space = load_space(self.spec.space_path())
        self.backend = make_backend(self.spec, self.space)
        self.identity = {"env": self.spec.env_id, "spec_hash": self.spec.spec_hash(),
                         "base": getattr(self.backend, "base_id", "")}

    def run(self, seed: int, schedules: list[Schedule], trial: int | None = None) -> Iterator[Leaf]:
        """Train every schedule on ``seed`` through one prefix tree; yield a :class:`Leaf` per schedule."""
        self.backend.reset(episode_seed_of(seed))
        natural = self.backend.natural
        steps = [[np.round(s.weights(self.space, natural, t), 10) for t in range(self.spec.steps)] for s in schedules]
        yield from self._walk(seed, schedules, steps, list(range(len(schedules))), 0, time.perf_counter(), trial)

    def _walk(self, seed: int, schedules: list[Schedule], steps: list[list[np.ndarray]], members: list[int],
              t: int, t0: float, trial: int | None) -> Iterator[Leaf]:
        if t == self.spec.steps:
            now = self.backend.evaluate()
            items = _items_json(self.backend)
            for i in members:
                yield Leaf(seed, schedules[i].key, now.to_json(), items, time.perf_counter() - t0, trial)
            return
        groups: dict[bytes, list[int]] = {}
        for i in members:
            groups.setdefault(steps[i][t].tobytes(), []).append(i)
        fork = self.backend.state() if len(groups) > 1 else None
        for n, group in enumerate(groups.values()):
            if n:
                self.backend.load_state(fork)
            stats = self.backend.train(steps[group[0]][t], t)
            if stats.nonfinite:
                raise ConfigError("audit", [f"row {schedules[group[0]].label!r} diverged (NaN/Inf loss) at step {t} "
                                            f"on seed {seed}; lower optim.lr in the spec"])
            yield from self._walk(seed, schedules, steps, group, t + 1, t0, trial)


def _items_json(backend) -> dict:
    """The evaluator's per-item values of its last call, rounded, as JSON (empty for backends without one)."""
    last = getattr(getattr(backend, "evaluator", None), "last_items", {})
    return {k: [np.round(np.asarray(v, dtype=np.float64), 6).tolist() for v in vals] for k, vals in last.items()}


# --- the driver ---------------------------------------------------------------------------------------


def _make_launcher(cfg: AuditConfig, n_tasks: int) -> tuple[Launcher, int]:
    cores = cpu_count()
    if cfg.launcher == "inline":
        return InlineLauncher(), cores
    workers = cfg.workers or max(1, min(cores, n_tasks))
    return LAUNCHERS[cfg.launcher](workers), max(1, cores // workers)


def _collection_seeds(spec_hash: str) -> set[int]:
    """Env seeds of trajectories collected on this spec (trajectory runs and reference datasets)."""
    seeds: set[int] = set()
    for meta in (REPO_ROOT / "trajectories").glob("**/meta.json"):
        try:
            d = json.loads(meta.read_text())
        except (OSError, ValueError):
            continue
        if d.get("spec_hash") == spec_hash or d.get("env", {}).get("spec_hash") == spec_hash:
            seeds.update(int(s) for s in d.get("env_seeds", []))
    return seeds


class AuditStore:
    """The audit's one writer: ``results.jsonl`` (append-only, one leaf per line) under the spec hash."""

    def __init__(self, root: Path, spec: EnvSpec) -> None:
        self.dir = root / f"{spec.name}-v{spec.version}" / spec.spec_hash()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "results.jsonl"
        head = self.dir / "spec.json"
        if head.exists():
            stored = json.loads(head.read_text())
            if stored.get("spec_hash") != spec.spec_hash():
                raise ConfigError(str(head), [f"results were cached for spec hash {stored.get('spec_hash')!r}, not "
                                              f"{spec.spec_hash()!r}; use another --out"])
        else:
            atomic_write_json(head, {"version": RESULTS_VERSION, "env_id": spec.env_id,
                                     "spec_hash": spec.spec_hash(), "spec": spec.mdp_dict()})
        self.leaves: list[Leaf] = []
        if self.path.exists():
            for n, line in enumerate(self.path.read_text().splitlines()):
                if not line.strip():
                    continue
                try:
                    self.leaves.append(Leaf(**json.loads(line)))
                except (ValueError, TypeError) as exc:  # a line cut short by a crash is the last one
                    log.warning("ignoring unreadable line %d of %s (%s)", n + 1, self.path, exc)

    def done(self) -> set[tuple[int, str, int | None]]:
        return {(leaf.seed, leaf.key, leaf.trial) for leaf in self.leaves}

    def add(self, leaf: Leaf) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(dataclasses.asdict(leaf)) + "\n")
            f.flush()
        self.leaves.append(leaf)


def run_audit(cfg: AuditConfig, launcher: Launcher | None = None, root: Path | None = None) -> Path:
    """Run (or resume) the audit and write its report; returns the result directory.

    Raises:
        ConfigError: an unknown env, an empty grid, held-out seeds that collection used, or results cached
            for another spec hash.
    """
    from mixagent.data.sources import load_space
    from mixagent.env.backends import make_backend
    from mixagent.env.references import get_reference

    problems = cfg.check()
    if problems:
        raise ConfigError("audit", problems)
    spec_path = resolve_env(cfg.env)
    spec = load_spec(spec_path)
    used = _collection_seeds(spec.spec_hash()) & {episode_seed_of(s) for s in cfg.seeds}
    if used:
        raise ConfigError("audit", [f"held-out seeds {sorted(s for s in cfg.seeds if episode_seed_of(s) in used)} "
                                    f"were used by trajectory collection on {spec.env_id}; pick other seeds"])
    clash = set(cfg.seeds) & set(spec.reference_seeds)
    if clash:
        raise ConfigError("audit", [f"seeds {sorted(clash)} are the spec's reference_seeds; pick other seeds"])
    schedules = build_schedules(cfg, spec)
    store = AuditStore(Path(root or REPO_ROOT / cfg.out), spec)
    space = load_space(spec.space_path())
    # the base model's evaluation and the reference runs (once per spec hash; the normalised rewards)
    backend = make_backend(spec, space)
    start = backend.reset(episode_seed_of(cfg.seeds[0]))
    if not (store.dir / "start.json").exists():
        atomic_write_json(store.dir / "start.json", {"eval": start.to_json(), "items": _items_json(backend)})
    reference = get_reference(spec, backend, space)
    natural = backend.natural
    del backend
    done = store.done()
    by_first: dict[tuple[int, bytes], list[Schedule]] = {}
    for seed in cfg.seeds:
        for s in schedules:
            if (seed, s.key, None) not in done:
                by_first.setdefault((seed, s.weights(space, natural, 0).round(10).tobytes()), []).append(s)
    tasks = [(seed, group) for (seed, _), group in by_first.items()]
    _run_tasks(cfg, spec_path, tasks, store, launcher, spec, "audit rows")
    if cfg.oracle_trials:
        _oracle(cfg, spec, spec_path, space, start, reference, store, launcher)
    make_report(store, cfg, spec, space, natural, start, reference, schedules)
    return store.dir


def _run_tasks(cfg: AuditConfig, spec_path: Path, tasks: list[tuple], store: AuditStore, launcher: Launcher | None,
               spec: EnvSpec, desc: str) -> None:
    if not tasks:
        return
    own = launcher is None
    if own:
        launcher, threads = _make_launcher(cfg, len(tasks))
    else:
        threads = spec.optim.threads
    segments = sum(_tree_segments(spec, group) for _, group, *_ in tasks)
    try:
        with tqdm(total=sum(len(g) for _, g, *_ in tasks), desc=f"{desc} ({segments} segments)", unit="row") as bar:
            for event in launcher.events(_Setup(str(spec_path), (), threads), tasks):
                if isinstance(event, Ready):
                    if event.identity.get("spec_hash") != spec.spec_hash():
                        raise ConfigError("audit", [f"a worker built spec hash {event.identity.get('spec_hash')}, "
                                                    f"the driver {spec.spec_hash()}"])
                    continue
                store.add(event)
                bar.update()
    finally:
        if own:
            launcher.close()


def _tree_segments(spec: EnvSpec, group: list[Schedule]) -> int:
    """Segments a prefix tree over ``group`` trains (shared prefixes once)."""
    prefixes = {tuple(s.rhos[: t + 1]) if s.rhos else (s.mixture, t) for s in group for t in range(spec.steps)}
    return len(prefixes)


# --- the oracle ---------------------------------------------------------------------------------------


def _oracle(cfg: AuditConfig, spec: EnvSpec, spec_path: Path, space: DomainSpace, start: EvalResult,
            reference: Reference, store: AuditStore, launcher: Launcher | None) -> None:
    """TPE over per-step rho on the tuning seeds, in batches of ``workers`` trials; then the best trial's
    schedule on the held-out seeds. Trials already in the store are told to the study first (resume)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    T, r = spec.steps, spec.reward

    def trials() -> dict[int, tuple[tuple[float, ...], float]]:
        by_trial: dict[int, list[Leaf]] = {}
        for leaf in store.leaves:
            if leaf.trial is not None and leaf.seed in cfg.tune_seeds:
                by_trial.setdefault(leaf.trial, []).append(leaf)
        return {n: (_rhos_of(leaves[0].key), float(np.mean([
                    balanced_score(r.name, r.lam, start, EvalResult.from_json(leaf.eval), space, reference)
                    for leaf in leaves])))
                for n, leaves in by_trial.items() if {leaf.seed for leaf in leaves} >= set(cfg.tune_seeds)}

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=cfg.oracle_seed))
    dists = {f"rho{t}": optuna.distributions.FloatDistribution(0.0, 1.0) for t in range(T)}
    for number, (rhos, value) in sorted(trials().items()):
        study.add_trial(optuna.trial.create_trial(params={f"rho{t}": x for t, x in enumerate(rhos)},
                                                  distributions=dists, value=value))
    if not study.trials:
        study.enqueue_trial({f"rho{t}": 0.75 for t in range(T)})  # a fixed, untuned start
    batch = max(1, cfg.workers or min(cpu_count(), 2))
    done = len(trials())
    with tqdm(total=cfg.oracle_trials, initial=min(done, cfg.oracle_trials), desc="oracle trials", unit="trial") as bar:
        while done < cfg.oracle_trials:
            asked = [study.ask(dists) for _ in range(min(batch, cfg.oracle_trials - done))]
            # stored trial ids continue after every id on disk (a batch cut short leaves ids that optuna's
            # renumbering on resume would reuse)
            first = 1 + max((leaf.trial for leaf in store.leaves if leaf.trial is not None), default=-1)
            tasks = []
            for n, trial in enumerate(asked):
                rhos = tuple(round(trial.params[f"rho{t}"], 4) for t in range(T))
                tasks += [(seed, [Schedule(f"oracle trial {first + n}", "oracle", rhos)], first + n)
                          for seed in cfg.tune_seeds]
            _run_tasks(cfg, spec_path, tasks, store, launcher, spec, "oracle batch")
            found = trials()
            for n, trial in enumerate(asked):
                study.tell(trial, found[first + n][1])
                bar.update()
            done += len(asked)
    found = trials()
    number, (rhos, value) = max(found.items(), key=lambda kv: kv[1][1])
    sched = Schedule("oracle", "oracle", rhos)
    atomic_write_json(store.dir / "oracle.json", {
        "key": sched.key, "rhos": list(rhos), "trial": number, "tune_value": value, "trials": len(found),
        "tune_seeds": list(cfg.tune_seeds), "sampler": f"optuna {optuna.__version__} TPESampler(seed={cfg.oracle_seed})",
        "reward": spec.reward.name,
        "budget": f"{len(found)} trials x {len(cfg.tune_seeds)} tuning seed(s) = {len(found) * len(cfg.tune_seeds)} "
                  f"episodes, then {len(cfg.seeds)} held-out episodes"})
    done = store.done()
    tasks = [(seed, [sched]) for seed in cfg.seeds if (seed, sched.key, None) not in done]
    _run_tasks(cfg, spec_path, tasks, store, launcher, spec, "oracle on held-out seeds")


def _rhos_of(key: str) -> tuple[float, ...]:
    return tuple(float(x) for x in key.removeprefix("rho:").split(","))


# --- the report ---------------------------------------------------------------------------------------

BOOTSTRAP = 500  # resamples of evaluation windows and items


def report_rewards(spec: EnvSpec) -> list[str]:
    """The spec's reward first, then every normalised and relative reward."""
    names = [spec.reward.name] + [n for n in (*NORMALISED_REWARDS, "balanced_bpb", "balanced") if n in REWARDS]
    return list(dict.fromkeys(names))


def _resampled(ev: EvalResult, items: dict, idx: dict, space: DomainSpace) -> EvalResult:
    """``ev`` recomputed from its per-item values on resampled indices ``idx`` (windows per domain, items
    per field)."""
    nll, nbytes, owner = (np.asarray(x) for x in items["windows"])
    bpb = {}
    for d, name in enumerate(space.names):
        w = idx["windows"][d]
        bpb[name] = float(nll[w].sum() / math.log(2) / nbytes[w].sum())
    scores = {}
    for field in ("source", "target"):
        vals = [np.asarray(x) for x in items[field]]
        i = idx[field]
        scores[field] = float(np.exp(vals[0][i].sum() / vals[1][i].sum()) if len(vals) == 2 else vals[0][i].mean())
    return EvalResult(bpb, scores, dict(scores), ev.tokens_seen, ev.eval_tokens)


def _bootstrap_indices(items: dict, space: DomainSpace, n: int, seed: int = 0) -> list[dict]:
    rng = np.random.Generator(np.random.PCG64(seed))
    owner = np.asarray(items["windows"][2]).astype(int)
    per_domain = [np.flatnonzero(owner == d) for d in range(space.k)]
    sizes = {f: len(items[f][0]) for f in ("source", "target")}
    return [{"windows": [rng.choice(w, len(w)) for w in per_domain],
             **{f: rng.integers(0, m, m) for f, m in sizes.items()}} for _ in range(n)]


def make_report(store: AuditStore, cfg: AuditConfig, spec: EnvSpec, space: DomainSpace, natural: np.ndarray,
                start: EvalResult, reference: Reference, schedules: list[Schedule]) -> dict:
    """Build ``report.json``, ``report.md`` and the plots from the stored leaves; returns the report."""
    oracle_meta = json.loads((store.dir / "oracle.json").read_text()) if (store.dir / "oracle.json").exists() else None
    rows = list(schedules)
    if oracle_meta:
        rows.append(Schedule(f"oracle ({oracle_meta['trials']} TPE trials)", "oracle", tuple(oracle_meta["rhos"])))
    leaves = {(leaf.seed, leaf.key): leaf for leaf in store.leaves if leaf.trial is None}
    rewards = report_rewards(spec)
    lam = spec.reward.lam
    table = []
    for row in rows:
        got = [leaves[(seed, row.key)] for seed in cfg.seeds if (seed, row.key) in leaves]
        if not got:
            continue
        evals = [EvalResult.from_json(leaf.eval) for leaf in got]
        entry = {"label": row.label, "family": row.family, "key": row.key, "rhos": list(row.rhos),
                 "mixture": row.mixture, "mean_rho": row.mean_rho(space, natural), "seeds": [leaf.seed for leaf in got]}
        for field in ("source", "target"):
            entry[f"{field}_bpb"] = float(np.mean([e.field_bpb(space, field) for e in evals]))
            entry[f"{field}_score"] = float(np.mean([e.scores[field] for e in evals]))
            entry[f"{field}_norm_bpb"] = float(np.mean([reference.normalise("bpb", field, e.field_bpb(space, field))
                                                       for e in evals]))
        entry["rewards"] = {}
        for name in rewards:
            vals = [balanced_score(name, lam, start, e, space, reference) for e in evals]
            entry["rewards"][name] = {"values": vals, "mean": float(np.mean(vals)),
                                      "std": float(np.std(vals, ddof=1)) if len(vals) > 1 else float("nan")}
        table.append(entry)
    summary = {name: _summary(table, name, len(cfg.seeds)) for name in rewards}
    noise = _item_noise(table, summary[spec.reward.name], leaves, cfg, space, start, reference, store, lam,
                        spec.reward.name)
    report = {"env_id": spec.env_id, "spec_hash": spec.spec_hash(), "reward": spec.reward.name, "lam": lam,
              "seeds": list(cfg.seeds), "tune_seeds": list(cfg.tune_seeds), "oracle": oracle_meta,
              "reference": reference.to_json(), "start": start.to_json(), "summary": summary,
              "item_noise": noise, "rows": table, "episode_seconds": _episode_seconds(store, spec),
              "config": to_dict(cfg)}
    atomic_write_json(store.dir / "report.json", _finite(report))
    text = format_report(report)
    atomic_write(store.dir / "report.md", lambda tmp: tmp.write_text(text))
    plot_report(report, spec, store.dir)
    return report


def _finite(x):
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite(v) for v in x]
    return x


def _summary(table: list[dict], name: str, n_seeds: int) -> dict:
    """Best static, best schedule, oracle and their gaps in pooled seed standard deviations."""
    full = [r for r in table if len(r["seeds"]) == n_seeds]
    variances = [r["rewards"][name]["std"] ** 2 for r in full if len(r["seeds"]) > 1]
    pooled = float(np.sqrt(np.mean(variances))) if variances else float("nan")

    def best(families):
        cands = [r for r in full if r["family"] in families]
        return max(cands, key=lambda r: r["rewards"][name]["mean"]) if cands else None

    static = [r for r in full if r["family"] == "static"]
    b_static, b_sched, oracle = best(("static",)), best(SCHEDULE_FAMILIES), best(("oracle",))
    out = {"pooled_std": pooled, "rows": len(full)}
    for key, row in (("best_static", b_static), ("best_schedule", b_sched), ("oracle", oracle)):
        if row:
            out[key] = {"label": row["label"], "mean": row["rewards"][name]["mean"], "std": row["rewards"][name]["std"]}
    if b_static:
        m = b_static["rewards"][name]["mean"]
        for key in ("best_schedule", "oracle"):
            if key in out:
                out[key]["gap"] = out[key]["mean"] - m
                out[key]["gap_in_std"] = (out[key]["mean"] - m) / pooled if pooled > 0 else float("nan")
        means = [r["rewards"][name]["mean"] for r in static]
        out["static_spread"] = max(means) - min(means)
        out["static_spread_in_std"] = out["static_spread"] / pooled if pooled > 0 else float("nan")
    if b_sched and b_static:
        out["bar_met"] = bool(out["best_schedule"]["gap_in_std"] >= 3 and out["static_spread_in_std"] >= 5)
    for field in ("source", "target"):
        key = f"{field}_norm_bpb"
        top = max(full, key=lambda r: r[key]) if full else None
        low = min(full, key=lambda r: r[key]) if full else None
        if top:
            out[f"{field}_extremes"] = {"best": [top["label"], top[key]], "worst": [low["label"], low[key]]}
    return out


def _item_noise(table, summary, leaves, cfg, space, start, reference, store, lam, name) -> dict:
    """Bootstrap over evaluation windows and benchmark items: the std of the final score of the best
    static row (mean over seeds of its per-seed std) and of its paired gap to the best schedule."""
    if "best_static" not in summary:
        return {}
    start_items = json.loads((store.dir / "start.json").read_text())["items"]
    if not start_items:
        return {}
    by_label = {r["label"]: r for r in table}
    static = by_label[summary["best_static"]["label"]]
    sched = by_label.get(summary.get("best_schedule", {}).get("label"))
    idx = _bootstrap_indices(start_items, space, BOOTSTRAP)
    start_b = [_resampled(start, start_items, i, space) for i in idx]
    score_sd, gap_sd = [], []
    for seed in static["seeds"]:
        a = leaves[(seed, static["key"])]
        va = np.array([balanced_score(name, lam, s0, _resampled(EvalResult.from_json(a.eval), a.items, i, space), space,
                                      reference) for s0, i in zip(start_b, idx)])
        score_sd.append(va.std(ddof=1))
        if sched and (seed, sched["key"]) in leaves:
            b = leaves[(seed, sched["key"])]
            vb = np.array([balanced_score(name, lam, s0, _resampled(EvalResult.from_json(b.eval), b.items, i, space),
                                          space, reference) for s0, i in zip(start_b, idx)])
            gap_sd.append((vb - va).std(ddof=1))
    out = {"resamples": BOOTSTRAP, "score_std": float(np.mean(score_sd)),
           "windows_per_domain": int(np.bincount(np.asarray(start_items["windows"][2]).astype(int)).min()),
           "items": {f: len(start_items[f][0]) for f in ("source", "target")}}
    if gap_sd:
        out["gap_std"] = float(np.mean(gap_sd))
        gap = summary["best_schedule"].get("gap", float("nan"))
        out["gap_over_noise"] = gap / out["gap_std"] if out["gap_std"] > 0 else float("nan")
    return out


def _episode_seconds(store: AuditStore, spec: EnvSpec) -> float | None:
    """Median wall time of a whole static episode on one seed (its tree walk has no forks)."""
    times = [leaf.seconds for leaf in store.leaves if leaf.trial is not None]
    return float(np.median(times)) if times else None


def _fmt(x: float | None, digits: int = 4) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:+.{digits}f}"


def format_report(report: dict) -> str:
    """The report as markdown: summary per reward, item noise, and every row."""
    name = report["reward"]
    lines = [f"# Headroom audit: {report['env_id']} (spec {report['spec_hash']})", "",
             f"Held-out seeds {report['seeds']}; reward `{name}` (lam {report['lam']}); oracle tuned on seeds "
             f"{report['tune_seeds']}" + (f" ({report['oracle']['budget']})" if report["oracle"] else "") + ".", "",
             "| reward | pooled seed std | best static | best schedule | gap (std) | oracle | gap (std) | static spread (std) | bar met |",
             "|---|---:|---|---|---:|---|---:|---:|---|"]
    for r, s in report["summary"].items():
        bs, sc, orc = s.get("best_static", {}), s.get("best_schedule", {}), s.get("oracle", {})
        lines.append(
            f"| `{r}` | {s['pooled_std']:.4f} | {bs.get('label', '-')} {_fmt(bs.get('mean'))} | {sc.get('label', '-')} "
            f"{_fmt(sc.get('mean'))} | {_fmt(sc.get('gap_in_std'), 1)} | {orc.get('label', '-')} {_fmt(orc.get('mean'))} | "
            f"{_fmt(orc.get('gap_in_std'), 1)} | {_fmt(s.get('static_spread_in_std'), 1)} | "
            f"{'yes' if s.get('bar_met') else 'no'} |")
    noise = report["item_noise"]
    if noise:
        lines += ["", f"Item noise of `{name}` ({noise['resamples']} bootstrap resamples over {noise['windows_per_domain']}+ "
                      f"windows per domain and {noise['items']} benchmark items): final score std "
                      f"{noise['score_std']:.4f}" + (f"; paired gap (best schedule - best static) std "
                                                      f"{noise['gap_std']:.4f}, gap / noise "
                                                      f"{_fmt(noise.get('gap_over_noise'), 1)}" if "gap_std" in noise else "")
                      + "."]
    s = report["summary"][name]
    for field in ("source", "target"):
        if f"{field}_extremes" in s:
            e = s[f"{field}_extremes"]
            lines.append(f"- {field} field (normalised bits per byte): best {e['best'][0]} {e['best'][1]:+.3f}, "
                         f"worst {e['worst'][0]} {e['worst'][1]:+.3f}")
    lines += ["", f"| row | family | mean rho | source bpb | target bpb | target score | s_source | s_target | `{name}` |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in sorted(report["rows"], key=lambda r: -r["rewards"][name]["mean"]):
        v = r["rewards"][name]
        sd = "" if v["std"] is None or not math.isfinite(v["std"]) else f" ± {v['std']:.4f}"
        lines.append(f"| {r['label']} | {r['family']} | {r['mean_rho']:.2f} | {r['source_bpb']:.4f} | {r['target_bpb']:.4f} "
                     f"| {r['target_score']:.4f} | {r['source_norm_bpb']:+.3f} | {r['target_norm_bpb']:+.3f} | "
                     f"{v['mean']:+.4f}{sd} |")
    return "\n".join(lines) + "\n"


def plot_report(report: dict, spec: EnvSpec, out: Path) -> None:
    """``static.png`` (score vs rho, per-field normalised bits per byte) and ``schedules.png`` (the best
    rows' replay share per step, with the learning rate)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mixagent.env.proxy import lr_at

    name = report["reward"]
    rows = report["rows"]
    static = sorted([r for r in rows if r["family"] == "static" and not r["mixture"]], key=lambda r: r["mean_rho"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    ax = axes[0]
    ax.errorbar([r["mean_rho"] for r in static], [r["rewards"][name]["mean"] for r in static],
                yerr=[r["rewards"][name]["std"] or 0 for r in static], marker="o", capsize=3, label="static rho")
    s = report["summary"][name]
    for key, style in (("best_schedule", "--"), ("oracle", ":")):
        if key in s:
            ax.axhline(s[key]["mean"], ls=style, color="C3" if key == "oracle" else "C2",
                       label=f"{s[key]['label']} ({s[key]['mean']:+.3f})")
    for r in rows:
        if r["mixture"]:
            ax.scatter([r["mean_rho"]], [r["rewards"][name]["mean"]], marker="x", s=50, zorder=3, label=r["label"])
    ax.set_xlabel("replay share rho (source field)")
    ax.set_ylabel(f"final {name} (mean ± std over {len(report['seeds'])} seeds)")
    ax.set_title(f"{report['env_id']}: static mixtures vs schedules")
    ax.legend(fontsize=7)
    ax = axes[1]
    for field, c in (("source", "C0"), ("target", "C1")):
        ax.plot([r["mean_rho"] for r in static], [r[f"{field}_norm_bpb"] for r in static], marker="o", color=c,
                label=f"{field} (static)")
        sched = [r for r in rows if r["family"] in SCHEDULE_FAMILIES + ("oracle",)]
        ax.scatter([r["mean_rho"] for r in sched], [r[f"{field}_norm_bpb"] for r in sched], color=c, marker=".",
                   alpha=0.5, label=f"{field} (schedules)")
    ax.set_xlabel("mean replay share rho")
    ax.set_ylabel("normalised bits-per-byte score s_f")
    ax.set_title("per field: 1 = the field's best reference run")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "static.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    by_label = {r["label"]: r for r in rows}
    T = spec.steps
    for key, c in (("best_static", "C0"), ("best_schedule", "C2"), ("oracle", "C3")):
        if key in s:
            r = by_label[s[key]["label"]]
            rhos = r["rhos"] if r["rhos"] else [r["mean_rho"]] * T
            ax.step(range(T + 1), list(rhos) + [rhos[-1]], where="post", color=c, lw=2,
                    label=f"{key.replace('_', ' ')}: {r['label']} ({s[key]['mean']:+.3f})")
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("re-weighting step")
    ax.set_ylabel("replay share rho (source field)")
    lr_ax = ax.twinx()
    steps = np.linspace(0, T, 200)
    lr_ax.plot(steps, [lr_at(min(int(x * 100), 100 * T - 1), 100 * T, spec.optim) / spec.optim.lr for x in steps],
               color="grey", alpha=0.5, ls="--")
    lr_ax.set_ylabel("learning rate / peak (dashed)")
    ax.set_title(f"{report['env_id']}: mixture over the run")
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(out / "schedules.png", dpi=110)
    plt.close(fig)
