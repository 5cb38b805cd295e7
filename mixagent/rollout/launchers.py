"""Launchers run a job's tasks (collection trees, online-evaluation episodes) on workers and stream their
events back to the driver (the one writer).

* ``inline``: in the driver process (debugging; tests inject env factories through it).
* ``local`` (default): a pool of worker processes on this machine fed from one task queue.
* ``ray``: one Ray actor per worker, on a local Ray or a cluster (``--address``); every node needs mixagent
  installed with its data built (``make base-model``).

A worker builds its runner once (``setup.make_runner()``: the one :class:`mixagent.rollout.runner.Runner`),
then runs tasks (``runner.run(task)``) until they run out. Tasks are
independent and deterministic, so which worker runs which task does not change the results.

Events are small dataclasses: the launcher's own (:class:`Ready`, one per worker) and the runner's (the
job defines them, e.g. ``mixagent.rollout.tree.Step``). A failed worker raises :class:`WorkerError`
in the driver; what the driver stored before is kept, and the job's ``--resume`` continues it.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import dataclasses
import multiprocessing as mp
import os
import queue
import signal
import traceback
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from mixagent.errors import ConfigError, WorkerError

__all__ = ["Launcher", "TaskRunner", "RunnerFactory", "InlineLauncher", "LocalLauncher", "RayLauncher", "LAUNCHERS",
           "cpu_count", "Ready"]


@dataclasses.dataclass(frozen=True)
class Ready:
    """A worker built its runner; ``identity`` is the runner's (its env, base model, data)."""

    identity: dict


@dataclasses.dataclass(frozen=True)
class _WorkerDone:
    pid: int


@dataclasses.dataclass(frozen=True)
class _WorkerFailed:
    where: str
    traceback: str


_KEPT = ("what the driver stored before (trajectories, episodes) is kept: fix the cause and rerun the same "
         "command with --resume")


class TaskRunner(Protocol):
    """Runs one task at a time in a worker and yields its events (:class:`mixagent.rollout.runner.Runner`)."""

    identity: dict

    def run(self, task: Any) -> Iterator[Any]:
        """Yield the task's events (picklable dataclasses)."""


class RunnerFactory(Protocol):
    """Picklable description of a worker: builds its runner once per worker
    (:class:`mixagent.rollout.runner.RunnerSetup`)."""

    threads: int

    def make_runner(self) -> TaskRunner:
        """Build the worker's runner (env, model...)."""


def cpu_count() -> int:
    """Cores this process may use (respects affinity masks and container CPU sets)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class Launcher(Protocol):
    """Runs tasks on ``workers`` workers and yields the runners' events (plus one :class:`Ready` per worker)."""

    def events(self, setup: RunnerFactory, tasks: list) -> Iterator[Any]:
        """Yield events until every task is done; raise :class:`WorkerError` if a worker fails."""

    def close(self) -> None:
        """Stop every worker (also after an error)."""


class InlineLauncher:
    """Runs every tree in the calling process, one after another."""

    def __init__(self, workers: int = 1, address: str = "") -> None:
        self.runner: TaskRunner | None = None

    def events(self, setup: RunnerFactory, tasks: list) -> Iterator[Any]:
        self.runner = self.runner or setup.make_runner()
        yield Ready(self.runner.identity)
        for task in tasks:
            yield from self.runner.run(task)

    def close(self) -> None:
        pass


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this worker when the driver dies, even by SIGKILL (no orphans burning CPU)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _local_worker(setup: RunnerFactory, tasks: mp.Queue, events: mp.Queue, parent: int) -> None:
    _die_with_parent()
    try:
        runner = setup.make_runner()
        events.put(Ready(runner.identity))
        while (task := tasks.get()) is not None:
            for event in runner.run(task):
                if os.getppid() != parent:  # the driver is gone (non-Linux fallback)
                    return
                events.put(event)
        events.put(_WorkerDone(os.getpid()))
    except BaseException:  # noqa: BLE001  (anything a worker hits is reported to the driver)
        events.put(_WorkerFailed(f"worker pid {os.getpid()}", traceback.format_exc()))


