"""Reference runs for normalised rewards: source-only and target-only continual pre-training at an
episode's token budget (and the spec's ``reward.anchors``, static mixtures whose results widen the extremes
where target-only is not the target field's best run), run once per env spec hash and cached under
``data/cache/references/<spec hash>.json`` (the extremes of :class:`~mixagent.env.rewards.Reference`).

A committed copy under ``checkpoints/references/<spec hash>.json`` (written when a reference dataset is
packed, from the extremes its rewards were computed with) is adopted when the cache lacks one, so a fresh
clone scores episodes exactly as the dataset did instead of re-running the references on another CPU."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mixagent.domains import FIELDS, DomainSpace, replay_weights
from mixagent.env.backends import ProxyBackend
from mixagent.env.evaluation import EvalResult
from mixagent.env.rewards import ANCHORS_VERSION, MEASURES, Reference, anchor_weights, field_measure
from mixagent.env.spec import EnvSpec, RewardSpec
from mixagent.errors import ConfigError, CorruptArtifactError
from mixagent.paths import REPO_ROOT, atomic_write_json, data_root

__all__ = ["get_reference", "extremes", "widened", "reference_path", "run_static", "commit_reference",
           "from_audits", "audits_of", "REFERENCE_VERSION", "COMMITTED_REFERENCE_DIR"]

log = logging.getLogger(__name__)
REFERENCE_VERSION = 1
COMMITTED_REFERENCE_DIR = REPO_ROOT / "checkpoints" / "references"


def reference_path(spec_hash: str, root: Path | None = None) -> Path:
    return (root or data_root()) / "cache" / "references" / f"{spec_hash}.json"


def run_static(backend: ProxyBackend, weights: np.ndarray, steps: int, seed: int) -> EvalResult:
    """One episode under fixed ``weights`` ``(K,)``, evaluated once at its end."""
    backend.reset(seed)
    for t in range(steps):
        stats = backend.train(weights, t)
        if stats.nonfinite:
            raise ConfigError("reference runs", [f"a reference run diverged (NaN/Inf loss) at step {t}; lower "
                                                 f"optim.lr"])
    return backend.evaluate()


def _load(path: Path, spec_hash: str, base_id: str, committed: bool = False) -> Reference:
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CorruptArtifactError(f"reference runs {path} are unreadable ({exc}); delete the file to rerun them") \
            from None
    if d.get("spec_hash") != spec_hash:
        raise ConfigError(str(path), [f"reference runs were cached for spec hash {d.get('spec_hash')!r}, this env's "
                                      f"is {spec_hash!r}; delete the file to rerun them for this spec"])
    if d.get("base") not in (None, base_id):
        fix = ("restore the committed base checkpoint (checkpoints/base/) the dataset was collected from"
               if committed else "delete the file to rerun them")
        raise ConfigError(str(path), [f"reference runs were made from base checkpoint {d.get('base')}, this env's is "
                                      f"{base_id} (a re-trained base); {fix}"])
    if d.get("version") != REFERENCE_VERSION:
        raise ConfigError(str(path), [f"reference format {d.get('version')!r}, expected {REFERENCE_VERSION}; delete "
                                      f"the file to rerun them"])
    return Reference.from_json(d)


def _load_stored(path: Path, spec_hash: str) -> Reference:
    """An audit's ``reference.json`` (:meth:`Reference.to_json`, no format or base: its audit checks the base)."""
    try:
        ref = Reference.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CorruptArtifactError(f"reference runs {path} are unreadable ({exc}); delete the file to rerun them") \
            from None
    if ref.spec_hash != spec_hash:
        raise ConfigError(str(path), [f"reference runs were stored for spec hash {ref.spec_hash!r}, this env's is "
                                      f"{spec_hash!r}; delete the file to rerun them for this spec"])
    return ref


def extremes(runs: dict[str, list[EvalResult]], space: DomainSpace, anchors: tuple[str, ...] = ()
             ) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """The extremes ``(best, worst)``, each ``{measure: {field: value}}``, of reference runs ``{name: [EvalResult
    per reference seed]}`` (averaged over seeds; lower bits per byte, higher scores are better).

    Without ``anchors``, a field's best is the run spending everything on it and its worst the run spending
    nothing on it (an inverted pair is then refused by :class:`~mixagent.env.rewards.Reference`). With
    ``anchors``, both are the best and the worst of *all* the runs: with very scarce unique target data
    target-only can be the target field's worst run (at 16k tokens it repeats them 32 times and ends above
    source-only), and the scale stays defined.
    """
    pair = {name: _means(runs[name], space) for name in ("source_only", "target_only")}
    best = {m: {f: pair[f"{f}_only"][m][f] for f in FIELDS} for m in MEASURES}
    worst = {m: {f: pair["target_only" if f == "source" else "source_only"][m][f] for f in FIELDS} for m in MEASURES}
    return _widen(best, worst, [_means(runs[a], space) for a in anchors]) if anchors else (best, worst)


