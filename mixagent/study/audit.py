"""The headroom audit (``mixagent audit``): does any mixing *schedule* beat the best
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
leaves and oracle trials), and the report (``report.json``, ``report.md``, ``*.png``;
``mixagent.study.audit_report``) is rebuilt from them.

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
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mixagent.config import is_number, to_dict
from mixagent.domains import DomainSpace
from mixagent.env.evaluation import EvalResult
from mixagent.env.rewards import Reference, balanced_score
from mixagent.env.spec import EnvSpec, load_spec
from mixagent.errors import ConfigError
from mixagent.paths import REPO_ROOT, atomic_write_json
from mixagent.rollout.engine import launch
from mixagent.rollout.launchers import LAUNCHERS, Launcher, cpu_count
from mixagent.rollout.record import EpisodeRecord
from mixagent.rollout.runner import Episode, RunnerSetup, ScheduleTree
from mixagent.rollout.schedules import Schedule
from mixagent.rollout.seeds import collection_seeds, episode_seed_of, resolve_env, run_key
from mixagent.rollout.siblings import spec_head
from mixagent.rollout.tree import item_values

__all__ = ["AuditConfig", "AuditStore", "AuditRun", "build_schedules", "run_audit", "decay_step", "FAMILIES",
           "SCHEDULE_FAMILIES"]

log = logging.getLogger(__name__)
FAMILIES = ("static", "two_phase", "decay", "replay_first", "oracle")
SCHEDULE_FAMILIES = ("two_phase", "decay", "replay_first")
RESULTS_VERSION = 1


@dataclasses.dataclass(frozen=True)
class AuditConfig:
    """What the audit runs.

    Args:
        env: an env spec file (``envs/*.yaml``) or id (``mixagent/<name>-v<version>``).
        env_overrides: ``key=value`` overrides of the spec (a design variant: its own spec hash, so its own
            results directory and reference runs), e.g. ``["optim.decay_fraction=0.5"]``.
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
        out: output root, relative to the repository (``audits/``, committed: audits are expensive).
    """

    env: str = "envs/math-cpt.yaml"
    env_overrides: tuple[str, ...] = ()
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
    out: str = "audits"

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


def build_schedules(cfg: AuditConfig, spec: EnvSpec) -> list[Schedule]:
    """Every non-oracle row for ``spec``'s horizon (duplicates dropped, first label kept).

    Raises:
        ConfigError: a switch step outside ``1..T-1``.
    """
    T = spec.steps
    problems = [f"{name}: switch steps must be in 1..{T - 1} for a {T}-step env, got {bad}"
                for name in ("two_phase_switches", "replay_first_steps")
                if (bad := [s for s in getattr(cfg, name) if not 1 <= s < T])]
    if problems:
        raise ConfigError("audit", problems)
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
    base = spec.base_config()
    per = max(1, spec.segment_tokens // (spec.optim.micro_batch * base.seq_len))
    total = per * spec.steps
    first = total - max(1, round(total * spec.optim.decay_fraction))  # lr_at's first decaying optimizer step
    return min(spec.steps - 1, max(1, first // per))


# --- the runner: one per worker, a prefix tree of schedules per task -----------------------------------


# --- the driver ---------------------------------------------------------------------------------------


class AuditStore:
    """The audit's one writer: ``results.jsonl`` (append-only, one row per line: ``seed``, ``key``, the final
    ``eval``, per-item ``items``, ``seconds``, oracle ``trial``) under the spec hash. An
    :class:`~mixagent.rollout.record.EpisodeStore`: a row is an :class:`EpisodeRecord` evaluated once, at its
    end (its mixtures follow from its key; the start evaluation is the audit's shared ``start.json``)."""

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
            atomic_write_json(head, {"version": RESULTS_VERSION, **spec_head(spec)})  # lam siblings read it
        self.base = ""  # the base checkpoint id the driver's backend loaded
        self.rows: list[EpisodeRecord] = []
        if self.path.exists():
            for n, line in enumerate(self.path.read_text().splitlines()):
                if not line.strip():
                    continue
                try:
                    self.rows.append(_row_record(json.loads(line)))
                except (ValueError, TypeError, KeyError) as exc:  # a line cut short by a crash is the last one
                    log.warning("ignoring unreadable line %d of %s (%s)", n + 1, self.path, exc)

    ADOPTED = ("reference.json", "anchors.json")  # lam-free, beside the grid rows of results.jsonl

    def adopt_lam_sibling(self, spec: EnvSpec, keys: set[str], base: str, start: dict) -> Path | None:
        """Start this store, where nothing has run yet, from an audit of the same runs at another lam (a lam
        sibling, :mod:`mixagent.rollout.siblings`: the grid's schedules are open loop, a row is a raw
        evaluation): its rows of the grid ``keys`` (never its oracle's, which its reward chose) and its
        reference and anchor runs (lam-free extremes, relabelled with this spec's hash) where this store has
        none; recorded in ``adopted.json``. Only a sibling that started from this base checkpoint ``base`` with
        this start evaluation ``start`` (:func:`~mixagent.rollout.cache.same_start`) counts; the one with the
        most rows, the first by name among equals. Returns the sibling's directory, or ``None``."""
        from mixagent.rollout.cache import same_start
        from mixagent.rollout.siblings import lam_siblings

        if self.path.exists():
            return None
        found: dict[Path, list[str]] = {}
        for d in lam_siblings(self.dir.parent, spec):
            try:
                head = json.loads((d / "start.json").read_text())
                if head.get("base") != base or not same_start(start, head.get("eval")):
                    continue
                lines = (d / "results.jsonl").read_text().splitlines() if (d / "results.jsonl").is_file() else []
            except (OSError, ValueError, AttributeError):
                continue
            rows = []
            for line in lines:
                try:
                    row = json.loads(line)
                except ValueError:  # a line cut short by a crash (or a writer still appending)
                    continue
                if isinstance(row, dict) and row.get("trial") is None and row.get("key") in keys:
                    rows.append(line)
            found[d] = rows
        if not any(found.values()):
            return None
        src = max(found, key=lambda d: len(found[d]))  # max keeps the first of equals (name order)
        files = []
        for name in self.ADOPTED:
            try:
                d = json.loads((src / name).read_text()) if (src / name).is_file() else None
            except (OSError, ValueError):
                d = None
            if isinstance(d, dict) and d.get("spec_hash") == src.name and not (self.dir / name).is_file():
                atomic_write_json(self.dir / name, {**d, "spec_hash": spec.spec_hash()})
                files.append(name)
        with tempfile.NamedTemporaryFile("w", dir=self.dir, suffix=".tmp", delete=False) as tmp:
            tmp.write("".join(line + "\n" for line in found[src]))
        os.replace(tmp.name, self.path)
        self.rows = [_row_record(json.loads(line)) for line in found[src]]
        files.append("results.jsonl")
        lam = json.loads((src / "spec.json").read_text())["spec"]["reward"]["lam"]
        atomic_write_json(self.dir / "adopted.json", {
            "from": src.name, "lam": lam, "rows": len(found[src]), "files": files,
            "why": "the same runs at another reward.lam (mixagent.rollout.siblings): grid rows, reference and "
                   "anchor runs do not depend on lam"})
        log.info("audit %s adopted %d rows and %s from %s (lam %s)", self.dir, len(found[src]), files, src, lam)
        return src

    def done(self) -> set[tuple[int, str, int | None]]:
        return {(r.seed, r.key, r.extra["trial"]) for r in self.rows}

    def get(self, key: str, seed: int) -> EpisodeRecord | None:
        """The grid row (not an oracle trial) ``key`` on ``seed``, or ``None``."""
        return next((r for r in self.rows if (r.seed, r.key, r.extra["trial"]) == (seed, key, None)), None)

    def put(self, record: EpisodeRecord) -> None:
        """Append one finished row (flushed; a crash leaves at most a cut last line, skipped on reading)."""
        row = {"seed": record.seed, "key": record.key, "eval": record.final, "items": record.extra["items"],
               "seconds": record.extra["seconds"], "trial": record.extra.get("trial")}
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
        self.rows.append(_row_record(row))

    def records(self) -> Iterator[EpisodeRecord]:
        return iter(list(self.rows))


def _row_record(row: dict) -> EpisodeRecord:
    """A ``results.jsonl`` line (format version :data:`RESULTS_VERSION`) as a record."""
    if not isinstance(row["eval"], dict) or not isinstance(row["seed"], int):
        raise TypeError("a row needs an integer seed and an evaluation")
    return EpisodeRecord(str(row["key"]), row["seed"], None, (), row["eval"], None, False,
                         {"items": row["items"], "seconds": row["seconds"], "trial": row.get("trial")})


@dataclasses.dataclass
class AuditRun:
    """A finished (or resumed) audit: what :func:`mixagent.study.audit_report.make_report` reads."""

    store: AuditStore
    cfg: AuditConfig
    spec: EnvSpec
    space: DomainSpace
    natural: np.ndarray
    start: EvalResult
    reference: Reference
    schedules: list[Schedule]

    @property
    def dir(self) -> Path:
        return self.store.dir


RUNTIME_FIELDS = ("workers", "launcher")  # how an audit ran, not what it measured


def _record_config(path: Path, cfg: AuditConfig) -> None:
    """Write ``cfg`` to ``audit.json``, unless the file already records it but for :data:`RUNTIME_FIELDS`: a
    resume with other workers keeps the committed file unchanged."""
    new = json.loads(json.dumps(to_dict(cfg)))  # as read back (lists, not tuples)
    try:
        old = json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):  # unreadable: rewritten, as it always was
        old = None
    def measured(d: dict) -> dict:
        return {k: v for k, v in d.items() if k not in RUNTIME_FIELDS}

    if not (isinstance(old, dict) and measured(old) == measured(new)):
        atomic_write_json(path, new)


def run_audit(cfg: AuditConfig, launcher: Launcher | None = None, root: Path | None = None,
              report_only: bool = False) -> AuditRun:
    """Run (or resume) every row and the oracle; ``make_report(run_audit(cfg))`` writes the report.

    The result directory keeps everything the report needs (the base model's evaluation, the reference
    runs, every leaf), so a committed audit rebuilds its report on a fresh clone with ``report_only``,
    without a model.

    Raises:
        ConfigError: an unknown env, an empty grid, held-out seeds that collection used, results cached
            for another spec hash, or ``report_only`` on a directory without results.
    """
    from mixagent.data.sources import load_space
    from mixagent.env.backends import make_backend
    from mixagent.env.references import get_reference

    problems = cfg.check()
    if problems:
        raise ConfigError("audit", problems)
    spec_path = resolve_env(cfg.env, "audit")
    spec = load_spec(spec_path, cfg.env_overrides)
    out_root = Path(root or REPO_ROOT / cfg.out)
    if report_only:
        return _stored_run(cfg, spec, out_root)
    collected = collection_seeds(spec.spec_hash(), runs=run_key(spec.mdp_dict()))  # under any reward or lam too
    used = collected & (set(cfg.seeds) | set(cfg.tune_seeds))
    if used:
        raise ConfigError("audit", [f"seeds {sorted(used)} were used by trajectory collection on {spec.env_id}; "
                                    f"held-out and tuning seeds must be others"])
    clash = [s for s in (*cfg.seeds, *cfg.tune_seeds) if episode_seed_of(s) in spec.reference_seeds]
    if clash:
        raise ConfigError("audit", [f"seeds {clash} train on the data order of the spec's reference runs "
                                    f"(reference_seeds {list(spec.reference_seeds)}); pick other seeds"])
    schedules = build_schedules(cfg, spec)
    store = AuditStore(out_root, spec)
    _record_config(store.dir / "audit.json", cfg)  # what --report-only rebuilds the report with
    space = load_space(spec.space_path())
    # the base model's evaluation and the reference runs (once per spec hash; the normalised rewards)
    backend = make_backend(spec, space)
    start = backend.reset(episode_seed_of(cfg.seeds[0]))
    natural = backend.natural
    base_id = getattr(backend, "base_id", "")
    store.adopt_lam_sibling(spec, {s.key for s in schedules}, base_id, start.to_json())  # where nothing has run
    head = json.loads((store.dir / "start.json").read_text()) if (store.dir / "start.json").exists() else {}
    if head.get("base") not in (None, base_id):
        raise ConfigError("audit", [f"{store.dir} holds results from base checkpoint {head['base']}; this machine's "
                                    f"is {base_id} (a re-trained base); adopt the committed checkpoint or use "
                                    f"another --out"])
    if "natural" not in head:
        atomic_write_json(store.dir / "start.json", {"eval": start.to_json(), "items": item_values(backend),
                                                     "natural": np.asarray(natural).tolist(), "base": base_id})
    reference = get_reference(spec, backend, space, stored=store.dir / "reference.json")  # a fresh machine adopts it
    atomic_write_json(store.dir / "reference.json", reference.to_json())
    del backend
    done = store.done()
    by_first: dict[tuple[int, bytes], list[Schedule]] = {}
    for seed in cfg.seeds:
        for s in schedules:
            if (seed, s.key, None) not in done:
                by_first.setdefault((seed, s.weights(space, natural, 0).round(10).tobytes()), []).append(s)
    tasks = [ScheduleTree(seed, tuple(group)) for (seed, _), group in by_first.items()]
    store.base = base_id
    _run_tasks(cfg, tasks, store, launcher, spec, "audit rows")
    if cfg.oracle_trials:
        _oracle(cfg, spec, space, start, reference, store, launcher)
    return AuditRun(store, cfg, spec, space, natural, start, reference, schedules)


def _stored_run(cfg: AuditConfig, spec: EnvSpec, out_root: Path) -> AuditRun:
    """A finished audit read back for its report, with the config it was run with (``audit.json``), so a
    report is never rebuilt for other seeds or grids than its rows; writes nothing.

    Raises:
        ConfigError: no finished audit of this spec under ``out_root``.
    """
    from mixagent.config import from_dict
    from mixagent.data.sources import load_space

    where = out_root / f"{spec.name}-v{spec.version}" / spec.spec_hash()
    if not all((where / f).exists() for f in ("start.json", "reference.json", "results.jsonl", "audit.json")):
        raise ConfigError("audit", [f"{where} holds no finished audit of {spec.env_id} (spec {spec.spec_hash()}) to "
                                    f"report on; run it without --report-only"])
    stored = from_dict(AuditConfig, json.loads((where / "audit.json").read_text()), str(where / "audit.json"))
    stored = dataclasses.replace(stored, out=cfg.out)  # the env as recorded: an id or a path name the same spec
    head = json.loads((where / "start.json").read_text())
    reference = Reference.from_json(json.loads((where / "reference.json").read_text()))
    return AuditRun(AuditStore(out_root, spec), stored, spec, load_space(spec.space_path()),
                    np.asarray(head["natural"]), EvalResult.from_json(head["eval"]), reference,
                    build_schedules(stored, spec))


def _run_tasks(cfg: AuditConfig, tasks: list[ScheduleTree], store: AuditStore, launcher: Launcher | None,
               spec: EnvSpec, desc: str) -> None:
    """Run schedule trees on the launchers (``launcher``: one the caller owns, else the config's), storing
    every finished row."""
    if not tasks:
        return
    segments = sum(_tree_segments(spec, list(t.schedules)) for t in tasks)
    # the audit's planning: an explicit `workers` is not capped by the task count
    for event in launch(RunnerSetup(to_dict(spec), spec.optim.threads), tasks, spec.steps,
                        f"{desc} ({segments} segments)", spec.spec_hash(), launcher=launcher or cfg.launcher,
                        workers=cfg.workers, base=store.base, unit="row", cap_workers=False):
        if isinstance(event, Episode):
            store.put(event.record)


def _tree_segments(spec: EnvSpec, group: list[Schedule]) -> int:
    """Segments a prefix tree over ``group`` trains (shared prefixes once)."""
    prefixes = {tuple(s.rhos[: t + 1]) if s.rhos else (s.mixture, t) for s in group for t in range(spec.steps)}
    return len(prefixes)


# --- the oracle ---------------------------------------------------------------------------------------


def _oracle(cfg: AuditConfig, spec: EnvSpec, space: DomainSpace, start: EvalResult,
            reference: Reference, store: AuditStore, launcher: Launcher | None) -> None:
    """TPE over per-step rho on the tuning seeds, in batches of ``workers`` trials; then the best trial's
    schedule on the held-out seeds. Trials already in the store are told to the study first (resume)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    T, r = spec.steps, spec.reward

    def trials() -> dict[int, tuple[tuple[float, ...], float]]:
        by_trial: dict[int, list[EpisodeRecord]] = {}
        for row in store.rows:
            if row.extra["trial"] is not None and row.seed in cfg.tune_seeds:
                by_trial.setdefault(row.extra["trial"], []).append(row)
        return {n: (_rhos_of(rows[0].key), float(np.mean([
                    balanced_score(r.name, r.lam, start, row.final_eval, space, reference) for row in rows])))
                for n, rows in by_trial.items() if {row.seed for row in rows} >= set(cfg.tune_seeds)}

    startup = min(10, max(4, cfg.oracle_trials // 4))  # TPE's random start-up trials (optuna's default is 10)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(
        seed=cfg.oracle_seed, n_startup_trials=startup))
    dists = {f"rho{t}": optuna.distributions.FloatDistribution(0.0, 1.0) for t in range(T)}
    for _, (rhos, value) in sorted(trials().items()):
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
            first = 1 + max((t for row in store.rows if (t := row.extra["trial"]) is not None), default=-1)
            tasks = []
            for n, trial in enumerate(asked):
                rhos = tuple(round(trial.params[f"rho{t}"], 4) for t in range(T))
                tasks += [ScheduleTree(seed, (Schedule(f"oracle trial {first + n}", "oracle", rhos),), first + n)
                          for seed in cfg.tune_seeds]
            _run_tasks(cfg, tasks, store, launcher, spec, "oracle batch")
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
        "tune_seeds": list(cfg.tune_seeds),
        "sampler": f"optuna {optuna.__version__} TPESampler(seed={cfg.oracle_seed}, n_startup_trials={startup})",
        "reward": spec.reward.name,
        "budget": f"{len(found)} trials x {len(cfg.tune_seeds)} tuning seed(s) = {len(found) * len(cfg.tune_seeds)} "
                  f"episodes, then {len(cfg.seeds)} held-out episodes"})
    done = store.done()
    tasks = [ScheduleTree(seed, (sched,)) for seed in cfg.seeds if (seed, sched.key, None) not in done]
    _run_tasks(cfg, tasks, store, launcher, spec, "oracle on held-out seeds")


def _rhos_of(key: str) -> tuple[float, ...]:
    return Schedule.from_key(key).rhos
