"""The trajectory store: ``trajectories/<run>/`` with ``meta.json``, ``manifest.json`` and one JSONL file
per trajectory (schema: ``trajectories/README.md``). A run is an :class:`~mixagent.rollout.record.EpisodeStore`
(:meth:`RunWriter.get` / :meth:`~RunWriter.put` / :meth:`~RunWriter.records`; :class:`Run` reads): a
trajectory is an :class:`~mixagent.rollout.record.EpisodeRecord` keyed by its id.

Crash safety comes from three rules. A trajectory is written to ``<id>.jsonl.partial``, one line per step,
flushed and fsync'ed after every line; when it ends it gets an ``end`` line and is renamed to
``<id>.jsonl`` (atomic). The manifest is rewritten through a temporary file and an atomic rename after
each finished trajectory. On ``--resume``, partial files are discarded, finished files the manifest missed
(a crash between the rename and the manifest update) are validated and adopted, and listed files are
checked against their sha256. There is one writer per run: the collector's driver process.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from mixagent.config import is_number
from mixagent.domains import weights_problem
from mixagent.env.evaluation import EvalResult, eval_json_problem
from mixagent.errors import ResumeMismatchError, SchemaVersionError, TrajectoryFormatError
from mixagent.paths import atomic_write_json, finite_json, fsync_dir, write_error
from mixagent.rollout.record import EpisodeRecord

__all__ = ["SCHEMA_VERSION", "RunWriter", "Run", "Trajectory", "read_trajectory", "list_runs", "IDENTITY_KEYS",
           "pack_run", "PACK_ARCHIVE"]

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
READABLE_VERSIONS = (1,)
# meta.json keys that define a run's content; --resume refuses a run whose values differ
IDENTITY_KEYS = ("env", "domains", "seed", "tree", "behaviours")


def _fix_hint(run_dir: Path) -> str:
    return (f"run `mixagent trajectories verify {run_dir} --drop-bad` to remove the bad trajectories "
            f"from the run, then collect again with --resume to re-collect them")


def dumps(obj: Any) -> str:
    """One JSON line; non-finite floats become null (the record keeps its ``nonfinite_loss`` flag)."""
    return json.dumps(finite_json(obj), separators=(",", ":"), allow_nan=False)


def _check_version(found: Any, what: Path) -> None:
    if found not in READABLE_VERSIONS:
        raise SchemaVersionError(f"{what} has schema_version {found!r}; this mixagent reads "
                                 f"{', '.join(map(str, READABLE_VERSIONS))}. Use the mixagent version that wrote "
                                 f"it, or collect the run again")


def _load_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise TrajectoryFormatError(f"{path} is missing: not a trajectory run directory (or its {what} was "
                                    f"deleted); collect into a new run") from None
    except json.JSONDecodeError as exc:
        raise TrajectoryFormatError(f"{path}: {what} is not valid JSON ({exc.msg} at line {exc.lineno}); "
                                    f"it was edited or cut off. Restore it, or collect into a new run") from None
    if not isinstance(data, dict):
        raise TrajectoryFormatError(f"{path}: {what} must be a JSON object")
    _check_version(data.get("schema_version"), path)
    return data


# --- reading -------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Trajectory:
    """One stored trajectory: its header, step records and end record (plain dicts, as on disk)."""

    path: Path
    header: dict
    steps: list[dict]
    end: dict

    @property
    def id(self) -> str:
        return self.header["id"]

    @property
    def start(self) -> EvalResult:
        return EvalResult.from_json(self.header["start"])

    @property
    def evals(self) -> list[EvalResult]:
        """The evaluation after each completed step (a failed last step has none)."""
        return [EvalResult.from_json(s["eval"]) for s in self.steps if s.get("eval") is not None]

    @property
    def weights(self) -> np.ndarray:
        """``(steps, K)`` mixtures trained, in the run's domain order."""
        return np.array([s["weights"] for s in self.steps], dtype=np.float64)

    @property
    def rewards(self) -> np.ndarray:
        return np.array([s["reward"] for s in self.steps], dtype=np.float64)

    @property
    def truncated(self) -> bool:
        return bool(self.end["truncated"])

    @property
    def flagged(self) -> str | None:
        """Why the trajectory should not be learned from as is (``"nonfinite"``), or None."""
        return self.end.get("flagged")

    @property
    def behaviour(self) -> str:
        """The behaviours of the trajectory in order, e.g. ``dirichlet>epsilon``."""
        return ">".join(b["name"] for b in self.header["behaviour"])

    def record(self) -> EpisodeRecord:
        """The trajectory as the one episode record: its id as the key, the tree's ``episode_seed``, its step
        lines as they are, its header and end line in ``extra``."""
        evaluated = [s["eval"] for s in self.steps if s.get("eval") is not None]
        start = self.header["start"]
        return EpisodeRecord(self.id, int(self.header["episode_seed"]), start, tuple(self.steps),
                             evaluated[-1] if evaluated else start, float(self.end["return"]), self.truncated,
                             {"header": self.header, "end": self.end})


