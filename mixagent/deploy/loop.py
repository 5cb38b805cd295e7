"""The plain-loop API: one object that evaluates the model, asks the scheduler for a mixture, publishes
it to the data and saves/restores everything a resumed run needs — without transformers.

.. code-block:: python

    mixer = Mixer(MixingScheduler(policy, space), dataset, HeldOutLoss(windows, space))
    loader = DataLoader(dataset, batch_size=dataset.batch_size, num_workers=2)
    mixer.begin(model)                                  # start evaluation + first mixture, from batch 0
    for step, batch in enumerate(loader, start=1):
        ...                                             # forward, backward, optimizer step
        if step % 50 == 0:
            mixer.update(model, consumed_batches=step, progress=step / total_steps)
        if step % 500 == 0:
            mixer.save(ckpt_dir / "mixagent_state.json", consumed_batches=step)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mixagent.config import is_int
from mixagent.deploy.distributed import broadcast_array, dist_info
from mixagent.deploy.mixture import MixtureDataset, default_lag
from mixagent.deploy.scheduler import MixingScheduler
from mixagent.domains import DomainWeights
from mixagent.env.evaluation import EvalResult
from mixagent.errors import ConfigError, CorruptArtifactError, SchemaVersionError, UsageError

__all__ = ["Mixer", "STATE_FILE", "STATE_KIND", "STATE_FORMAT"]

log = logging.getLogger(__name__)
STATE_FILE = "mixagent_state.json"
STATE_KIND = "mixagent.deploy_state"
STATE_FORMAT = 2  # 2: the data stream is mixagent.sampling's (format 1 drew domains with Philox per batch)


class Mixer:
    """Scheduler + shared schedule + evaluation for one training run.

    Args:
        scheduler: the guarded policy.
        dataset: the run's :class:`MixtureDataset` (its schedule receives the mixtures).
        evaluate: ``model -> EvalResult`` (e.g. :class:`~mixagent.deploy.heldout.HeldOutLoss` or
            :class:`~mixagent.env.evaluation.Evaluator`); may be ``None`` when results are passed in.
        lag: batches between a decision and the first batch it applies to; at least the batches in flight
            (:func:`~mixagent.deploy.mixture.default_lag`; the default suits ``num_workers=0``).
    """

    def __init__(self, scheduler: MixingScheduler, dataset: MixtureDataset,
                 evaluate: Callable[[torch.nn.Module], EvalResult] | None = None, lag: int | None = None) -> None:
        if scheduler.space.names != dataset.space.names:
            raise ConfigError("Mixer", [f"the scheduler's domains {list(scheduler.space.names)} differ from the "
                                        f"dataset's {list(dataset.space.names)}; build both from the same space"])
        self.scheduler = scheduler
        self.dataset = dataset
        self.evaluate = evaluate
        self.lag = default_lag(0) if lag is None else lag
        if self.lag < 1:
            raise ConfigError("Mixer", [f"lag must be >= 1 batch, got {self.lag}"])
        self._late_seen = 0

    @property
    def tokens_per_batch(self) -> int:
        """Training tokens of one batch over all ranks (the layout may change until training starts)."""
        return self.dataset.samples_per_batch * self.dataset.seq_len

    @property
    def weights(self) -> DomainWeights:
        return self.scheduler.weights

    def _eval(self, model: torch.nn.Module | None, result: EvalResult | None, tokens: int) -> EvalResult:
        if result is not None:
            return result
        if self.evaluate is None or model is None:
            raise UsageError("Mixer: no evaluation to decide from; give Mixer(evaluate=...) or pass result= (and "
                             "the model) to begin()/update()")
        was_training = model.training
        try:
            return self.evaluate(model, tokens_seen=tokens)
        finally:
            model.train(was_training)  # evaluators switch to eval mode; training continues as it was

    def begin(self, model: torch.nn.Module | None = None, result: EvalResult | None = None,
              lr: float | None = None) -> DomainWeights:
        """Evaluate the starting model and apply the policy's first mixture from batch 0 (call before the
        DataLoader is iterated). ``lr``: the first step's learning rate over the peak (needed only by
        policies that observe it, see :meth:`MixingScheduler.step`)."""
        self._decide(self._eval(model, result, 0), 0.0, first_batch=0, lr=lr)
        return self.weights

    def update(self, model: torch.nn.Module | None = None, consumed_batches: int = 0, progress: float = 0.0,
               result: EvalResult | None = None, lr: float | None = None) -> DomainWeights:
        """Evaluate, decide, and apply the new mixture from batch ``consumed_batches + lag`` on (``lr`` as in
        :meth:`begin`, for the coming step)."""
        if not self.scheduler.updates:
            raise UsageError("Mixer.update was called before Mixer.begin(): call begin(model) once before the first "
                             "update (it records the start state and the first mixture)")
        res = self._eval(model, result, consumed_batches * self.tokens_per_batch)
        self._decide(res, progress, first_batch=consumed_batches + self.lag, lr=lr)
        late = self.dataset.schedule.late
        if late > self._late_seen:
            log.warning("%d mixture change(s) reached batches the DataLoader had already prepared; raise lag "
                        "(now %d) to at least num_workers * prefetch_factor + 2", late - self._late_seen, self.lag)
            self._late_seen = late
        return self.weights

    def _decide(self, result: EvalResult, progress: float, first_batch: int, lr: float | None = None) -> None:
        weights = self.scheduler.step(result, progress, lr)
        # every rank computed from the same all-reduced evaluation; rank 0's answer is made exact everywhere
        values = broadcast_array(weights.values)
        if not np.array_equal(values, weights.values):
            log.warning("rank %d computed a different mixture than rank 0; using rank 0's", dist_info()[0])
            self.scheduler.adopt(values)
        self.dataset.schedule.set(self.scheduler.weights, first_batch)
        log.info("mixture update %d (progress %.2f, from batch %d): %s", self.scheduler.updates - 1, progress,
                 first_batch, ", ".join(f"{n}={w:.3f}" for n, w in self.scheduler.weights.to_mapping().items()))

    # ---- state -------------------------------------------------------------------------------------
    def state_dict(self, consumed_batches: int) -> dict[str, Any]:
        return {"kind": STATE_KIND, "format": STATE_FORMAT,
                "consumed_batches": consumed_batches, "lag": self.lag,
                "scheduler": self.scheduler.state_dict(), "data": self.dataset.state_dict(consumed_batches)}

    def load_state_dict(self, state: dict[str, Any], skip: bool = True) -> int:
        """Restore a :meth:`state_dict`; returns the consumed batches. ``skip=False`` when the training
        loop itself skips the consumed batches (the Trainer's default)."""
        if not isinstance(state, dict):
            raise CorruptArtifactError(f"a deployment state must be a JSON object, got {type(state).__name__}")
        if state.get("kind") != STATE_KIND:
            raise CorruptArtifactError(f"not a mixagent deployment state (kind {state.get('kind')!r}); pass the "
                                       f"{STATE_FILE} a Mixer or MixAgentCallback saved")
        if state.get("format") != STATE_FORMAT:
            why = (" (format 1 was written before deployment shared the environment's sampler: its data stream "
                   "cannot be continued exactly)" if state.get("format") == 1 else "")
            raise SchemaVersionError(f"deployment state format {state.get('format')!r} is not readable (this "
                                     f"mixagent reads format {STATE_FORMAT}){why}; resume with the version that "
                                     f"wrote it, or start a new run")
        # validate everything before changing anything: a refused state leaves this Mixer as it was
        consumed, lag, sched, data = (state.get(k) for k in ("consumed_batches", "lag", "scheduler", "data"))
        problems = []
        if not is_int(consumed, 0):
            problems.append(f"consumed_batches is {consumed!r}; expected an integer >= 0")
        elif isinstance(data, dict) and data.get("consumed_batches") != consumed:
            problems.append(f"consumed_batches {consumed} differs from the data section's "
                            f"{data.get('consumed_batches')!r}")
        if lag is not None and not is_int(lag, 1):
            problems.append(f"lag is {lag!r}; expected an integer >= 1")
        problems += [f"{k} is {type(v).__name__}; expected an object" for k, v in (("scheduler", sched),
                                                                                  ("data", data))
                     if not isinstance(v, dict)]
        if problems:
            raise CorruptArtifactError(f"the saved deployment state is invalid: {'; '.join(problems)}; it was "
                                       f"edited or torn — resume from another checkpoint")
        self.scheduler.check_state(sched)  # names the differing scheduler keys or invalid values, if any
        self.dataset.check_state(data)  # names the differing data keys or invalid values, if any
        saved_lag = int(state.get("lag", self.lag))
        if saved_lag != self.lag:  # later switches move; keep the larger lag, so none arrives late
            log.warning("the saved run used lag %d, this one %d: mixture switches after the resume point move "
                        "(resume with the same num_workers to continue exactly)", saved_lag, self.lag)
            self.lag = max(saved_lag, self.lag)
        self.scheduler.load_state_dict(state["scheduler"])
        self.dataset.load_state_dict(state["data"], skip=skip)
        return int(state["consumed_batches"])

    def save(self, path: str | Path, consumed_batches: int, write: bool | None = None,
             state: dict[str, Any] | None = None) -> Path | None:
        """Write the state atomically. Every rank holds the same state; by default rank 0 writes it
        (``write=True`` on every process that saves checkpoints, e.g. one per node without shared storage).
        ``state``: this Mixer's :meth:`state_dict` at ``consumed_batches`` when the caller already has it."""
        from mixagent.paths import atomic_write_json

        if not (dist_info()[0] == 0 if write is None else write):
            return None
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, state if state is not None else self.state_dict(consumed_batches))
        return path

    def load(self, path: str | Path, skip: bool = True) -> int:
        """Restore from :meth:`save`; returns the consumed batches."""
        import json

        path = Path(path)
        if not path.is_file():
            raise CorruptArtifactError(f"no mixagent state at {path}; it is written beside each checkpoint as "
                                       f"{STATE_FILE} — resume from a checkpoint of a mixagent run")
        try:
            state = json.loads(path.read_text())
        except ValueError as exc:
            raise CorruptArtifactError(f"{path} is not valid JSON ({exc}); it is torn or was edited") from None
        return self.load_state_dict(state, skip=skip)