class LocalLauncher:
    """A pool of ``workers`` processes (spawned, so each has a clean torch) fed from one task queue.

    Args:
        workers: worker processes.
    """

    def __init__(self, workers: int, address: str = "") -> None:
        self.workers = workers
        self.procs: list[mp.Process] = []

    def events(self, setup: RunnerFactory, tasks: list) -> Iterator[Any]:
        ctx = mp.get_context("spawn")
        task_q, event_q = ctx.Queue(), ctx.Queue()
        for task in tasks:
            task_q.put(task)
        for _ in range(self.workers):
            task_q.put(None)
        self.procs = [ctx.Process(target=_local_worker, args=(setup, task_q, event_q, os.getpid()), daemon=True,
                                  name=f"mixagent-worker-{i}") for i in range(self.workers)]
        for p in self.procs:  # spawn re-imports the caller's __main__: scripts need an `if __name__ == "__main__":`
            p.start()
        finished = 0
        while finished < self.workers:
            try:
                event = event_q.get(timeout=2.0)
            except queue.Empty:
                dead = [p for p in self.procs if p.exitcode not in (None, 0)]
                if dead:
                    raise WorkerError(f"worker {dead[0].name} died with exit code {dead[0].exitcode} (a negative "
                                  f"code is the signal, e.g. -9 = killed, often out of memory); {_KEPT}") from None
                continue
            if isinstance(event, _WorkerDone):
                finished += 1
            elif isinstance(event, _WorkerFailed):
                raise WorkerError(f"{event.where} failed; {_KEPT}. Its traceback:\n{event.traceback}")
            else:
                yield event

    def close(self) -> None:
        started = [p for p in self.procs if p.pid is not None]
        for p in started:
            if p.is_alive():
                p.terminate()
        for p in started:
            p.join(timeout=10)
        self.procs = []


class _RayWorker:
    """The Ray actor: one runner per actor, task events streamed back as generator items."""

    def __init__(self, setup: RunnerFactory) -> None:
        self.runner = setup.make_runner()

    def identity(self) -> dict:
        return self.runner.identity

    def run(self, task: Any) -> Iterator[Any]:
        yield from self.runner.run(task)


class RayLauncher:
    """One Ray actor per worker (``num_cpus`` = the worker's torch threads), trees handed to idle actors.

    Args:
        workers: actors to start.
        address: a Ray cluster address; empty starts a local Ray on this machine.
    """

    def __init__(self, workers: int, address: str = "") -> None:
        try:
            import ray
        except ImportError:
            raise ConfigError("launcher", ["launcher 'ray' needs Ray: pip install 'ray==2.60.0' (or "
                                           "pip install -e '.[ray]')"]) from None
        self.ray, self.workers, self.address = ray, workers, address
        self.actors: list = []
        self._started = False

    def events(self, setup: RunnerFactory, tasks: list) -> Iterator[Any]:
        ray = self.ray
        if not ray.is_initialized():
            kwargs = {"address": self.address} if self.address else {"num_cpus": self.workers * setup.threads}
            ray.init(include_dashboard=False, logging_level="WARNING", log_to_driver=False, **kwargs)
            self._started = True
        actor_cls = ray.remote(num_cpus=setup.threads)(_RayWorker)
        self.actors = [actor_cls.remote(setup) for _ in range(self.workers)]
        try:
            for identity in ray.get([a.identity.remote() for a in self.actors]):
                yield Ready(identity)
            pending = collections.deque(tasks)
            running: dict = {}

            def assign(actor) -> None:
                if pending:
                    running[actor.run.options(num_returns="streaming").remote(pending.popleft())] = actor

            for actor in self.actors:
                assign(actor)
            while running:
                ready, _ = ray.wait(list(running), num_returns=1, timeout=None)
                for gen in ready:
                    try:
                        event = ray.get(next(gen))
                    except StopIteration:
                        assign(running.pop(gen))
                        continue
                    yield event
        except ray.exceptions.RayError as exc:
            raise WorkerError(f"a Ray worker failed; {_KEPT}. Ray says:\n{exc}") from None

    def close(self) -> None:
        for actor in self.actors:
            with contextlib.suppress(Exception):
                self.ray.kill(actor)
        self.actors = []
        if self._started:
            self.ray.shutdown()
            self._started = False


LAUNCHERS: dict[str, Callable[[int, str], Launcher]] = {
    "inline": InlineLauncher,
    "local": LocalLauncher,
    "ray": RayLauncher,
}