def read_trajectory(path: Path) -> Trajectory:
    """Read and validate one trajectory file (schema version, line structure, step count)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise TrajectoryFormatError(f"{path}: cannot be read ({exc.strerror}); {_fix_hint(path.parent)}") from None
    return _parse(path, raw)


def _parse(path: Path, raw: bytes) -> Trajectory:
    run_dir = path.parent
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    else:
        raise TrajectoryFormatError(f"{path}: the last line is cut off (no newline); {_fix_hint(run_dir)}")
    records = []
    for i, line in enumerate(lines, 1):
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict) or "kind" not in rec:
                raise ValueError("not a record object with a 'kind'")
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as exc:
            raise TrajectoryFormatError(f"{path}:{i}: corrupt line ({exc}); {_fix_hint(run_dir)}") from None
        records.append(rec)
    if not records or records[0]["kind"] != "header":
        raise TrajectoryFormatError(f"{path}: the first line must be the header record; {_fix_hint(run_dir)}")
    _check_version(records[0].get("schema_version"), path)
    if records[-1]["kind"] != "end":
        raise TrajectoryFormatError(f"{path}: no end record (the file was cut off); {_fix_hint(run_dir)}")
    steps = records[1:-1]
    bad = [i + 2 for i, r in enumerate(steps) if r["kind"] != "step" or r.get("t") != i]
    if bad or records[-1].get("steps") != len(steps):
        raise TrajectoryFormatError(f"{path}: step records out of order or missing (line {bad[:3] or len(records)});"
                                    f" {_fix_hint(run_dir)}")
    problems = _value_problems(records[0], steps)
    if problems:
        raise TrajectoryFormatError(f"{path}: invalid values: {'; '.join(problems[:5])}"
                                    f"{f' (and {len(problems) - 5} more)' if len(problems) > 5 else ''}; "
                                    f"{_fix_hint(run_dir)}")
    return Trajectory(path, records[0], steps, records[-1])


def _value_problems(header: dict, steps: list[dict]) -> list[str]:
    """Values a reader would use, checked before use: shapes, finite numbers, weights summing to 1. A
    diverged step (``nonfinite_loss``) may lack its evaluation (stored as null)."""
    start_w = header.get("start_weights")
    k = len(start_w) if isinstance(start_w, list) else 0
    problems = [f"header start_weights: {p}" for p in [weights_problem(start_w, k) if k else
                                                        f"expected a list of weights, got {start_w!r}"] if p]
    problems += [f"header start: {p}" for p in [eval_json_problem(header.get("start"))] if p]
    start = header.get("start")
    domains = set(start["bpb"]) if not problems and isinstance(start, dict) else None
    for i, rec in enumerate(steps):
        t = rec.get("t")
        for flag in ("terminated", "truncated", "nonfinite_loss"):
            if not isinstance(rec.get(flag), bool):
                problems.append(f"step {t} {flag}: expected true or false, got {rec.get(flag)!r}")
        if rec.get("eval") is None and rec.get("nonfinite_loss") and i != len(steps) - 1:
            problems.append(f"step {t} eval: only the last (diverged) step may lack its evaluation")
        problems += [f"step {t} weights: {p}" for p in [weights_problem(rec.get("weights"), k)] if p]
        action = rec.get("action")
        if not (isinstance(action, list) and len(action) == k and all(is_number(a) for a in action)):
            problems.append(f"step {t} action: expected {k} finite numbers, got {action!r}")
        if rec.get("eval") is not None or not rec.get("nonfinite_loss"):
            problems += [f"step {t} eval: {p}" for p in [eval_json_problem(rec.get("eval"), domains)] if p]
    return problems


class Run:
    """A trajectory run on disk (read only).

    Args:
        path: the run directory (``trajectories/<run>``).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.meta = _load_json(self.path / "meta.json", "meta.json")
        self.manifest = _load_json(self.path / "manifest.json", "manifest.json")
        self._packed: dict[str, bytes] | None = None

    @property
    def packed(self) -> bool:
        """A packed run (:func:`pack_run`): one checksummed archive instead of one file per trajectory."""
        return "packed" in self.meta

    def raw(self, entry: dict) -> tuple[Path, bytes]:
        """A trajectory's path and bytes, from its file or from the packed archive."""
        file = self.path / entry["file"]
        if self.packed:
            if self._packed is None:
                self._packed = _unpack(self.path, self.meta["packed"], self.entries)
            if entry["file"] not in self._packed:
                raise TrajectoryFormatError(f"{file}: listed in the manifest but not in the archive "
                                            f"{self.path / self.meta['packed']['archive']}")
            return file, self._packed[entry["file"]]
        try:
            return file, file.read_bytes()
        except OSError:
            raise TrajectoryFormatError(f"{file}: listed in the manifest but missing; {_fix_hint(self.path)}") from None

    @property
    def name(self) -> str:
        return self.meta["run"]

    @property
    def entries(self) -> dict[str, dict]:
        """Manifest entries of the finished trajectories, by id."""
        return self.manifest["trajectories"]

    @property
    def complete(self) -> bool:
        return len(self.manifest["trees_done"]) >= self.meta["trees"]

    def trajectories(self, *, include_flagged: bool = True, verify: bool = True) -> Iterator[Trajectory]:
        """Finished trajectories in id order; ``verify`` checks each file against its manifest sha256."""
        for _tid, entry in sorted(self.entries.items()):
            if entry.get("flagged") and not include_flagged:
                continue
            file, raw = self.raw(entry)
            yield _checked(file, raw, entry) if verify else _parse(file, raw)

    def get(self, key: str, seed: int) -> EpisodeRecord | None:
        """Trajectory ``key`` (its id) as a record when its episode seed is ``seed``, else ``None``."""
        entry = self.entries.get(key)
        if entry is None:
            return None
        record = _checked(*self.raw(entry), entry).record()
        return record if record.seed == seed else None

    def records(self) -> Iterator[EpisodeRecord]:
        """Every finished trajectory as a record, in id order (each checked against its sha256)."""
        return (t.record() for t in self.trajectories())

    def problems(self) -> dict[str, str]:
        """Every listed trajectory that fails validation, with the reason (empty when the run is sound)."""
        bad = {}
        if self.packed and self.entries:
            try:
                self.raw(next(iter(self.entries.values())))
            except TrajectoryFormatError as exc:  # the whole archive is unusable: one problem, not one per entry
                return {"(archive)": str(exc)}
        for tid, entry in sorted(self.entries.items()):
            try:
                _checked(*self.raw(entry), entry)
            except (TrajectoryFormatError, SchemaVersionError) as exc:
                bad[tid] = str(exc).split("; run `")[0]
        return bad


