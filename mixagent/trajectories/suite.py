"""Behaviour data across the settings of a suite: ``mixagent collect --config configs/collect/suite-v1.yaml``.

A collect config with ``suite`` set draws ``settings`` distinct training runs from the suite's training
distribution (:meth:`mixagent.env.setting.Suite.distinct_runs`: draws from seed ``seed`` on; ``lam`` is not
part of a run: rewards are relabelled offline from the raw evaluations, so every trajectory serves every
lam) and collects ``trees`` branching trees in each, one ordinary run per setting:
``<out_dir>/<run>/<run hash>/`` with the setting (``lam`` recorded as ``None``), its hash and the suite's
recorded in the run's ``meta.json`` (``setting``). ``<out_dir>/<run>/suite.json`` indexes them. Each setting's
run resumes on its own, so a stopped collection continues where it stopped (``--resume``); one that asks for
more settings keeps the ones it has (the draw is a fixed sequence), one that asks for fewer keeps them listed.
The suite's training distribution (:meth:`~mixagent.env.setting.Suite.training_hash`: its held-out list may
change), seed, trees, tree shape and behaviour mix are the collection's identity: a resume with others is
refused before anything runs.

``pack_to`` (e.g. ``trajectories/reference/suite-v1``, which git keeps) receives each setting's run packed as
soon as it finishes, with the index: a packed setting counts as collected, so a fresh clone resumes where the
committed data ends, and the directory is a suite collection to train on. ``references_from`` (an oracle
table's tuning audits) lets a setting the table already ran adopt its reference and anchor runs.
"""

from __future__ import annotations

import dataclasses
import json
import time

from mixagent.errors import ResumeMismatchError
from mixagent.paths import REPO_ROOT, atomic_write_json

__all__ = ["collect_suite", "expand_runs", "SUITE_INDEX_VERSION"]

SUITE_INDEX_VERSION = 1


def collect_suite(cfg, resume: bool = False, progress: bool = True) -> list:
    """Collect ``cfg.trees`` trees in each of ``cfg.settings`` training settings of ``cfg.suite`` (see the module
    docstring); returns one :class:`~mixagent.trajectories.collector.CollectSummary` per setting collected now.

    Raises:
        ConfigError: a bad suite or config; ResumeMismatchError: the directory holds another suite's runs or
            exists without ``resume``.
    """
    from mixagent.env.setting import load_suite
    from mixagent.trajectories.collector import collect

    suite = load_suite(REPO_ROOT / cfg.suite)
    root = cfg.run_dir
    index_path = root / "suite.json"
    from mixagent.config import to_dict

    identity = {"suite": suite.name, "training_hash": suite.training_hash(), "seed": cfg.seed, "trees": cfg.trees,
                "tree": to_dict(cfg.tree), "behaviours": [to_dict(b) for b in cfg.behaviours]}
    if cfg.env_overrides:  # reward.* only (CollectConfig.check): the rewards every setting's runs are scored with
        identity["env_overrides"] = list(cfg.env_overrides)
    index = json.loads(index_path.read_text()) if index_path.is_file() else None
    if index is not None and not resume:
        raise ResumeMismatchError(f"{root} already holds a suite collection; pass --resume to continue it, or "
                                  f"choose another run name (run=NAME)")
    packed_root = (REPO_ROOT / cfg.pack_to) if cfg.pack_to else None
    packed_index = packed_root / "suite.json" if packed_root is not None else None
    for path in (index_path, packed_index):
        held = json.loads(path.read_text()) if path is not None and path.is_file() else None
        keys = [*identity, *(["env_overrides"] if held and "env_overrides" in held and "env_overrides" not in identity
                             else [])]  # a collection with reward overrides is not resumed without them
        if held is not None and {k: held.get(k) for k in keys} != identity:
            raise ResumeMismatchError(f"cannot resume {path.parent}: it was collected for "
                                      f"{ {k: held.get(k) for k in keys} }, the config gives {identity}; "
                                      f"resume with the config it was started with, or collect into a new run name")
        if held is not None and (index is None or len(held["settings"]) > len(index["settings"])):
            index = held  # a fresh machine, or a packed (committed) index that lists more settings
    indexed = len(index["settings"]) if index else 0  # a resume that asks for fewer keeps the others listed
    settings = suite.distinct_runs(max(cfg.settings, indexed), cfg.seed)
    index = {"version": SUITE_INDEX_VERSION, **identity,
             "created": (index or {}).get("created", time.strftime("%Y-%m-%dT%H:%M:%S%z")),
             "settings": [{"run_hash": s.run_hash(), "setting": _run_values(s), "hidden": s.hidden(),
                           "run": f"{cfg.run}/{s.run_hash()}"} for s in settings]}
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_json(index_path, index)
    if packed_root is not None:
        packed_root.mkdir(parents=True, exist_ok=True)
        atomic_write_json(packed_index, index)
    summaries = []
    for k, setting in enumerate(settings[:cfg.settings]):
        sub = dataclasses.replace(
            cfg, run=setting.run_hash(), out_dir=str(root), suite="", settings=0, references_from="", pack_to="",
            env=suite.env, env_overrides=(*setting.overrides(suite, keep_lam=True), *cfg.env_overrides),  # reward.*
            seed=cfg.seed * 100_003 + k,  # each setting's own data orders and behaviour draws
            setting={"suite": suite.name, "training_hash": suite.training_hash(), "run_hash": setting.run_hash(),
                     "setting": _run_values(setting), "hidden": setting.hidden()})
        packed = packed_root / setting.run_hash() if packed_root is not None else None
        if packed is not None and (packed / "meta.json").is_file():
            _check_packed(packed, sub, setting)
            continue  # packed (committed): collected
        done = (sub.run_dir / "meta.json").is_file() and _complete(sub.run_dir)
        if done:
            _pack(sub.run_dir, packed)
            continue
        if cfg.references_from:
            _adopt_reference(sub, REPO_ROOT / cfg.references_from)
        if progress:
            print(f"\n== setting {k + 1}/{len(settings)} ({setting.run_hash()}): {setting.to_json()}", flush=True)
        summaries.append(collect(sub, resume=(sub.run_dir / "meta.json").is_file(), progress=progress))
        _pack(sub.run_dir, packed)
    return summaries


