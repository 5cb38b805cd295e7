"""``MixAgentCallback``: a mixing policy drives a Hugging Face Trainer's data mixture.

.. code-block:: python

    dataset = MixtureDataset.from_token_streams(streams, space, seq_len=256, batch_size=8)
    mixer = Mixer(MixingScheduler(load_policy("runs/agent/default/rl"), space), dataset,
                  HeldOutLoss(val_windows, space))
    trainer = Trainer(model, args, train_dataset=dataset, callbacks=[MixAgentCallback(mixer, every_n_steps=50)])

The callback touches training only through the mixer's shared schedule (a callback cannot swap the
Trainer's dataloader). It evaluates per-domain held-out loss every ``every_n_steps`` optimizer steps —
or, with ``eval_from="trainer"``, gathers the Trainer's own per-dataset evaluations (a dict
``eval_dataset`` makes ``on_evaluate`` fire once per dataset; it acts when all domains have reported) —
asks the scheduler for the next mixture, writes it to the schedule and logs it (Trainer log history,
Python logging, wandb when the Trainer reports to it). Its state is saved as ``mixagent_state.json`` in
every Trainer checkpoint and restored on ``trainer.train(resume_from_checkpoint=...)``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from mixagent.deploy.distributed import dist_info
from mixagent.deploy.heldout import field_scores_from_bits
from mixagent.deploy.loop import STATE_FILE, Mixer
from mixagent.deploy.mixture import default_lag
from mixagent.env.evaluation import EvalResult
from mixagent.errors import ConfigError, MixagentError

__all__ = ["MixAgentCallback", "MissingEvalDataError"]

log = logging.getLogger(__name__)
EVAL_SOURCES = ("held_out", "trainer")


class MissingEvalDataError(MixagentError, ValueError):
    """The callback has no evaluation data for some domain of the policy's space."""