PACK_ARCHIVE = "trajectories.jsonl.gz"


def pack_run(run_dir: str | Path, out_dir: str | Path, extra: dict | None = None) -> Path:
    """Pack a finished run into a compact, versioned, checksummed directory that ``Run`` reads like any run
    (e.g. the committed reference datasets under ``trajectories/reference/``): ``meta.json`` (the run's,
    plus a ``packed`` block with the archive's sha256 and ``extra``), ``manifest.json`` (the run's, every
    entry keeping its file's sha256) and one deterministic gzip archive of every trajectory file in id order.

    Raises:
        TrajectoryFormatError: the run has invalid trajectories (``verify --drop-bad`` and resume first).
        ResumeMismatchError: ``out_dir`` exists.
    """
    import gzip

    from mixagent.paths import staged_dir

    run, out = Run(run_dir), Path(out_dir)
    if out.exists():
        raise ResumeMismatchError(f"{out} exists; packed runs are written once (delete it to pack again)")
    if not run.complete:
        raise TrajectoryFormatError(f"{run.path} is not finished ({len(run.manifest['trees_done'])} of "
                                    f"{run.meta['trees']} trees); finish it with collect --resume before packing")
    bad = run.problems()
    if bad:
        raise TrajectoryFormatError(f"{run.path} has {len(bad)} invalid trajectories (e.g. {next(iter(bad.items()))}); "
                                    f"{_fix_hint(run.path)}")
    order = sorted(run.entries)
    blob = b"".join(run.raw(run.entries[tid])[1] for tid in order)
    archive = gzip.compress(blob, compresslevel=9, mtime=0)
    packed = {"archive": PACK_ARCHIVE, "sha256": hashlib.sha256(archive).hexdigest(), "bytes": len(archive),
              "raw_bytes": len(blob), "order": order, "source_run": str(run.path.name), **(extra or {})}
    with staged_dir(out) as tmp:
        (tmp / PACK_ARCHIVE).write_bytes(archive)
        (tmp / "manifest.json").write_text(json.dumps(run.manifest, indent=1))
        (tmp / "meta.json").write_text(json.dumps({**run.meta, "packed": packed}, indent=1))
    return out


