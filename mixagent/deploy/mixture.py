"""The mixture data path of a real training run: per-domain window sources, a shared-memory weights
schedule and an ``IterableDataset`` that reads it for every batch.

**One global stream, the environment's.** Batch ``b`` of the run holds ``batch_size * world_size``
samples (every rank's); sample ``s`` of batch ``b`` is sample ``b * samples_per_batch + s`` of the
run. Its domain and window come from :mod:`mixagent.sampling`, the very sampler the environment trains the
proxy with: a counter-addressable uniform per sample (seeded by ``seed``) searched in the weights in force
at batch ``b``, and per-domain cursors over each domain's windows (one shuffled order for local token
arrays, so text repeats only after a full pass). The same seed and weights give the same windows as the
environment's :class:`~mixagent.sampling.MixtureSampler`. The stream is a pure function of the seed, the
sources and the schedule: every rank and every DataLoader worker computes the same picks, each yields only
its own samples, resuming is a replay of the picks (no data is read), and an interrupted run continues bit
for bit.

**Passes.** A new pass over the dataset (iterating it again) continues the stream: exactly where the
previous pass stopped in this process, or with DataLoader workers after the last batch they had prepared
(prefetched batches the loop never took are skipped, never repeated). :meth:`MixtureDataset.seek` sets
where the next pass starts (``seek(0)`` restarts; resuming a saved state seeks to its consumed batches).

**Workers of any start method.** The schedule and the pass positions live in shared memory and the pass lock
is a named semaphore, so the dataset works with DataLoader workers that are forked, spawned or started by a
fork server (``multiprocessing_context``), persistent or not: a forked worker inherits them, a spawned one
receives them with the pickled dataset, and a change made after the workers started reaches them. A copy
made outside a process start (``pickle``, ``copy.deepcopy``) is a dataset of its own.

**Weight changes and the prefetch lag.** DataLoader workers (and accelerate) prepare batches ahead of the
training loop, so a change cannot reach batches that already exist. The scheduler therefore writes each
new mixture with the first batch it applies to: ``consumed + lag``, where ``lag`` is at least the
number of batches that can be in flight (``num_workers * prefetch_factor + 2``; see :func:`default_lag`).
That makes the switch deterministic. If a worker meets a row that should have applied to a batch it
already made, the schedule counts it as *late* (``schedule.late``) and the callback warns: raise ``lag``.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from mixagent.config import is_int
from mixagent.domains import DomainSpace, DomainWeights
from mixagent.errors import ConfigError, CorruptArtifactError, DataMissingError, MixagentError, UsageError
from mixagent.sampling import MixtureStream

__all__ = ["WindowSource", "IndexedWindowSource", "TokenArraySource", "HFDatasetSource", "WeightSchedule",
           "MixtureDataset", "default_lag", "ScheduleFullError", "SourceUseError"]

log = logging.getLogger(__name__)
MAX_WORKERS = 64  # DataLoader workers a MixtureDataset tracks (where a new pass starts)
_SLOTS = 1 + MAX_WORKERS  # reader slots: this process, then one per worker


class ScheduleFullError(MixagentError, RuntimeError):
    """The shared weights schedule has no free row; build it with a larger ``capacity``."""


class SourceUseError(MixagentError, ValueError):
    """A source is used where it cannot work (one message argument, so DataLoader workers re-raise it as is)."""


def _pass_lock() -> Any:
    """The lock of the pass positions, shareable with workers of every start method. A lock of the fork context
    (Linux's default) cannot be pickled into a spawned or fork-server worker; one of the spawn context (a named
    semaphore on POSIX) can, and a forked worker inherits it all the same."""
    return multiprocessing.get_context("spawn").Lock()


def _shared(t: torch.Tensor) -> torch.Tensor:
    """``t`` in shared memory (a no-op for a tensor a worker received from shared memory)."""
    return t if t.is_shared() else t.share_memory_()


def _spawning() -> bool:
    """Whether this pickling starts a process (its objects then travel by shared memory and named semaphores)."""
    from multiprocessing.context import get_spawning_popen

    return get_spawning_popen() is not None


def default_lag(num_workers: int, prefetch_factor: int | None = None, extra: int = 2) -> int:
    """Batches that can exist ahead of the training loop: ``num_workers * prefetch_factor`` prepared by
    workers, plus ``extra`` (the batch being fetched and accelerate's one-batch look-ahead)."""
    if num_workers <= 0:
        return extra
    return num_workers * (prefetch_factor if prefetch_factor is not None else 2) + extra


# ---- sources ---------------------------------------------------------------------------------------
@runtime_checkable
class WindowSource(Protocol):
    """One domain's training text as an endless sequence of token windows of ``length`` tokens."""

    length: int

    def windows(self, start: int) -> Iterator[np.ndarray]:
        """Windows ``start, start + 1, ...`` of the domain's sequence (later epochs continue it)."""


@runtime_checkable
class IndexedWindowSource(Protocol):
    """A domain's windows with random access (a local token array): ``n`` windows, ``window(j)``. The
    dataset reads them in its stream's shuffled order; other sources are read sequentially."""

    length: int
    n: int

    def window(self, j: int) -> np.ndarray:
        """Window ``j`` of ``n``."""


class TokenArraySource:
    """Non-overlapping windows of a token array (a local tokenized corpus). The dataset takes them in the
    shuffled order of its :class:`~mixagent.sampling.MixtureStream` (the environment's window order).

    Args:
        tokens: the domain's token ids (e.g. ``DomainData.train[d]``; EOS-separated documents).
        length: tokens per window.
        seed: ignored (deprecated): the dataset's seed orders the windows.

    Raises:
        DataMissingError: fewer tokens than one window.
    """

    def __init__(self, tokens: np.ndarray, length: int, seed: int | None = None) -> None:
        if seed is not None:
            warnings.warn("TokenArraySource(seed=) is ignored: the window order comes from the MixtureDataset's "
                          "seed (the environment's sampler); drop the argument", DeprecationWarning, stacklevel=2)
        self.tokens = np.asarray(tokens)
        self.length = length
        self.n = len(self.tokens) // length
        if self.n == 0:
            raise DataMissingError(f"a domain has {len(self.tokens)} tokens, fewer than one window of {length}; "
                                   f"give it more text or shorten seq_len")

    def window(self, j: int) -> np.ndarray:
        """Window ``j`` (``0 <= j < n``) in the array's own order: ``(length,)`` token ids."""
        return self.tokens[j * self.length: (j + 1) * self.length]

    def windows(self, start: int) -> Iterator[np.ndarray]:
        """Windows ``start, start + 1, ...`` in the array's own order, cyclic (the :class:`WindowSource` view)."""
        for i in itertools.count(start):
            yield self.window(i % self.n)


class HFDatasetSource:
    """Packed windows of a Hugging Face ``datasets`` dataset the user already has.

    Map-style datasets are read in a seeded order redrawn every epoch; ``IterableDataset`` (streaming)
    ones in their own order (call their ``shuffle`` first if wanted; ``set_epoch`` is called per pass).
    Examples with an ``input_ids`` column are used as they are; otherwise ``text_column`` is tokenized —
    once, when the source is built (``datasets.map``, cached on disk for file-backed data), for map-style
    datasets, and as it streams for streaming ones (read in the training process only). Documents are
    joined with ``eos_id`` and cut into windows. Sources are read sequentially, so a resumed or non-first
    rank or worker re-reads the token ids before its own windows (it does not tokenize them again).

    Args:
        dataset: a ``datasets.Dataset`` or ``datasets.IterableDataset``.
        length: tokens per window.
        tokenizer: a tokenizer (callable on a list of texts) when the data is text.
        text_column: the text column.
        eos_id: document separator (default: the tokenizer's EOS).
        seed: seeds map-style epoch orders.
    """

    def __init__(self, dataset: Any, length: int, tokenizer: Any = None, text_column: str = "text",
                 eos_id: int | None = None, seed: int = 0) -> None:
        self.dataset = dataset
        self.length = length
        self.seed = seed
        self.tokenizer = tokenizer
        self.text_column = text_column
        cols = getattr(dataset, "column_names", None)
        if cols is None:  # a streaming dataset whose features are unknown: peek at its first example
            try:
                first = next(iter(dataset))
            except StopIteration:
                raise DataMissingError("a datasets source yielded no examples; give every domain some data") from None
            cols = list(first) if isinstance(first, Mapping) else []
        if not (cols and "input_ids" in cols):
            if tokenizer is None:
                raise ConfigError("HFDatasetSource", [f"dataset has no 'input_ids' column (columns: {cols}); pass "
                                                      f"tokenizer= to tokenize its {text_column!r} column"])
            if cols is not None and text_column not in cols:
                raise ConfigError("HFDatasetSource", [f"text_column {text_column!r} is not a column of the dataset "
                                                      f"(columns: {cols}); pass text_column="])
        self.eos_id = eos_id if eos_id is not None else getattr(tokenizer, "eos_token_id", None)
        if self.eos_id is None:
            raise ConfigError("HFDatasetSource", ["no document separator: pass eos_id= or a tokenizer with an EOS"])
        self.streaming = not hasattr(dataset, "__len__")
        if not self.streaming and len(dataset) == 0:
            raise DataMissingError("a datasets source has no examples; give every domain some data")
        if not self.streaming and "input_ids" not in cols:
            # tokenize every text once, here, rather than in every DataLoader worker and every pass (each worker
            # reads the whole sequence to find its windows); datasets caches the result of file-backed data
            self.dataset = dataset.map(lambda batch: {"input_ids": tokenizer(batch[text_column],
                                                                             add_special_tokens=False)["input_ids"]},
                                       batched=True, batch_size=256, remove_columns=[text_column], desc="tokenizing")

    def _examples(self, epoch: int) -> Iterator[dict]:
        if self.streaming:
            if get_worker_info() is not None:  # datasets would give each worker a different share of the shards
                raise SourceUseError("a streaming (Iterable) datasets source is read in the training process: use "
                                     "DataLoader num_workers=0, or a map-style Dataset")
            if hasattr(self.dataset, "set_epoch"):
                self.dataset.set_epoch(epoch)
            yield from self.dataset
            return
        order = np.random.Generator(np.random.PCG64([self.seed, epoch])).permutation(len(self.dataset))
        for i in range(0, len(order), 256):
            yield from self.dataset.select(order[i: i + 256])

    def _docs(self) -> Iterator[list[int]]:
        for epoch in itertools.count():
            empty = True
            batch: list[str] = []
            for ex in self._examples(epoch):
                empty = False
                if "input_ids" in ex:
                    yield list(ex["input_ids"])
                    continue
                batch.append(ex[self.text_column])
                if len(batch) == 64:  # tokenize in batches: fast tokenizers are much faster that way
                    yield from self.tokenizer(batch, add_special_tokens=False)["input_ids"]
                    batch = []
            if batch:
                yield from self.tokenizer(batch, add_special_tokens=False)["input_ids"]
            if empty:
                raise DataMissingError("a datasets source yielded no examples; give every domain some data")

    def windows(self, start: int) -> Iterator[np.ndarray]:
        buf: list[int] = []
        i = 0
        for doc in self._docs():
            buf.extend(doc)
            buf.append(self.eos_id)
            while len(buf) >= self.length:
                if i >= start:
                    yield np.asarray(buf[: self.length], dtype=np.int64)
                buf = buf[self.length:]
                i += 1


# ---- the shared schedule ---------------------------------------------------------------------------
class WeightSchedule:
    """Mixtures and the first batch each applies to, in shared memory (visible to DataLoader workers).

    Row ``r`` is ``[first_batch, w_1, ..., w_K]``; rows are appended by the training process and read by
    every worker for every sample. ``late`` counts rows that arrived after a worker passed their batch.

    Args:
        space: the domain space.
        initial: the mixture from batch 0.
        capacity: rows available (one per update).
    """

    def __init__(self, space: DomainSpace, initial: DomainWeights, capacity: int = 4096) -> None:
        self.space = space
        self.table = torch.zeros((capacity, space.k + 1), dtype=torch.float64).share_memory_()
        self.meta = torch.zeros(3, dtype=torch.int64).share_memory_()  # [rows, late, version]
        self.table[0, 1:] = torch.tensor(initial.values)
        self.meta[0] = 1

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        # a copy (pickle, deepcopy) holds private tensors: shared again, so its own DataLoader workers see changes
        self.table, self.meta = _shared(self.table), _shared(self.meta)

    @property
    def rows(self) -> int:
        return int(self.meta[0])

    @property
    def late(self) -> int:
        return int(self.meta[1])

    def set(self, weights: DomainWeights, first_batch: int) -> None:
        """Apply ``weights`` from batch ``first_batch`` on (not earlier than the last row's batch)."""
        if weights.space.names != self.space.names:
            raise UsageError(f"WeightSchedule.set: weights for domains {list(weights.space.names)}, the schedule has "
                             f"{list(self.space.names)}; build the weights in the schedule's space")
        n = self.rows
        last = int(self.table[n - 1, 0])
        if first_batch < last:
            raise UsageError(f"WeightSchedule.set: first_batch {first_batch} is before the last change at batch "
                             f"{last}; changes must move forward")
        row = n - 1 if first_batch == last and n > 1 else n
        if row >= self.table.shape[0]:
            raise ScheduleFullError(f"the weights schedule is full ({self.table.shape[0]} rows); build it with "
                                    f"WeightSchedule(..., capacity=) larger than the number of updates")
        self.table[row, 1:] = torch.tensor(weights.values)  # values first, then publish the row
        self.table[row, 0] = float(first_batch)
        self.meta[0] = row + 1
        self.meta[2] += 1

    def entries(self) -> list[tuple[int, list[float]]]:
        """``[(first_batch, weights), ...]`` (JSON-able)."""
        t = self.table[: self.rows].numpy()
        return [(int(r[0]), r[1:].tolist()) for r in t]

    def load_entries(self, entries: Sequence[tuple[int, Sequence[float]]]) -> None:
        """Replace the schedule with saved entries (resume)."""
        if len(entries) > self.table.shape[0]:
            raise ScheduleFullError(f"{len(entries)} saved schedule rows exceed capacity {self.table.shape[0]}")
        for i, (b, w) in enumerate(entries):
            self.table[i, 1:] = torch.tensor(w, dtype=torch.float64)
            self.table[i, 0] = float(b)
        self.meta[0] = len(entries)
        self.meta[2] += 1


class _Reader:
    """A worker's view of the schedule: cumulative weights (:func:`~mixagent.sampling.cumulative`) for a
    batch index, with late-row detection."""

    def __init__(self, schedule: WeightSchedule) -> None:
        self.table = schedule.table.numpy()
        self.meta = schedule.meta.numpy()
        self.version = -1
        self.rows = np.zeros((0, schedule.space.k + 1))
        self.cums = np.zeros((0, schedule.space.k))
        self.made = -1  # highest batch this reader has looked up

    def cum_at(self, batch: int) -> np.ndarray:
        if int(self.meta[2]) != self.version:  # the schedule changed: refresh, and flag rows that came late
            self.version = int(self.meta[2])
            rows = self.table[: int(self.meta[0])].copy()
            for i in range(max(0, len(self.rows) - 1), len(rows)):  # rows are appended; only the last is replaced
                new = i >= len(self.rows) or not np.array_equal(rows[i], self.rows[i])
                if new and rows[i, 0] <= self.made:
                    self.meta[1] += 1
            cums = np.cumsum(rows[:, 1:], axis=1)  # row by row exactly as sampling.cumulative (rows are valid weights)
            self.rows, self.cums = rows, cums / cums[:, -1:]
        self.made = max(self.made, batch)
        return self.cums[int(np.searchsorted(self.rows[:, 0], batch, side="right")) - 1]


# ---- the dataset -----------------------------------------------------------------------------------
class MixtureDataset(IterableDataset):
    """Training samples drawn under the current mixture (see the module docstring for the layout).

    Items are ``{"input_ids", "labels"}`` (``seq_len`` int64 tokens each; causal LMs shift labels
    themselves), plus ``"domain_ids"`` when ``return_domain_ids`` (for loops that use it; a Trainer
    would pass it to the model).

    Args:
        sources: one :class:`WindowSource` per domain, keyed by name (every domain of ``space``).
        space: the domain space.
        batch_size: samples per batch on each rank (the DataLoader's batch size).
        seed: seeds the domain picks.
        schedule: the shared weights schedule (default: a new one starting at ``initial``).
        initial: the starting mixture when no schedule is given (default uniform).
        rank: this process's rank; ``world_size``: number of ranks (default: from torch.distributed).
        all_ranks: yield every rank's samples of each batch (set when something else shards the stream,
            as accelerate's ``IterableDatasetShard`` does under a multi-process Trainer).
        return_domain_ids: add ``domain_ids`` to each item.
    """

    def __init__(self, sources: Mapping[str, WindowSource], space: DomainSpace, batch_size: int, seed: int = 0,
                 schedule: WeightSchedule | None = None, initial: DomainWeights | None = None,
                 rank: int | None = None, world_size: int | None = None, all_ranks: bool = False,
                 return_domain_ids: bool = False) -> None:
        missing = [n for n in space.names if n not in sources]
        unknown = [n for n in sources if n not in space.names]
        if missing or unknown:
            raise ConfigError("MixtureDataset", [f"sources must name every domain of space {space.name!r}: missing "
                                                 f"{missing}, unknown {unknown}"])
        lengths = {n: s.length for n, s in sources.items()}
        if len(set(lengths.values())) != 1:
            raise ConfigError("MixtureDataset", [f"sources have different window lengths {lengths}; build them "
                                                 f"with the same length"])
        if batch_size < 1:
            raise ConfigError("MixtureDataset", [f"batch_size must be >= 1, got {batch_size}"])
        self.sources = [sources[n] for n in space.names]
        self.indexed = [isinstance(src, IndexedWindowSource) for src in self.sources]
        self.stream = MixtureStream([src.n if ix else 0 for src, ix in zip(self.sources, self.indexed)], seed)
        self.space = space
        self.seq_len = self.sources[0].length
        self.batch_size = batch_size
        self.seed = seed
        initial = initial if initial is not None else DomainWeights.normalised(space, np.ones(space.k))
        self.schedule = schedule if schedule is not None else WeightSchedule(space, initial)
        if rank is None or world_size is None:
            dist = torch.distributed.is_available() and torch.distributed.is_initialized()
            rank = torch.distributed.get_rank() if dist else 0
            world_size = torch.distributed.get_world_size() if dist else 1
        self.configure(rank=rank, world_size=world_size, all_ranks=all_ranks)
        self.return_domain_ids = return_domain_ids
        # where passes start, shared with DataLoader workers (see _join_pass): [current pass, its start (a
        # global sample index), fresh flag], then per reader slot (0: this process, 1 + i: worker i) the pass it
        # last joined (its progress belongs to that pass), then each slot's progress (samples handed out)
        self._passes = torch.zeros(3 + 2 * _SLOTS, dtype=torch.int64).share_memory_()
        self._passes[2] = 1
        self._passes[3: 3 + _SLOTS] = -1
        self._lock = _pass_lock()
        self._forget_replay()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if not _spawning():  # a copy (pickle, deepcopy) is a dataset of its own: it gets its own lock
            state["_lock"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._passes = _shared(self._passes)  # a copy's DataLoader workers report their progress through it
        if self._lock is None:
            self._lock = _pass_lock()

    @classmethod
    def from_token_streams(cls, streams: Sequence[np.ndarray], space: DomainSpace, seq_len: int, batch_size: int,
                           seed: int = 0, **kwargs: Any) -> MixtureDataset:
        """From local tokenized corpora: one token array per domain, in the space's order. With
        ``seq_len`` = the proxy's window length and the same seed, the windows are the environment's."""
        if len(streams) != space.k:
            raise ConfigError("MixtureDataset", [f"{len(streams)} token streams for {space.k} domains"])
        sources = {n: TokenArraySource(s, seq_len) for n, s in zip(space.names, streams)}
        return cls(sources, space, batch_size, seed=seed, **kwargs)

    def configure(self, rank: int, world_size: int, all_ranks: bool = False) -> None:
        """Set the distributed layout (called by the callback before the DataLoader starts)."""
        if not 0 <= rank < world_size:
            raise ConfigError("MixtureDataset", [f"rank {rank} is not in [0, world_size={world_size})"])
        batch = self.start_batch if hasattr(self, "_passes") else 0  # positions count samples of the old layout
        self.rank, self.world_size, self.all_ranks = rank, world_size, all_ranks
        self._forget_replay()  # picks depend on the world size
        if hasattr(self, "_passes"):
            self.seek(batch)

    def _forget_replay(self) -> None:
        self._replayed = (0, np.zeros(self.space.k, dtype=np.int64), 1, self.schedule.table[0].numpy().copy())

    @property
    def samples_per_batch(self) -> int:
        return self.batch_size * self.world_size

    def draws(self, batch: int, cum: np.ndarray) -> np.ndarray:
        """Domain ``(samples_per_batch,)`` of every sample of global batch ``batch`` under cumulative weights
        ``cum`` (:func:`~mixagent.sampling.cumulative`)."""
        n = self.samples_per_batch
        return self.stream.domains(batch * n, n, cum)

    def cursors_at(self, batch: int) -> np.ndarray:
        """Per-domain windows used by batches ``< batch`` (replays the picks; reads no data). The last
        replay is kept, so periodic checkpoints replay only the batches since the previous one (mixtures
        for past batches never change: they are written ahead of the batches they apply to)."""
        rows = self.schedule.table[: self.schedule.rows].numpy()
        done, counts, n, last = self._replayed
        # reusable when no row written since then applies before it (a late change would)
        valid = done <= batch and n <= len(rows) and np.array_equal(rows[n - 1], last) and np.all(rows[n:, 0] >= done)
        start, counts = (done, counts.copy()) if valid else (0, np.zeros(self.space.k, dtype=np.int64))
        reader = _Reader(self.schedule)
        for b in range(start, batch):
            counts += np.bincount(self.draws(b, reader.cum_at(b)), minlength=self.space.k)
        self._replayed = (batch, counts.copy(), len(rows), rows[-1].copy())
        return counts

    def state_dict(self, consumed_batches: int) -> dict[str, Any]:
        """JSON-able state after ``consumed_batches`` batches: seed, layout, schedule and cursors."""
        return {"seed": self.seed, "batch_size": self.batch_size, "world_size": self.world_size,
                "seq_len": self.seq_len, "consumed_batches": consumed_batches,
                "schedule": self.schedule.entries(), "cursors": self.cursors_at(consumed_batches).tolist()}

    def check_state(self, state: dict[str, Any]) -> None:
        """Raise unless ``state`` was saved by a dataset of the same seed and layout and every value in it is
        valid (schedule rows: batches from 0, non-decreasing; weights: K finite, non-negative, sum 1).

        Raises:
            ConfigError: another seed, batch size, number of ranks or sequence length.
            CorruptArtifactError: an invalid value, named by its place (e.g. ``schedule[2].weights``).
        """
        problems = self._state_problems(state)
        if problems:
            raise CorruptArtifactError(f"the saved data state is invalid: {'; '.join(problems)}; it was edited or "
                                       f"torn — resume from another checkpoint")
        mine = {"seed": self.seed, "batch_size": self.batch_size, "world_size": self.world_size,
                "seq_len": self.seq_len}
        diff = {k: (state.get(k), v) for k, v in mine.items() if state.get(k) != v}
        if diff:
            shown = ", ".join(f"{k} (saved {a}, now {b})" for k, (a, b) in diff.items())
            raise ConfigError("MixtureDataset.load_state_dict", [
                f"the saved data state differs in {shown}; resume with the same seed, batch size, number of ranks "
                f"and sequence length"])

    def _state_problems(self, state: dict[str, Any]) -> list[str]:
        problems = [f"{k} is {state.get(k)!r}; expected an integer >= 0" for k in ("consumed_batches",)
                    if not is_int(state.get(k), 0)]
        rows = state.get("schedule")
        if not (isinstance(rows, list) and rows and len(rows) <= self.schedule.table.shape[0]):
            return problems + [f"schedule has {len(rows) if isinstance(rows, list) else rows!r} rows; expected 1 to "
                               f"{self.schedule.table.shape[0]}"]
        last = 0
        for i, row in enumerate(rows):
            if not (isinstance(row, list | tuple) and len(row) == 2):
                problems.append(f"schedule[{i}] is {row!r}; expected [first_batch, weights]")
                continue
            batch, weights = row
            if not is_int(batch, last) or (i == 0 and batch != 0):
                problems.append(f"schedule[{i}].first_batch is {batch!r}; expected an integer >= {last}"
                                + (" (0 for the first row)" if i == 0 else ""))
            else:
                last = batch
            try:
                DomainWeights(self.space, weights)
            except (MixagentError, TypeError, ValueError) as exc:
                problems.append(f"schedule[{i}].weights: {exc}")
        cursors = state.get("cursors")
        if not (isinstance(cursors, list) and len(cursors) == self.space.k and all(is_int(c, 0) for c in cursors)):
            problems.append(f"cursors is {cursors!r}; expected {self.space.k} integers >= 0")
        return problems

    def load_state_dict(self, state: dict[str, Any], skip: bool = True) -> None:
        """Restore the schedule; with ``skip`` the next iteration starts after the consumed batches (off
        when the training loop skips them itself, as the Trainer does unless ``ignore_data_skip``)."""
        self.check_state(state)
        self.schedule.load_entries(state["schedule"])
        self._forget_replay()
        self.seek(int(state["consumed_batches"]) if skip else 0)

    # ---- where a pass starts -----------------------------------------------------------------------
    @property
    def start_batch(self) -> int:
        """The batch the next pass starts in, when no pass has run since :meth:`seek` (else the last start)."""
        return int(self._passes[1]) // self.samples_per_batch

    def seek(self, batch: int) -> None:
        """Start the next pass over the dataset at global batch ``batch`` (``seek(0)`` restarts the stream;
        resuming seeks to the consumed batches). Without it, a new pass continues the stream: exactly after
        the last sample the previous pass handed out in this process, or, with DataLoader workers, after the
        samples they had prepared (prefetched ones the loop never took are skipped, never repeated).

        Raises:
            UsageError: a negative batch.
        """
        if not isinstance(batch, int) or batch < 0:
            raise UsageError(f"MixtureDataset.seek: batch must be an integer >= 0, got {batch!r}")
        with self._lock:
            self._passes[0] += 1  # progress recorded from here on by readers of older passes is ignored
            self._passes[1] = batch * self.samples_per_batch
            self._passes[2] = 1

    def _join_pass(self, slot: int) -> int:
        """The sample a reader starting to iterate begins at, the same for every reader of a pass.

        A reader whose slot already joined the current pass is the first of a new one: it folds the current
        pass's progress into the new start. Other readers join the current pass. After :meth:`seek` (or at
        first) the first reader takes the sought start as it is. Pass numbers count passes, so a seeded
        DataLoader (same worker seeds every pass) and persistent workers are told apart alike.
        """
        p = self._passes
        with self._lock:
            cur = int(p[0])
            if int(p[2]):  # the first reader after a seek (or ever)
                p[2] = 0
            elif slot == 0 or int(p[3 + slot]) == cur:  # this reader already read the current pass: a new one
                progress = p[3 + _SLOTS:][p[3: 3 + _SLOTS] == cur]
                p[1] = max(int(p[1]), int(progress.max()) if len(progress) else 0)
                cur += 1
                p[0] = cur
            p[3 + slot] = cur
            p[3 + _SLOTS + slot] = int(p[1])
            return int(p[1])

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        n_workers, worker = (info.num_workers, info.id) if info else (1, 0)
        if n_workers > MAX_WORKERS:
            raise SourceUseError(f"MixtureDataset supports up to {MAX_WORKERS} DataLoader workers, got {n_workers}")
        slot = 1 + worker if info else 0
        first = self._join_pass(slot)
        progress, passes = 3 + _SLOTS + slot, self._passes.numpy()  # a numpy view: cheap per-sample writes
        spb = self.samples_per_batch
        start = first // spb
        reader = _Reader(self.schedule)
        k, bs = self.space.k, self.batch_size
        lo, hi = (0, spb) if self.all_ranks else (self.rank * bs, (self.rank + 1) * bs)
        cursors = self.cursors_at(start)
        iters = [None if ix else src.windows(int(c)) for src, ix, c in zip(self.sources, self.indexed, cursors)]
        positions = cursors.copy()  # next window index each iterator yields
        for b in itertools.count(start):
            domains = self.draws(b, reader.cum_at(b))
            if (b - start) % n_workers != worker:  # another worker's batch: only advance the cursors
                cursors += np.bincount(domains, minlength=k)
                continue
            for s in range(len(domains)):
                d = domains[s]
                c = cursors[d]
                cursors[d] += 1
                if not lo <= s < hi or b * spb + s < first:  # another rank's, or handed out by an earlier pass
                    continue
                it = iters[d]
                if it is None:  # a token array: the stream's window order, random access
                    window = self.sources[d].window(self.stream.window(d, c))
                else:
                    while positions[d] < c:  # skip windows other ranks/workers took
                        next(it)
                        positions[d] += 1
                    window = next(it)
                    positions[d] += 1
                ids = torch.from_numpy(np.asarray(window, dtype=np.int64))
                item = {"input_ids": ids, "labels": ids.clone()}  # a loop may mask labels in place
                if self.return_domain_ids:
                    item["domain_ids"] = torch.tensor(int(d))
                passes[progress] = b * spb + s + 1  # before the item leaves: a loop may stop right after it
                yield item