def _check_packed(packed, sub, setting) -> None:
    """A packed setting counts as collected only if it is this collection's run of ``setting``.

    Raises:
        ResumeMismatchError: it holds another setting's run, or one of another seed.
    """
    from mixagent.trajectories.store import Run

    meta = Run(packed).meta
    got = ((meta.get("setting") or {}).get("run_hash"), meta.get("seed"))
    if got != (setting.run_hash(), sub.seed):
        raise ResumeMismatchError(f"{packed} holds the run of setting {got[0]} with seed {got[1]}, this collection's "
                                  f"is {setting.run_hash()} with seed {sub.seed}: pack_to names another "
                                  f"collection's directory; choose another pack_to")


def _pack(run_dir, packed) -> None:
    """Pack a finished setting's run into ``packed`` (nothing without ``pack_to``)."""
    if packed is None:
        return
    import logging

    from mixagent.trajectories.store import pack_run

    pack_run(run_dir, packed)
    logging.getLogger(__name__).info("setting packed into %s: commit it so it outlives this machine", packed)


def _adopt_reference(sub, audits) -> None:
    """Commit the setting's reference extremes composed from an audit of its runs (:func:`~mixagent.env.
    references.from_audits`), where none is committed yet: the collection then adopts them instead of running
    its reference and anchor runs."""
    from mixagent.data.sources import load_space
    from mixagent.env.references import COMMITTED_REFERENCE_DIR, commit_reference, from_audits
    from mixagent.env.spec import load_spec

    spec = load_spec(REPO_ROOT / sub.env, sub.env_overrides)
    if (COMMITTED_REFERENCE_DIR / f"{spec.spec_hash()}.json").is_file():
        return
    base_id = "analytic"  # what each backend calls its base (ProxyBackend.base_id)
    if spec.backend == "lm":
        from mixagent.env.base_model import get_base_model

        base_id = get_base_model(spec.base_config()).base_id
    ref = from_audits(spec, audits, load_space(spec.space_path()), base_id)
    if ref is not None:
        commit_reference(ref, spec.env_id, base_id)


def _run_values(setting) -> dict:
    """A setting's axis values as its run has them: ``lam`` is ``None`` (rewards are relabelled for any lam;
    the run itself trains at the suite family's ``reward.lam``)."""
    return {**setting.to_json(), "lam": None}


def _complete(run_dir) -> bool:
    from mixagent.trajectories.store import Run

    return Run(run_dir).complete


def expand_runs(paths, root=REPO_ROOT, partial: bool = False) -> tuple[list[str], list[str]]:
    """Trajectory runs named by ``paths`` (relative to ``root``): a suite collection (a directory with
    ``suite.json``) stands for its settings' runs in index order, each only once it is complete (``partial``:
    every setting with a finished trajectory); any other path is kept. Returns the runs and the suite
    settings left out (not yet collected, or unfinished).

    Raises:
        ConfigError: a suite index of another version, or one whose settings are all missing.
    """
    from mixagent.errors import ConfigError
    from mixagent.trajectories.store import Run

    runs, left = [], []
    for p in paths:
        index_path = root / p / "suite.json"
        if not index_path.is_file():
            runs.append(str(p))
            continue
        index = json.loads(index_path.read_text())
        if index.get("version") != SUITE_INDEX_VERSION:
            raise ConfigError(str(index_path), [f"version {index.get('version')!r}, this code reads "
                                                f"{SUITE_INDEX_VERSION}: re-collect or use a matching mixagent"])
        found = []
        for entry in index["settings"]:
            run_dir = root / p / entry["run_hash"]
            ok = (run_dir / "meta.json").is_file() and (Run(run_dir).entries if partial else _complete(run_dir))
            (found if ok else left).append(f"{p}/{entry['run_hash']}")
        if not found:
            raise ConfigError(str(index_path), [f"none of its {len(index['settings'])} settings is "
                                                f"{'started' if partial else 'complete'} yet: collect with "
                                                f"`mixagent collect --config configs/collect/<suite>.yaml --resume`"])
        runs += found
    return runs, left