def _unpack(run_dir: Path, packed: dict, entries: dict[str, dict]) -> dict[str, bytes]:
    """File name -> bytes of a packed run, after checking the archive's sha256."""
    import gzip

    path = run_dir / packed["archive"]
    try:
        archive = path.read_bytes()
    except OSError:
        raise TrajectoryFormatError(f"{path}: the packed run's archive is missing; restore it (git checkout -- "
                                    f"{path})") from None
    if hashlib.sha256(archive).hexdigest() != packed["sha256"]:
        raise TrajectoryFormatError(f"{path}: sha256 does not match meta.json (the archive changed or is "
                                    f"corrupt); restore it (git checkout -- {path})")
    blob, out, at = gzip.decompress(archive), {}, 0
    if set(packed["order"]) != set(entries):
        raise TrajectoryFormatError(f"{path}: the archive's trajectories differ from the manifest's; restore the "
                                    f"packed run from git (git checkout -- {run_dir})")
    for tid in packed["order"]:
        n = entries[tid]["bytes"]
        out[entries[tid]["file"]] = blob[at: at + n]
        at += n
    return out


def _verified(run_dir: Path, entry: dict) -> Trajectory:
    file = run_dir / entry["file"]
    try:
        raw = file.read_bytes()
    except OSError:
        raise TrajectoryFormatError(f"{file}: listed in the manifest but missing; {_fix_hint(run_dir)}") from None
    return _checked(file, raw, entry)


def _checked(file: Path, raw: bytes, entry: dict) -> Trajectory:
    run_dir = file.parent
    if hashlib.sha256(raw).hexdigest() != entry["sha256"]:
        raise TrajectoryFormatError(f"{file}: sha256 does not match the manifest (the file changed after it was "
                                    f"finished); {_fix_hint(run_dir)}")
    return _parse(file, raw)