def _means(runs: list[EvalResult], space: DomainSpace) -> dict[str, dict[str, float]]:
    """``{measure: {field: mean over runs}}``."""
    return {m: {f: float(np.mean([field_measure(m, r, space, f) for r in runs])) for f in FIELDS} for m in MEASURES}


def _widen(best: dict[str, dict[str, float]], worst: dict[str, dict[str, float]],
           others: list[dict[str, dict[str, float]]]) -> tuple[dict, dict]:
    """The best and the worst per measure and field of ``best``, ``worst`` and each of ``others`` (lower bits
    per byte, higher scores are better)."""
    wide_best: dict[str, dict[str, float]] = {m: {} for m in MEASURES}
    wide_worst: dict[str, dict[str, float]] = {m: {} for m in MEASURES}
    for m in MEASURES:
        pick_best, pick_worst = (min, max) if m == "bpb" else (max, min)
        for f in FIELDS:
            values = [best[m][f], worst[m][f], *(o[m][f] for o in others)]
            wide_best[m][f], wide_worst[m][f] = pick_best(values), pick_worst(values)
    return wide_best, wide_worst


def widened(reference: Reference, anchor_runs: dict[str, list[EvalResult]], space: DomainSpace) -> Reference:
    """``reference`` (a pair's extremes, no anchors) with its extremes widened by ``anchor_runs`` (``{anchor:
    [EvalResult per reference seed]}``): what :func:`extremes` with those anchors gives, from the pair's
    recorded extremes instead of its raw runs (without anchors a field's best is the run spending everything
    on it and its worst the other; both values are kept). Rescores results made on the pair's scale on the
    anchored one without re-running the pair.

    Raises:
        ConfigError: a zero range (:class:`~mixagent.env.rewards.Reference`).
    """
    if not anchor_runs:  # as extremes() without anchors: the pair's own
        return reference
    best, worst = _widen(reference.best, reference.worst, [_means(runs, space) for runs in anchor_runs.values()])
    return Reference(best, worst, reference.spec_hash, reference.seeds)


def audits_of(spec: EnvSpec, audits: Path, base_id: str) -> Iterator[tuple[Path, dict]]:
    """Each audit directory under ``audits`` (with ``spec.json`` and ``start.json``) that ran ``spec``'s runs,
    with its ``spec.json`` record: the audit's spec with ``spec``'s reward has the audit's hash (the same runs,
    base config, space and reference seeds: the reward changes no run), its reward has no anchors (an anchored
    audit's reference is not a pair), and it ran from the base checkpoint ``base_id`` (the hash covers the base's
    config, not its weights). An unreadable audit is logged and skipped."""
    import dataclasses

    root = Path(audits)
    for d in sorted(p for p in root.iterdir() if (p / "spec.json").is_file()) if root.is_dir() else ():
        try:
            record = json.loads((d / "spec.json").read_text())
            reward = RewardSpec(**record["spec"]["reward"])
            if reward.anchors or dataclasses.replace(spec, reward=reward).spec_hash() != record["spec_hash"]:
                continue
            if json.loads((d / "start.json").read_text()).get("base") != base_id:
                log.info("audit %s ran from another base checkpoint than %s: its runs are not adopted", d, base_id)
                continue
        except (OSError, ValueError, KeyError, TypeError, ConfigError) as exc:
            log.warning("audit %s is unreadable (%s): skipped", d, exc)
            continue
        yield d, record


def from_audits(spec: EnvSpec, audits: Path, space: DomainSpace, base_id: str) -> Reference | None:
    """``spec``'s extremes from an audit of the same runs under ``audits`` (a directory of audit directories,
    e.g. an oracle table's ``tuning/<suite>/``; each with ``spec.json``, ``start.json`` and ``reference.json``,
    and ``anchors.json`` where ``spec.reward.anchors`` are set): the audit's reference pair :func:`widened` by
    its anchor runs, stamped with ``spec``'s hash, so a collection in a setting the table already ran skips
    its reference and anchor runs. Audits match as in :func:`audits_of` (``base_id``: a backend's). ``None``
    where no audit matches or it lacks one of the anchors' runs; an unreadable audit is logged and skipped.
    Equal to running them up to the thread count's rounding (7 significant digits: checked on a committed
    setting)."""
    target = spec.spec_hash()
    for d, record in audits_of(spec, audits, base_id):
        try:
            pair = _load_stored(d / "reference.json", record["spec_hash"])
            runs: dict[str, list[EvalResult]] = {}
            if spec.reward.anchors:
                stored = json.loads((d / "anchors.json").read_text()) if (d / "anchors.json").is_file() else {}
                if (stored.get("version"), stored.get("spec_hash")) != (ANCHORS_VERSION, record["spec_hash"]):
                    continue
                runs = {a: [EvalResult.from_json(e) for e in stored["runs"].get(a, [])] for a in spec.reward.anchors}
                if any(len(r) != len(pair.seeds) for r in runs.values()):
                    continue
        except (OSError, ValueError, KeyError, TypeError, ConfigError, CorruptArtifactError) as exc:
            log.warning("audit %s is unreadable (%s): its reference runs are not adopted", d, exc)
            continue
        ref = widened(pair, runs, space)
        log.info("reference runs for %s composed from the audit %s", spec.env_id, d)
        return Reference(ref.best, ref.worst, target, pair.seeds)
    return None


