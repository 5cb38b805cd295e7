"""The episode cache: every finished episode of a policy in an environment stored as one JSON file,
``<root>/cache/<env name>-v<version>/<spec hash>/<policy key>/<seed>.json`` (``/`` and ``:`` in the key
become ``_``). Read-only roots (the committed ``audits/compare``) are looked up after the writable one; a
stored episode that is unreadable or holds invalid values is run again. The record is
:func:`mixagent.rollout.episode.episode_record` (version :data:`EPISODE_VERSION`).

**The base checkpoint.** The spec hash names the base model's *config*, not the checkpoint built from it
(a re-trained base, or reference runs recomputed on another machine, would otherwise be scored against
episodes of another model). A cache built with ``start=`` (the env's evaluation at reset, the base model's,
seed-independent) serves an episode only when its stored start evaluation equals it (bits per byte to 1e-6
relative: a thread count changes the last digits, another checkpoint far more); the others are run again.

**Lam siblings.** After :meth:`EpisodeCache.share_lam`, an open-loop policy's episode missing here is read
from the cache of the same spec at another lam (:mod:`mixagent.rollout.siblings`), rescored under this
spec's reward and lam from its raw evaluations."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

from mixagent.config import is_number
from mixagent.domains import DomainSpace, weights_problem
from mixagent.env.evaluation import eval_json_problem
from mixagent.errors import UsageError
from mixagent.paths import atomic_write_json
from mixagent.rollout.episode import EPISODE_VERSION, episode_record
from mixagent.rollout.record import EpisodeRecord

__all__ = ["EpisodeCache", "record_of_summary", "same_start", "start_eval"]

log = logging.getLogger(__name__)


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
    """Episodes on disk, one JSON file each, under ``<root>/cache/<env name>-v<version>/<spec hash>/``: an
    :class:`~mixagent.rollout.record.EpisodeStore` whose stored form is the summary of
    :func:`~mixagent.rollout.episode.episode_record` (final scores, every step's mixture, evaluation and
    balanced score; per-step rewards are not kept, the return is).

    Args:
        root: the writable root (a comparison's ``out``, the agent's ``eval.cache``).
        env: ``(name, version, spec hash)`` of the env.
        read_also: further roots looked up (read only) after ``root``, e.g. the committed ``audits/compare``.
        space: the env's domain space; :meth:`put` needs it to summarise a record (readers do not).
        start: the env's evaluation at reset (:meth:`EvalResult.to_json`, ``MixingEnv.reset(...)[1]["eval"]``):
            episodes that started from another base model are not served; ``None``: not checked.
    """

    def __init__(self, root: Path, env: tuple[str, int, str], read_also: tuple[Path, ...] = (),
                 space: DomainSpace | None = None, start: dict | None = None,
                 rescore: Callable[[dict], dict] | None = None) -> None:
        name, version, spec_hash = env
        rel = Path("cache") / f"{name}-v{version}" / spec_hash
        self.dir = Path(root) / rel
        self.read_dirs = [Path(r) / rel for r in read_also if (Path(r) / rel).resolve() != self.dir.resolve()]
        self.space = space
        self.start = start
        self._warned: set[Path] = set()
        self.rescore = rescore  # applied to every summary read (another reward scale); stored ones are kept as run
        self.siblings: list[Path] = []  # caches of this spec at another lam (share_lam)
        self._sibling_rescore: Callable[[dict], dict] | None = None

    def share_lam(self, spec, rescore: Callable[[dict], dict]) -> list[Path]:
        """Read open-loop episodes (:func:`~mixagent.rollout.siblings.open_loop`) missing here from the caches
        of ``spec`` at other lams under this cache's roots, each rescored with ``rescore`` (this spec's reward,
        lam and scale: :func:`mixagent.study.compare.rescorer`); writes this cache's ``spec.json`` so that
        siblings find it too. Returns the sibling directories found."""
        from mixagent.rollout.siblings import lam_siblings, spec_head

        head = self.dir / "spec.json"
        if not head.is_file():
            self.dir.mkdir(parents=True, exist_ok=True)
            atomic_write_json(head, spec_head(spec))
        self.siblings = [d for root in (self.dir, *self.read_dirs) for d in lam_siblings(root.parent, spec)]
        self._sibling_rescore = rescore
        return self.siblings

    def _same_base(self, ep: dict, where: Path) -> bool:
        """Whether a stored episode started from this cache's base model (always, without ``start``)."""
        same = same_start(self.start, ep.get("start"))
        if not same and where not in self._warned:
            self._warned.add(where)
            log.warning("episodes under %s started from another base model than this env's (its start evaluation "
                        "differs): they are run again", where)
        return same

    @staticmethod
    def _name(key: str) -> str:
        return key.replace("/", "_").replace(":", "_")

    def path(self, key: str, seed: int) -> Path:
        return self.dir / self._name(key) / f"{seed}.json"

    def summary(self, key: str, seed: int) -> dict | None:
        """The stored summary (the tables' row and the per-step evaluations), or ``None`` (the episode is then
        run again) when none is stored, or when the stored one is unreadable or invalid (logged); after
        :meth:`share_lam`, an open-loop episode stored at another lam of this spec, rescored."""
        found = self._stored(key, seed)
        return found if found is not None else self._from_sibling(key, seed)

    def _stored(self, key: str, seed: int) -> dict | None:
        """The summary stored under this cache's own roots (the writable one, then ``read_also``), or ``None``."""
        for d in (self.dir, *self.read_dirs):
            if (ep := self._read(d, key, seed)) is not None:
                return self.rescore(ep) if self.rescore is not None else ep  # its errors are the scale's: raised
        return None

    def _from_sibling(self, key: str, seed: int) -> dict | None:
        """An open-loop episode stored at another lam of this spec (:meth:`share_lam`), rescored, or ``None``."""
        from mixagent.rollout.siblings import open_loop

        if self._sibling_rescore is None or not open_loop(key):
            return None
        for d in self.siblings:
            if (ep := self._read(d, key, seed)) is not None:
                return self._sibling_rescore(ep)
        return None

    def _read(self, d: Path, key: str, seed: int) -> dict | None:
        """The valid episode stored in cache directory ``d`` that started from this cache's base model, or
        ``None`` (an unreadable or invalid one is logged: it is run again)."""
        p = d / self._name(key) / f"{seed}.json"
        if not p.exists():
            return None
        try:
            ep = json.loads(p.read_text())
            ep = ep if _valid(ep, seed) else None
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            ep = None
        if ep is None:
            log.warning("stored episode %s is unreadable or invalid; running it again", p)
            return None
        return ep if self._same_base(ep, d) else None

    def get(self, key: str, seed: int) -> EpisodeRecord | None:
        """The stored episode as a record (:func:`record_of_summary`), or ``None`` as for :meth:`summary`."""
        found = self.summary(key, seed)
        return record_of_summary(key, found) if found is not None else None

    def put(self, record: EpisodeRecord) -> None:
        """Store a finished episode under its key and seed (its summary; atomic).

        Raises:
            UsageError: the cache was built without the env's space.
        """
        if self.space is None:
            raise UsageError("EpisodeCache.put summarises episodes in the env's domain space: build the cache with "
                             "space=env.space")
        self.put_summary(record.key, record.seed, episode_record(record, self.space))

    def put_summary(self, key: str, seed: int, summary: dict) -> None:
        """Store an episode's summary as read from another cache (:meth:`summary`) under ``key`` (atomic)."""
        p = self.path(key, seed)
        p.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(p, summary)

    def records(self) -> Iterator[EpisodeRecord]:
        """Every valid stored episode (the writable root's first), keyed by its directory name (the key with
        ``/`` and ``:`` replaced by ``_``)."""
        seen = set()
        for d in (self.dir, *self.read_dirs):
            for f in sorted(d.glob("*/*.json")) if d.is_dir() else ():
                if (f.parent.name, f.stem) in seen or not f.stem.lstrip("-").isdigit():
                    continue
                seen.add((f.parent.name, f.stem))
                if (found := self._stored(f.parent.name, int(f.stem))) is not None:  # never a sibling's
                    yield record_of_summary(f.parent.name, found)

    def find(self, name: str) -> Path | None:
        """The first of the cache directories (writable first) holding file ``name``, or ``None``."""
        return next((d / name for d in (self.dir, *self.read_dirs) if (d / name).is_file()), None)


