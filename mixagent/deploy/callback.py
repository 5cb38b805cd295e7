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
Python logging, wandb when the Trainer reports to it).

**State bound to its checkpoint.** The callback is a ``transformers`` ``ExportableState``: its mixing state
is stored inside each checkpoint's own ``trainer_state.json`` (``stateful_callbacks``), so
``trainer.train(resume_from_checkpoint=...)`` restores the state of exactly the checkpoint it resumes,
wherever that directory is — never a same-named checkpoint of another run in ``output_dir``. A readable
copy is written beside it as ``mixagent_state.json`` (the plain loop's format), only into the checkpoint the
Trainer has just written and only while it exists: checkpoint rotation (``save_total_limit``) runs before
``on_save``, and a directory it deleted is never recreated. The decision due at the resume step is taken
once: not skipped when a finished run is extended, not repeated when it was made.

**One run per Mixer.** A second ``trainer.train()`` without ``resume_from_checkpoint`` would start at step 0
while the Mixer's schedule and data stream continue from the first run; it is refused
(:class:`MixerReusedError`) before anything changes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_callback import ExportableState
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from mixagent.config import is_int
from mixagent.deploy.distributed import dist_info
from mixagent.deploy.heldout import field_scores_from_bits
from mixagent.deploy.loop import STATE_FILE, Mixer
from mixagent.deploy.mixture import default_lag
from mixagent.env.evaluation import EvalResult
from mixagent.errors import ConfigError, CorruptArtifactError, MixagentError, UsageError
from mixagent.paths import atomic_write_json

__all__ = ["MixAgentCallback", "MissingEvalDataError", "MixerReusedError"]

log = logging.getLogger(__name__)
EVAL_SOURCES = ("held_out", "trainer")


class MissingEvalDataError(MixagentError, ValueError):
    """The callback has no evaluation data for some domain of the policy's space."""


class MixerReusedError(UsageError):
    """A training run from step 0 was started with a Mixer that already drove a run (e.g. ``trainer.train()``
    called a second time): resume from a checkpoint, or build a new Mixer and callback."""


class MixAgentCallback(TrainerCallback, ExportableState):
    """Re-weights the training mixture during ``Trainer.train``.

    Args:
        mixer: the run's :class:`~mixagent.deploy.loop.Mixer` (scheduler, dataset, evaluation).
        every_n_steps: optimizer steps between updates (``eval_from="held_out"``).
        eval_from: ``held_out`` (the mixer's evaluation) or ``trainer`` (the Trainer's evaluations of an
            ``eval_dataset`` dict keyed by domain name; set ``eval_strategy="steps"``).
        eval_dataset: with ``eval_from="trainer"``, the dict given to the Trainer (checked here).
        resume_from: a checkpoint directory whose ``mixagent_state.json`` to load on resume, for
            checkpoints whose ``trainer_state.json`` holds no mixing state (written before mixagent bound
            the state to the checkpoint). Otherwise the resumed checkpoint's own state is used.

    Raises:
        UsageError: on resume, when the resumed checkpoint holds no mixing state and no ``resume_from`` is
            given, or ``restore_callback_states_from_checkpoint=True`` (the Trainer would rebuild this
            callback without its mixer).
        MixerReusedError: training starts from step 0 with a Mixer that has already decided (a second
            ``trainer.train()`` on the same Trainer without ``resume_from_checkpoint``).
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
        self._step: int | None = None  # global step the training loop is at (None before training)
        self._exported: tuple[int, dict[str, Any]] | None = None  # (step, state) last put in a checkpoint
        self._max_steps = 0
        self._accum = 1
        self._optimizer: Any = None  # the Trainer's optimizer (its learning rate, for policies that observe it)

    # ---- the state stored in the Trainer's checkpoints ----------------------------------------------
    def state(self) -> dict[str, Any]:
        """``ExportableState``: what goes into ``trainer_state.json`` of the checkpoint being written (the
        Trainer also asks once before training starts, when there is nothing to store yet)."""
        if self._step is None or not self.mixer.scheduler.updates:
            return {"args": {}, "attributes": {}}
        self._exported = (self._step, self.mixer.state_dict(self._step * self._accum))  # on_save writes it too
        return {"args": {}, "attributes": {"mixagent_state": self._exported[1], "last_decision_step": self._last_step,
                                           "global_step": self._step}}

    def _stored_state(self, state: TrainerState) -> dict[str, Any] | None:
        stored = (state.stateful_callbacks or {}).get(type(self).__name__)
        if isinstance(stored, list):  # several callbacks of this class: ours is the first
            stored = stored[0] if stored else None
        attributes = stored.get("attributes", {}) if isinstance(stored, dict) else {}
        return attributes if attributes.get("mixagent_state") else None

    def on_init_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    **kwargs: Any) -> None:
        if getattr(args, "restore_callback_states_from_checkpoint", False):
            raise UsageError("restore_callback_states_from_checkpoint=True makes the Trainer rebuild callbacks "
                             "from their saved arguments, which cannot hold a Mixer; leave it False: "
                             "MixAgentCallback restores its own state from the resumed checkpoint")

    # ---- set-up ------------------------------------------------------------------------------------
    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       model: Any = None, **kwargs: Any) -> None:
        if state.global_step == 0 and self.mixer.scheduler.updates:
            self._refuse_second_run()
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
        self._step = state.global_step
        self._optimizer = kwargs.get("optimizer")
        if state.global_step > 0:  # resuming: the Trainer loaded the checkpoint's state before calling us
            self._resume(args, state, model)
            return
        if self.eval_from == "trainer":
            if not args.eval_on_start:
                raise ConfigError("TrainingArguments", ["eval_from='trainer' needs eval_on_start=True: the first "
                                                        "evaluation is the run's start state"])
            return
        self.mixer.begin(model, lr=self._lr(args))
        self._record(state, args)

    def _refuse_second_run(self) -> None:
        """A run from step 0 on a Mixer that has decided before: its schedule would have to move back to batch 0
        and its data stream would continue the earlier run's, so the new run could be neither fresh nor a
        continuation."""
        sched = self.mixer.scheduler
        earlier = (f"drove a run up to step {self._step} ({sched.updates} mixture decisions)" if self._step is not None
                   else f"already made {sched.updates} mixture decision(s) (Mixer.begin/update was called)")
        raise MixerReusedError(
            f"this MixAgentCallback's Mixer already {earlier}; trainer.train() without resume_from_checkpoint starts "
            f"a new run at step 0, which that Mixer's schedule and data stream cannot restart. To continue the run, "
            f"call trainer.train(resume_from_checkpoint=True) (or a checkpoint's path; raise trainer.args.max_steps "
            f"to train longer). To start a new run, build a new Mixer (a new MixingScheduler and MixtureDataset), a "
            f"new MixAgentCallback and a new Trainer")

    def _lr(self, args: TrainingArguments) -> float | None:
        """The coming step's learning rate over the peak (``args.learning_rate``), for policies that observe it."""
        opt = self._optimizer
        if opt is None or not args.learning_rate:
            return None
        return float(opt.param_groups[0]["lr"]) / float(args.learning_rate)

    def _resume(self, args: TrainingArguments, state: TrainerState, model: Any) -> None:
        stored = self._stored_state(state)
        if stored is not None:
            where = f"the resumed checkpoint's trainer_state.json (step {state.global_step})"
            last = stored.get("last_decision_step")
            if not (is_int(last, -1) and last <= state.global_step
                    and isinstance(stored["mixagent_state"], dict)):
                raise CorruptArtifactError(f"{where}: its MixAgentCallback entry is invalid (last_decision_step "
                                           f"{last!r}, mixagent_state {type(stored['mixagent_state']).__name__}); "
                                           f"it was edited or torn — resume from another checkpoint")
            consumed = self.mixer.load_state_dict(stored["mixagent_state"], skip=args.ignore_data_skip)
            self._last_step = last
        elif self.resume_from is not None:
            path = self.resume_from if self.resume_from.is_file() else self.resume_from / STATE_FILE
            where = str(path)
            consumed = self.mixer.load(path, skip=args.ignore_data_skip)
            self._last_step = state.global_step  # such a state does not record its last decision
        else:
            raise UsageError(f"the checkpoint being resumed (step {state.global_step}) holds no mixagent state in its "
                             f"trainer_state.json: it was written without MixAgentCallback or by an older mixagent. "
                             f"Pass MixAgentCallback(..., resume_from=<that checkpoint directory>) to load its "
                             f"{STATE_FILE}, or start without resuming")
        if consumed != state.global_step * self._accum:
            raise ConfigError("MixAgentCallback", [
                f"{where} was saved after {consumed} batches but the Trainer resumes at step {state.global_step} "
                f"({state.global_step * self._accum} batches); resume from the checkpoint it belongs to"])
        log.info("mixagent state restored from %s (%d updates)", where, self.mixer.scheduler.updates)
        # A decision is due at the resume step when it is an update step the restored run did not decide at
        # (a finished run extended past its end: runs stop deciding at their last step). It is taken once.
        step, every = state.global_step, (self.every_n_steps if self.eval_from == "held_out" else state.eval_steps)
        due = bool(every) and step % int(every) == 0 and self._last_step < step < self._max_steps
        if self.eval_from == "held_out":
            if due:
                self._update(state, args, model=model)
        elif not due:  # eval_on_start evaluates again at the resume step: only a due decision may use it
            self._last_step = max(self._last_step, step)

    # ---- updates -----------------------------------------------------------------------------------
    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    model: Any = None, **kwargs: Any) -> None:
        step = self._step = state.global_step
        self._optimizer = kwargs.get("optimizer", self._optimizer)
        if self.eval_from != "held_out" or step % self.every_n_steps or step >= self._max_steps:
            return
        self._update(state, args, model=model)

    def on_evaluate(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    metrics: dict[str, float] | None = None, **kwargs: Any) -> None:
        if self.eval_from != "trainer" or not metrics:
            return
        self._optimizer = kwargs.get("optimizer", self._optimizer)
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
            self.mixer.begin(result=result, lr=self._lr(args))
            self._record(state, args)
        elif state.global_step < self._max_steps:
            self._update(state, args, result=result)

    def _update(self, state: TrainerState, args: TrainingArguments, model: Any = None,
                result: EvalResult | None = None) -> None:
        self.mixer.update(model, consumed_batches=state.global_step * self._accum,
                          progress=state.global_step / self._max_steps, result=result, lr=self._lr(args))
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
        # a readable copy beside the checkpoint; resuming reads the copy inside the checkpoint's trainer_state.json
        if not args.should_save or state.is_hyper_param_search:  # a trial saves under a run directory unknown here
            return
        ckpt = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        # The Trainer rotates checkpoints (save_total_limit) before this hook, ranking them by modification time,
        # so it can delete the one it has just written. Recreating it with the mixing state alone would leave a
        # folder that passes for the newest checkpoint (resume_from_checkpoint=True picks the highest step).
        if not (ckpt / "trainer_state.json").is_file():
            log.warning("%s was deleted by the Trainer's checkpoint rotation (save_total_limit) right after it was "
                        "written: it ranks checkpoints by modification time, and a checkpoint newer on disk (another "
                        "run's, a copy) outranked it, so step %d has no checkpoint; give each run its own output_dir",
                        ckpt, state.global_step)
            return
        exported = self._exported[1] if self._exported and self._exported[0] == state.global_step else None
        atomic_write_json(ckpt / STATE_FILE, exported if exported is not None
                          else self.mixer.state_dict(state.global_step * self._accum))