def get_reference(spec: EnvSpec, backend: ProxyBackend, space: DomainSpace, root: Path | None = None,
                  committed_dir: Path | None = None, stored: Path | None = None) -> Reference:
    """The spec's reference extremes: a committed copy (``checkpoints/references/``, what a committed
    dataset was scored with) first, else ``stored`` (the ``reference.json`` a committed audit wrote, so a
    fresh machine scores its new rows, and the comparisons beside them, on the scale of its committed rows;
    copied into the cache, replacing a differing one), else the cache, else run (source-only, target-only and
    each of ``spec.reward.anchors``, one episode per reference seed each, with a progress bar;
    :func:`extremes`) and cached atomically.

    Raises:
        ConfigError: a cached or stored file for another spec hash or format, a diverged run, or a zero range.
    """
    spec_hash = spec.spec_hash()
    path = reference_path(spec_hash, root)
    base_id = getattr(backend, "base_id", "")
    committed = (committed_dir or COMMITTED_REFERENCE_DIR) / f"{spec_hash}.json"
    if committed.exists():  # the extremes a committed dataset was scored with win over a local cache
        log.info("reference runs for %s adopted from the committed %s", spec.env_id, committed)
        return _load(committed, spec_hash, base_id, committed=True)
    if stored is not None and stored.is_file():  # an audit's committed extremes win over a local cache
        ref = _load_stored(stored, spec_hash)
        cached = _load(path, spec_hash, base_id) if path.exists() else None
        if cached != ref:
            if cached is not None:
                log.warning("reference runs for %s: the local cache %s differs from %s; replaced by it",
                            spec.env_id, path, stored)
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(path, {"version": REFERENCE_VERSION, "env_id": spec.env_id, "base": base_id,
                                     **ref.to_json(), "adopted_from": str(stored)})
            log.info("reference runs for %s adopted from %s", spec.env_id, stored)
        return ref
    if path.exists():
        return _load(path, spec_hash, base_id)
    mixtures = {"source_only": replay_weights(space, backend.natural, 1.0),
                "target_only": replay_weights(space, backend.natural, 0.0)}
    for a in spec.reward.anchors:  # checked by RewardSpec (anchor_problems)
        mixtures[a] = anchor_weights(a, space, backend.natural)
    runs: dict[str, list[EvalResult]] = {name: [] for name in mixtures}
    with tqdm(total=len(mixtures) * len(spec.reference_seeds), desc=f"reference runs {spec.env_id}",
              unit="episode") as bar:
        for seed in spec.reference_seeds:
            for name, w in mixtures.items():
                runs[name].append(run_static(backend, w, spec.steps, seed))
                bar.update()
    best, worst = extremes(runs, space, spec.reward.anchors)
    path.parent.mkdir(parents=True, exist_ok=True)  # cached before it is checked: a pair that cannot scale (an
    # inverted range) raises the same typed error from the cache next time instead of running again
    atomic_write_json(path, {"version": REFERENCE_VERSION, "env_id": spec.env_id, "base": base_id,
                             "spec_hash": spec_hash, "seeds": list(spec.reference_seeds), "best": best,
                             "worst": worst, "runs": {k: [r.to_json() for r in v] for k, v in runs.items()}})
    log.info("reference runs for %s cached in %s", spec.env_id, path)
    return Reference(best, worst, spec_hash, tuple(spec.reference_seeds))


def commit_reference(reference: Reference, env_id: str, base_id: str, committed_dir: Path | None = None) -> Path:
    """Write ``reference`` to ``checkpoints/references/<spec hash>.json`` so envs of that spec adopt it
    (see the module docstring). Rewriting the same extremes is a no-op.

    Raises:
        ConfigError: a committed file for that spec hash already holds other extremes or another base.
    """
    path = (committed_dir or COMMITTED_REFERENCE_DIR) / f"{reference.spec_hash}.json"
    record = {"version": REFERENCE_VERSION, "env_id": env_id, "base": base_id, **reference.to_json()}
    if path.exists():
        old = json.loads(path.read_text())
        if {k: old.get(k) for k in ("base", "best", "worst")} != {k: record[k] for k in ("base", "best", "worst")}:
            raise ConfigError(str(path), [f"a committed reference for spec {reference.spec_hash} already holds other "
                                          f"extremes or another base ({old.get('base')}); datasets of one spec must "
                                          f"share their reference runs: delete the file only if no committed dataset "
                                          f"uses it"])
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, record)
    return path