class MixAgentCallback(TrainerCallback):
    """Re-weights the training mixture during ``Trainer.train``.

    Args:
        mixer: the run's :class:`~mixagent.deploy.loop.Mixer` (scheduler, dataset, evaluation).
        every_n_steps: optimizer steps between updates (``eval_from="held_out"``).
        eval_from: ``held_out`` (the mixer's evaluation) or ``trainer`` (the Trainer's evaluations of an
            ``eval_dataset`` dict keyed by domain name; set ``eval_strategy="steps"``).
        eval_dataset: with ``eval_from="trainer"``, the dict given to the Trainer (checked here).
        resume_from: checkpoint directory holding ``mixagent_state.json`` when it is not
            ``output_dir/checkpoint-<step>``.
    """

    def __init__(self, mixer: Mixer, every_n_steps: int = 50, eval_from: str = "held_out",
                 eval_dataset: Mapping[str, Any] | None = None, resume_from: str | Path | None = None) -> None:
        if not isinstance(mixer, Mixer):
            raise ConfigError("MixAgentCallback", [f"mixer must be a mixagent.deploy.Mixer, got "
                                                   f"{type(mixer).__name__}"])
        if eval_from not in EVAL_SOURCES:
            raise ConfigError("MixAgentCallback", [f"eval_from must be one of {EVAL_SOURCES}, got {eval_from!r}"])
        if every_n_steps < 1:
            raise ConfigError("MixAgentCallback", [f"every_n_steps must be >= 1, got {every_n_steps}"])
        names = mixer.scheduler.space.names
        if eval_from == "held_out" and mixer.evaluate is None:
            raise MissingEvalDataError("eval_from='held_out' needs held-out data: build the Mixer with "
                                       "evaluate=HeldOutLoss(windows, space), or use eval_from='trainer'")
        if eval_from == "trainer":
            if eval_dataset is None:
                raise MissingEvalDataError("eval_from='trainer' needs eval_dataset=: the dict of per-domain evaluation "
                                           "datasets given to the Trainer, keyed by domain name")
            missing = [n for n in names if n not in eval_dataset]
            if missing:
                raise MissingEvalDataError(f"eval_dataset has no data for domains {missing} of the policy's space "
                                           f"(has {list(eval_dataset)}); give one evaluation dataset per domain")
        self.mixer = mixer
        self.every_n_steps = every_n_steps
        self.eval_from = eval_from
        self.resume_from = Path(resume_from) if resume_from else None
        self._pending: dict[str, float] = {}
        self._last_step = -1  # global step of the last decision
        self._max_steps = 0
        self._accum = 1

    # ---- set-up ------------------------------------------------------------------------------------
    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       model: Any = None, **kwargs: Any) -> None:
        ds = self.mixer.dataset
        if args.max_steps is None or args.max_steps <= 0:
            raise ConfigError("TrainingArguments", ["max_steps must be set (> 0): the mixture dataset is endless"])
        if args.train_batch_size != args.per_device_train_batch_size:
            raise ConfigError("TrainingArguments", [
                f"the Trainer runs DataParallel over {args.n_gpu} GPUs (one loader batch of {args.train_batch_size}); "
                f"launch one process per GPU with torchrun instead, so each rank reads its own slice"])
        if args.per_device_train_batch_size != ds.batch_size:
            raise ConfigError("MixAgentCallback", [
                f"per_device_train_batch_size ({args.per_device_train_batch_size}) differs from the MixtureDataset's "
                f"batch_size ({ds.batch_size}); build the dataset with the Trainer's batch size"])
        rank, world = dist_info()
        if world > 1:
            dispatch = getattr(args.accelerator_config, "dispatch_batches", None)
            if dispatch is not False:
                raise ConfigError("TrainingArguments", [
                    "with several processes set accelerator_config={'dispatch_batches': False}: every rank then "
                    "reads the same mixture stream and accelerate gives each rank its own slice"])
            ds.configure(rank=rank, world_size=world, all_ranks=True)  # accelerate's IterableDatasetShard slices it
        workers = args.dataloader_num_workers
        needed = default_lag(workers, args.dataloader_prefetch_factor if workers else None)
        if self.mixer.lag < needed:
            log.info("mixture lag raised from %d to %d batches (num_workers=%d)", self.mixer.lag, needed, workers)
            self.mixer.lag = needed
        self._max_steps, self._accum = args.max_steps, args.gradient_accumulation_steps
        if state.global_step > 0:  # resuming: the Trainer loaded its state before calling us
            path = (self.resume_from or Path(args.output_dir) / f"checkpoint-{state.global_step}") / STATE_FILE
            consumed = self.mixer.load(path, skip=args.ignore_data_skip)
            if consumed != state.global_step * self._accum:
                raise ConfigError("MixAgentCallback", [
                    f"{path} was saved after {consumed} batches but the Trainer resumes at step {state.global_step} "
                    f"({state.global_step * self._accum} batches); resume from the checkpoint it belongs to"])
            log.info("mixagent state restored from %s (%d updates)", path, self.mixer.scheduler.updates)
            self._last_step = state.global_step  # any decision at this step is in the restored state
            return
        if self.eval_from == "trainer":
            if not args.eval_on_start:
                raise ConfigError("TrainingArguments", ["eval_from='trainer' needs eval_on_start=True: the first "
                                                        "evaluation is the run's start state"])
            return
        self.mixer.begin(model)
        self._record(state, args)

    # ---- updates -----------------------------------------------------------------------------------
    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    model: Any = None, **kwargs: Any) -> None:
        step = state.global_step
        if self.eval_from != "held_out" or step % self.every_n_steps or step >= self._max_steps:
            return
        self._update(state, args, model=model)

    def on_evaluate(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    metrics: dict[str, float] | None = None, **kwargs: Any) -> None:
        if self.eval_from != "trainer" or not metrics:
            return
        names = self.mixer.scheduler.space.names
        for key, value in metrics.items():
            for n in names:
                if key == f"eval_{n}_loss":
                    self._pending[n] = float(value)
        if not all(n in self._pending for n in names):
            return  # a dict eval_dataset reports one dataset at a time: wait for the rest
        bits = {n: self._pending[n] / math.log(2) for n in names}
        self._pending = {}
        if state.global_step <= self._last_step:  # eval_on_start after a resume: already decided at this step
            return
        result = EvalResult(bits, field_scores_from_bits(bits, self.mixer.scheduler.space), {},
                            state.global_step * self._accum * self.mixer.tokens_per_batch, unit="token")
        if not self.mixer.scheduler.updates:  # eval_on_start: the start state, before any batch exists
            self.mixer.begin(result=result)
            self._record(state, args)
        elif state.global_step < self._max_steps:
            self._update(state, args, result=result)

    def _update(self, state: TrainerState, args: TrainingArguments, model: Any = None,
                result: EvalResult | None = None) -> None:
        self.mixer.update(model, consumed_batches=state.global_step * self._accum,
                          progress=state.global_step / self._max_steps, result=result)
        self._record(state, args)

    def _record(self, state: TrainerState, args: TrainingArguments) -> None:
        self._last_step = state.global_step
        logs = {f"mixagent/weight/{n}": w for n, w in self.mixer.weights.to_mapping().items()}
        last = self.mixer.scheduler.history[-1]
        logs["mixagent/fallback"] = float(last["fallback"] is not None)
        logs["mixagent/late_changes"] = float(self.mixer.dataset.schedule.late)
        state.log_history.append({**logs, "step": state.global_step})
        if state.is_world_process_zero and "wandb" in (args.report_to or []):
            import wandb

            if wandb.run is not None:
                wandb.log({**logs, "train/global_step": state.global_step})

    # ---- checkpoints -------------------------------------------------------------------------------
    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        # written after the Trainer's files: a crash in between leaves a checkpoint that resume refuses by name
        self.mixer.save(ckpt / STATE_FILE, consumed_batches=state.global_step * self._accum, write=args.should_save)