def list_runs(root: Path) -> list[Path]:
    """Run directories under ``root`` (those with a meta.json)."""
    return sorted(p.parent for p in Path(root).glob("*/meta.json"))


# --- writing -------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Open:
    path: Path
    file: Any
    sha: Any
    steps: int
    header: dict


class RunWriter:
    """The single writer of a run: opens, appends to and finalises trajectory files and keeps the manifest.

    Args:
        run_dir: the run directory.
        meta: the run's meta record (written on creation; compared on resume).
        resume: continue an existing run instead of creating one.
    """

    def __init__(self, run_dir: Path, meta: dict, resume: bool) -> None:
        self.dir = Path(run_dir)
        self._open: dict[str, _Open] = {}
        exists = (self.dir / "meta.json").exists()
        if exists and not resume:
            raise ResumeMismatchError(f"run {self.dir} already exists; pass --resume to continue it, or choose "
                                      f"another run name (run=NAME)")
        if not exists and resume:
            log.info("--resume: %s does not exist yet; starting it", self.dir)
        if exists:
            if "packed" in _load_json(self.dir / "meta.json", "meta.json"):
                raise ResumeMismatchError(f"{self.dir} is a packed (read-only) run; collect into another run name")
            self.meta = self._check_resume(meta)
            self.manifest = _load_json(self.dir / "manifest.json", "manifest.json")
            self._recover()
        else:
            try:
                self.dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise write_error(self.dir, exc) from None
            self.meta = {"schema_version": SCHEMA_VERSION, **meta}
            self.manifest = {"schema_version": SCHEMA_VERSION, "trajectories": {}, "trees_done": []}
            atomic_write_json(self.dir / "manifest.json", self.manifest)
            atomic_write_json(self.dir / "meta.json", self.meta)  # last: a run exists once its meta does

    def _check_resume(self, meta: dict) -> dict:
        old = _load_json(self.dir / "meta.json", "meta.json")
        same = lambda k: json.dumps(old.get(k), sort_keys=True) == json.dumps(meta.get(k), sort_keys=True)  # noqa: E731
        diff = [k for k in IDENTITY_KEYS if not same(k)]
        if diff:
            detail = "; ".join(f"{k}: run has {_short(old.get(k))}, config gives {_short(meta.get(k))}" for k in diff)
            raise ResumeMismatchError(f"cannot resume {self.dir}: {detail}. Resume with the config the run was "
                                      f"started with (see its meta.json), or collect into a new run name")
        if meta.get("trees", 0) > old.get("trees", 0):  # growing a run is allowed: more trees, same content
            old["trees"] = meta["trees"]
            atomic_write_json(self.dir / "meta.json", old)
        return old

    def _recover(self) -> None:
        """Drop partial files; drop listed files that fail their checksum; adopt finished unlisted files."""
        for p in self.dir.glob("*.partial"):
            log.info("discarding the partial trajectory %s (it is collected again)", p.name)
            p.unlink()
        entries = self.manifest["trajectories"]
        dropped_trees = set()
        for tid, entry in list(entries.items()):
            try:
                _verified(self.dir, entry)
            except (TrajectoryFormatError, SchemaVersionError) as exc:
                log.warning("%s; it is collected again", exc)
                del entries[tid]
                dropped_trees.add(entry["tree"])
        listed = {e["file"] for e in entries.values()}
        for p in sorted(self.dir.glob("*.jsonl")):
            if p.name in listed:
                continue
            raw = p.read_bytes()
            try:
                traj = _parse(p, raw)
            except (TrajectoryFormatError, SchemaVersionError) as exc:
                log.warning("%s; removing it, it is collected again", exc)
                p.unlink()
                continue
            log.info("adopting %s (finished just before the interruption)", p.name)
            entries[traj.id] = self._entry(p, hashlib.sha256(raw).hexdigest(), traj.header, traj.end)
        self.manifest["trees_done"] = [t for t in self.manifest["trees_done"] if t not in dropped_trees]
        atomic_write_json(self.dir / "manifest.json", self.manifest)

    @property
    def done_ids(self) -> set[str]:
        return set(self.manifest["trajectories"])

    @property
    def trees_done(self) -> set[int]:
        return set(self.manifest["trees_done"])

    def open(self, tid: str, header: dict, prefix: list[dict]) -> None:
        path = self.dir / f"{tid}.jsonl.partial"
        try:
            f = open(path, "wb")
        except OSError as exc:
            raise write_error(path, exc) from None
        handle = _Open(path, f, hashlib.sha256(), 0, header)
        self._open[tid] = handle
        self._write(handle, [{"kind": "header", "schema_version": SCHEMA_VERSION, **header}, *prefix])
        handle.steps = len(prefix)

    def step(self, tid: str, record: dict) -> None:
        handle = self._open[tid]
        self._write(handle, [record])
        handle.steps += 1

    def close(self, tid: str, end: dict) -> dict:
        """Finish a trajectory: end line, fsync, atomic rename, manifest update. Returns its manifest entry."""
        handle = self._open[tid]
        end = {"kind": "end", "steps": handle.steps, **end}
        self._write(handle, [end])
        final = self.dir / f"{tid}.jsonl"
        try:
            handle.file.close()
            os.replace(handle.path, final)
            fsync_dir(self.dir)
        except OSError as exc:
            raise write_error(final, exc) from None
        del self._open[tid]
        entry = self._entry(final, handle.sha.hexdigest(), handle.header, end)
        self.manifest["trajectories"][tid] = entry
        atomic_write_json(self.dir / "manifest.json", self.manifest)
        return entry

    def put(self, record: EpisodeRecord) -> None:
        """Store a whole trajectory at once (a record read from a run: ``extra`` holds its header and end
        line), through the same crash-safe path as streamed collection."""
        drop = ("kind", "schema_version", "steps")
        self.open(record.key, {k: v for k, v in record.extra["header"].items() if k not in drop}, [])
        for step in record.steps:
            self.step(record.key, step)
        self.close(record.key, {k: v for k, v in record.extra["end"].items() if k not in drop})

    def get(self, key: str, seed: int) -> EpisodeRecord | None:
        """A finished trajectory of this run as a record (see :meth:`Run.get`)."""
        return Run(self.dir).get(key, seed)

    def records(self) -> Iterator[EpisodeRecord]:
        """Every finished trajectory of this run as a record."""
        return Run(self.dir).records()

    def tree_done(self, tree: int) -> None:
        if tree not in self.manifest["trees_done"]:
            self.manifest["trees_done"].append(tree)
            self.manifest["trees_done"].sort()
            atomic_write_json(self.dir / "manifest.json", self.manifest)

    def abort(self) -> None:
        """Close and remove every open partial file (after an error; nothing half-written stays behind)."""
        for handle in self._open.values():
            try:
                handle.file.close()
            except OSError:
                pass
            handle.path.unlink(missing_ok=True)
        self._open.clear()

    def _write(self, handle: _Open, records: list[dict]) -> None:
        data = "".join(dumps(r) + "\n" for r in records).encode()
        try:
            handle.file.write(data)
            handle.file.flush()
            os.fsync(handle.file.fileno())
        except OSError as exc:
            raise write_error(handle.path, exc) from None
        handle.sha.update(data)

    @staticmethod
    def _entry(path: Path, sha: str, header: dict, end: dict) -> dict:
        return {"file": path.name, "sha256": sha, "bytes": path.stat().st_size, "tree": header["tree"],
                "parent": header["parent"], "branch_step": header["branch_step"], "steps": end["steps"],
                "return": end["return"], "truncated": end["truncated"], "flagged": end.get("flagged"),
                "behaviour": header["behaviour"][0]["name"], "finished": time.time()}


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) < 160 else text[:157] + "..."
