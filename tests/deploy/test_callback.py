"""``MixAgentCallback`` in a tiny real Trainer run (the fixture's 37k-parameter Llama built from config, token
arrays as data): checkpoint rotation keeps every kept checkpoint whole and never brings a deleted one back,
and a second ``trainer.train()`` on the same Trainer is refused with what to do instead."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from mixagent.deploy.heldout import HeldOutLoss
from mixagent.deploy.loop import STATE_FILE, Mixer
from mixagent.deploy.mixture import MixtureDataset
from mixagent.deploy.scheduler import MixingScheduler
from mixagent.domains import Domain, DomainSpace
from mixagent.paths import CONFIGS_DIR
from mixagent.policies import ReplayPolicy

FIX = CONFIGS_DIR.parent / "tests/fixtures/deploy"
SPACE = DomainSpace("two", [Domain("web", "source", ["web"]), Domain("math", "target", ["math"])])
SEQ = 8


def tiny_trainer(out: Path, max_steps: int, save_steps: int = 1, **args):
    """A Trainer whose mixture a replay policy drives, a decision every 2 steps, a checkpoint every ``save_steps``."""
    from transformers import AutoConfig, AutoModelForCausalLM, Trainer, TrainingArguments

    from mixagent.deploy.callback import MixAgentCallback

    rng = np.random.default_rng(0)
    streams = [rng.integers(1, 256, 600), rng.integers(256, 512, 600)]
    windows = {"web": rng.integers(1, 256, (2, SEQ + 1)), "math": rng.integers(256, 512, (2, SEQ + 1))}
    dataset = MixtureDataset.from_token_streams(streams, SPACE, SEQ, batch_size=2, seed=0)
    mixer = Mixer(MixingScheduler(ReplayPolicy(0.5), SPACE), dataset, HeldOutLoss(windows, SPACE))
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(FIX / "tiny-llama"))
    targs = TrainingArguments(output_dir=str(out), max_steps=max_steps, per_device_train_batch_size=2,
                              learning_rate=1e-3, save_steps=save_steps, report_to=[], use_cpu=True, seed=0,
                              disable_tqdm=True, logging_steps=100, **args)
    return Trainer(model=model, args=targs, train_dataset=dataset, callbacks=[MixAgentCallback(mixer, every_n_steps=2)])


def checkpoints(out: Path) -> dict[str, set[str]]:
    return {p.name: {f.name for f in p.iterdir()} for p in sorted(out.glob("checkpoint-*"))}


def assert_whole(out: Path) -> None:
    """Every checkpoint holds the model, the Trainer's state with the mixing state, and the readable copy."""
    for name, files in checkpoints(out).items():
        assert {"model.safetensors", "trainer_state.json", STATE_FILE} <= files, (name, sorted(files))
        step = int(name.split("-")[1])
        stored = json.loads((out / name / "trainer_state.json").read_text())["stateful_callbacks"]["MixAgentCallback"]
        assert stored["attributes"]["global_step"] == step
        assert json.loads((out / name / STATE_FILE).read_text())["consumed_batches"] == step


@pytest.mark.parametrize("limit", [1, 2])
def test_rotated_checkpoints_stay_deleted_and_kept_ones_are_whole(tmp_path, limit):
    out = tmp_path / "run"
    tiny_trainer(out, max_steps=5, save_total_limit=limit).train()
    assert list(checkpoints(out)) == [f"checkpoint-{s}" for s in range(6 - limit, 6)]
    assert_whole(out)


def test_a_checkpoint_the_trainer_rotates_away_as_it_saves_it_does_not_come_back(tmp_path, caplog):
    """The Trainer ranks checkpoints by modification time when they differ by a second or more, so a checkpoint
    newer on disk than the one being saved (another run's, a copy, a clock ahead) makes it delete the checkpoint
    it has just written. The callback saves after that: it must not recreate the directory with its state only,
    which ``resume_from_checkpoint=True`` (the highest step) would then pick."""
    out = tmp_path / "run"
    tiny_trainer(out, max_steps=3).train()  # checkpoints 1, 2, 3
    later = time.time() + 3600
    os.utime(out / "checkpoint-3", (later, later))
    resumed = tiny_trainer(out, max_steps=2, save_total_limit=1)
    resumed.train(resume_from_checkpoint=str(out / "checkpoint-1"))
    assert "checkpoint-2" not in checkpoints(out)  # deleted by the Trainer, and not brought back
    assert_whole(out)
    assert "checkpoint-2 was deleted by the Trainer's checkpoint rotation" in caplog.text


def test_training_again_on_the_same_trainer_says_what_to_do(tmp_path):
    from mixagent.deploy.callback import MixerReusedError
    from mixagent.errors import UsageError

    trainer = tiny_trainer(tmp_path / "run", max_steps=4, save_steps=2)
    trainer.train()
    weights = trainer.train_dataset.schedule.entries()
    with pytest.raises(MixerReusedError, match="already drove a run.*resume_from_checkpoint.*new Mixer") as err:
        trainer.train()
    assert isinstance(err.value, UsageError)
    assert trainer.train_dataset.schedule.entries() == weights  # refused before anything changed
    # what the message offers: continue the run from its checkpoint, here for 2 more steps
    trainer.args.max_steps = 6
    trainer.train(resume_from_checkpoint=True)
    assert trainer.state.global_step == 6
    assert [e[0] for e in trainer.train_dataset.schedule.entries()] == [0, 0, 4, 6]