def same_start(mine: dict | None, theirs: dict | None) -> bool:
    """Whether a stored episode's start evaluation ``theirs`` is ``mine`` (the env's, :func:`start_eval`): the
    same domains' held-out bits per byte to 1e-6 relative, so it started from the same base model. Always true
    without ``mine`` (a backend whose start depends on the seed)."""
    if mine is None:
        return True
    a, b = mine.get("bpb", {}), (theirs or {}).get("bpb", {})
    return set(a) == set(b) and all(abs(b[n] - v) <= 1e-6 * abs(v) for n, v in a.items())


def start_eval(env) -> dict | None:
    """``env``'s evaluation at reset (the base model's; seed-independent, computed once per env) as JSON: what
    an :class:`EpisodeCache` checks stored episodes against; ``None`` for a backend whose start depends on
    the seed (``seeded_start``: the analytic test backend)."""
    if getattr(env.backend, "seeded_start", False):
        return None
    return env.reset(seed=0)[1]["eval"]


def record_of_summary(key: str, summary: dict) -> EpisodeRecord:
    """An episode cache summary as a record: one step per stored mixture with its evaluation and balanced
    score (steps after a divergence have none); per-step rewards are ``None`` (the cache keeps the return);
    the summary itself is ``extra["summary"]``."""
    evals, scores = summary["evals"], summary["scores"]
    steps = tuple({"weights": w, "eval": evals[t] if t < len(evals) else None, "reward": None,
                   "balanced_score": scores[t] if t < len(scores) else None}
                  for t, w in enumerate(summary["weights"]))
    return EpisodeRecord(key, int(summary["seed"]), summary["start"], steps, summary["final"], summary["return"],
                         bool(summary["truncated"]), {"summary": summary})
