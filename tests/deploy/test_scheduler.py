"""Deployment: the guarded scheduler, the mixture data path, the plain-loop Mixer and the Trainer callback,
on the tiny base model and the real corpora."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from mixagent.config import load_config
from mixagent.data.domain_data import DomainData
from mixagent.data.tokenizer import token_byte_lengths
from mixagent.deploy.heldout import HeldOutLoss
from mixagent.deploy.loop import Mixer
from mixagent.deploy.mixture import HFDatasetSource, MixtureDataset, SourceUseError, TokenArraySource, default_lag
from mixagent.deploy.scheduler import MixingScheduler, SchedulerConfig, SchedulerStateError
from mixagent.domains import DomainSpace, DomainWeights
from mixagent.env.base_model import BaseModelConfig, get_base_model
from mixagent.env.evaluation import EvalResult
from mixagent.errors import ConfigError, CorruptArtifactError, SchemaVersionError, UsageError
from mixagent.paths import CONFIGS_DIR
from mixagent.policies import FixedPolicy, ReplayPolicy, UniformPolicy
from mixagent.sampling import cumulative


@pytest.fixture(scope="module")
def parts():
    base = get_base_model(load_config(BaseModelConfig, CONFIGS_DIR / "base_model/tiny.yaml"))
    space = DomainSpace.from_yaml(CONFIGS_DIR / "spaces/tiny.yaml")
    data = DomainData(space, base.tokenizer, base.tokenizer_hash)
    L = base.model_config.seq_len
    windows = {n: data.val_windows(i, 4, L + 1) for i, n in enumerate(space.names)}
    return {"base": base, "space": space, "data": data, "seq_len": L, "windows": windows,
            "heldout": HeldOutLoss(windows, space, token_byte_lengths(base.tokenizer))}


def fake_eval(space: DomainSpace, shift: float = 0.0) -> EvalResult:
    return EvalResult({n: 2.0 + shift + 0.1 * i for i, n in enumerate(space.names)},
                      {"source": 0.3 - shift, "target": 0.2 + shift}, {})


class Raising:
    def reset(self, space):
        self.space = space

    def act(self, obs):
        raise RuntimeError("boom")


class Returning:
    def __init__(self, values):
        self.values = values

    def reset(self, space):
        self.space = space

    def act(self, obs):
        return self.values


# ---- scheduler -------------------------------------------------------------------------------------
def test_scheduler_floor_and_max_change(parts):
    space = parts["space"]
    sched = MixingScheduler(FixedPolicy({"math": 1.0}), space, config=SchedulerConfig(floor=0.05, max_change=0.3))
    w = sched.step(fake_eval(space), 0.0)
    assert np.all(w.values >= 0.05 - 1e-12) and abs(w.values.sum() - 1) < 1e-12
    # uniform (0.25 each) -> floored proposal (0.05, 0.05, 0.05, 0.85): TV 0.6 capped to 0.3, halfway
    np.testing.assert_allclose(w.values, [0.15, 0.15, 0.15, 0.55])
    assert sched.history[-1]["capped"] and sched.history[-1]["fallback"] is None
    w2 = sched.step(fake_eval(space, 0.1), 0.5)
    np.testing.assert_allclose(w2.values, [0.05, 0.05, 0.05, 0.85])
    assert not sched.history[-1]["capped"]


@pytest.mark.parametrize("policy, reason", [(Raising(), "RuntimeError: boom"),
                                            (Returning(np.array([np.nan, 1, 1, 1])), "non-finite"),
                                            (Returning(np.ones(3)), "3 weights for 4 domains")])
def test_scheduler_fallback_keeps_training(parts, caplog, policy, reason):
    space = parts["space"]
    initial = DomainWeights.from_mapping(space, {"wiki": 1, "math": 1})
    sched = MixingScheduler(policy, space, initial=initial)
    with caplog.at_level(logging.WARNING, logger="mixagent.deploy.scheduler"):
        w = sched.step(fake_eval(space), 0.0)
    np.testing.assert_array_equal(w.values, initial.values)
    assert reason in sched.history[-1]["fallback"]
    assert "mixing policy failed" in caplog.text


def test_scheduler_survives_a_diverged_evaluation(parts, caplog):
    space = parts["space"]
    sched = MixingScheduler(ReplayPolicy(0.5), space, initial=DomainWeights.from_mapping(space, {"math": 1.0}))
    sched.step(fake_eval(space), 0.0)
    bad = fake_eval(space, 0.2)
    bad.bpb["math"] = float("nan")
    with caplog.at_level(logging.WARNING, logger="mixagent.deploy.scheduler"):
        w = sched.step(bad, 0.5)
    np.testing.assert_array_equal(w.values, sched.initial.values)
    assert "non-finite evaluation" in sched.history[-1]["fallback"] and sched.history[-1]["eval"] is None
    json.dumps(sched.state_dict(), allow_nan=False)  # the saved state stays strict JSON
    assert sched.prev_eval.bpb["math"] == fake_eval(space).bpb["math"]  # the last finite evaluation is kept


def test_scheduler_state_roundtrip_and_foreign_state(parts):
    space = parts["space"]
    a = MixingScheduler(ReplayPolicy(0.5), space, config=SchedulerConfig(floor=0.01))
    for t in range(3):
        a.step(fake_eval(space, 0.1 * t), t / 3)
    state = json.loads(json.dumps(a.state_dict()))
    b = MixingScheduler(ReplayPolicy(0.5), space, config=SchedulerConfig(floor=0.01))
    b.load_state_dict(state)
    assert b.step(fake_eval(space, 0.4), 1.0).values.tolist() == a.step(fake_eval(space, 0.4), 1.0).values.tolist()
    with pytest.raises(SchedulerStateError, match="differs in \\['config'\\]"):
        MixingScheduler(ReplayPolicy(0.5), space, config=SchedulerConfig(floor=0.02)).load_state_dict(state)
    with pytest.raises(SchemaVersionError, match="format 99"):
        b.load_state_dict({**state, "format": 99})


def test_scheduler_refuses_bad_config_and_non_policy(parts):
    space = parts["space"]
    with pytest.raises(ConfigError, match="floor \\* K < 1"):
        MixingScheduler(UniformPolicy(), space, config=SchedulerConfig(floor=0.3))
    with pytest.raises(ConfigError, match="does not implement MixingPolicy"):
        MixingScheduler(object(), space)


def test_scheduler_refuses_artifact_of_another_space(parts, tmp_path):
    from mixagent.policies.artifact import ArtifactMismatchError, load_policy, random_artifact

    other = DomainSpace.from_yaml(CONFIGS_DIR / "spaces/math-natural.yaml")
    path = random_artifact(tmp_path / "art", other)
    with pytest.raises(ArtifactMismatchError, match="politics"):
        MixingScheduler(load_policy(path), parts["space"])  # before any training
    sched = MixingScheduler(load_policy(random_artifact(tmp_path / "ok", parts["space"])), parts["space"])
    assert abs(sched.step(fake_eval(parts["space"]), 0.0).values.sum() - 1) < 1e-9


def test_policy_specs_and_unknown_artifact_version(parts, tmp_path):
    from mixagent.policies import policy_from_spec
    from mixagent.policies.artifact import random_artifact

    natural = {n: 0.25 for n in parts["space"].names}
    assert isinstance(policy_from_spec("replay:0.25", natural), ReplayPolicy)
    with pytest.raises(ConfigError, match="did you mean 'uniform'"):
        policy_from_spec("unifrom", natural)
    path = random_artifact(tmp_path / "art", parts["space"])
    meta = json.loads((path / "meta.json").read_text())
    (path / "meta.json").write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(SchemaVersionError, match="99"):
        policy_from_spec(str(path), natural)


# ---- data path -------------------------------------------------------------------------------------
def stream(ds: MixtureDataset, batches: int, workers: int = 0) -> list[dict]:
    out = []
    for i, b in enumerate(DataLoader(ds, batch_size=ds.batch_size, num_workers=workers)):
        out.append({k: v.clone() for k, v in b.items()})
        if i + 1 == batches:
            return out
    return out


def make_ds(parts, **kw) -> MixtureDataset:
    kw.setdefault("batch_size", 4)
    kw.setdefault("seed", 3)
    return MixtureDataset.from_token_streams(parts["data"].train, parts["space"], parts["seq_len"],
                                             return_domain_ids=True, **kw)


def test_mixture_follows_schedule_and_workers_match(parts):
    space = parts["space"]
    ds = make_ds(parts)
    ds.schedule.set(DomainWeights.from_mapping(space, {"math": 1.0}), 30)
    serial = stream(ds, 60)
    doms = torch.stack([b["domain_ids"] for b in serial]).numpy()
    assert set(np.unique(doms[:30])) == {0, 1, 2, 3}  # uniform before batch 30
    assert np.all(doms[30:] == 3)  # only math from batch 30 on
    ds.seek(0)  # a new pass continues the stream unless restarted explicitly
    parallel = stream(ds, 60, workers=2)  # the same stream when two workers split the batches
    for a, b in zip(serial, parallel):
        assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["domain_ids"], b["domain_ids"])


def test_domain_draws_are_independent_across_batches_and_follow_the_weights(parts):
    space = parts["space"]
    ds = make_ds(parts, batch_size=16)
    u = [ds.stream.uniforms(b * ds.samples_per_batch, ds.samples_per_batch) for b in (5, 6)]
    assert not set(u[0]) & set(u[1])  # consecutive batches share no random numbers
    w = DomainWeights(space, [0.1, 0.2, 0.3, 0.4])
    cum = cumulative(w.values)
    picks = np.concatenate([ds.draws(b, cum) for b in range(2000)])  # 32,000 samples
    freq = np.bincount(picks, minlength=4) / len(picks)
    np.testing.assert_allclose(freq, w.values, atol=0.01)  # 4+ standard errors at this sample size


def test_a_change_during_iteration_with_workers_lands_on_its_batch(parts):
    space = parts["space"]
    math_only = DomainWeights.from_mapping(space, {"math": 1.0})
    planned = make_ds(parts)
    planned.schedule.set(math_only, 7)
    expected = stream(planned, 14)
    live = make_ds(parts)
    it = iter(DataLoader(live, batch_size=4, num_workers=2, prefetch_factor=2))
    got = [next(it)]
    live.schedule.set(math_only, 1 + default_lag(2))  # consumed 1 batch; lag covers what the workers prefetched
    got += [next(it) for _ in range(13)]
    for a, b in zip(expected, got):
        assert torch.equal(a["input_ids"], b["input_ids"])
    assert live.schedule.late == 0


def test_cursors_do_not_repeat_windows_within_an_epoch(parts):
    ds = make_ds(parts)
    ds.schedule.set(DomainWeights.from_mapping(parts["space"], {"math": 1.0}), 0)
    ids = torch.cat([b["input_ids"] for b in stream(ds, 40)])
    n_windows = len(parts["data"].train[3]) // parts["seq_len"]
    assert len(ids) <= n_windows
    assert len({tuple(r.tolist()) for r in ids}) == len(ids)
    assert ds.cursors_at(40).tolist() == [0, 0, 0, 160]


def test_cursor_replay_is_incremental_and_exact(parts):
    space = parts["space"]
    ds, fresh = make_ds(parts), make_ds(parts)
    ds.cursors_at(20)
    for d in (ds, fresh):
        d.schedule.set(DomainWeights.from_mapping(space, {"wiki": 1, "math": 3}), 25)
    assert ds.cursors_at(40).tolist() == fresh.cursors_at(40).tolist()  # resumed from the replay at 20
    for d in (ds, fresh):  # a change that came late (before the last replay) forces a full replay
        d.schedule.set(DomainWeights.from_mapping(space, {"news": 1}), 30)
    fresh._forget_replay()
    assert ds.cursors_at(50).tolist() == fresh.cursors_at(50).tolist()


def test_ranks_draw_disjoint_slices_of_one_stream(parts):
    whole = stream(make_ds(parts, batch_size=8, rank=0, world_size=1), 10)
    r0 = stream(make_ds(parts, batch_size=4, rank=0, world_size=2), 10)
    r1 = stream(make_ds(parts, batch_size=4, rank=1, world_size=2), 10)
    for w, a, b in zip(whole, r0, r1):
        assert torch.equal(torch.cat([a["input_ids"], b["input_ids"]]), w["input_ids"])
        assert not torch.equal(a["input_ids"], b["input_ids"])


def test_fast_forward_equals_replay_and_late_changes_are_counted(parts):
    ds = make_ds(parts)
    ds.schedule.set(DomainWeights.from_mapping(parts["space"], {"wiki": 3, "math": 1}), 5)
    full = stream(ds, 20)
    state = json.loads(json.dumps(ds.state_dict(12)))
    ds2 = make_ds(parts)
    ds2.load_state_dict(state)
    tail = stream(ds2, 8)
    for a, b in zip(full[12:], tail):
        assert torch.equal(a["input_ids"], b["input_ids"])
    it = iter(DataLoader(make_ds(parts), batch_size=4))
    late_ds = it._dataset
    for _ in range(6):
        next(it)
    late_ds.schedule.set(DomainWeights.from_mapping(parts["space"], {"math": 1}), 2)  # batch 2 was made already
    next(it)
    assert late_ds.schedule.late == 1
    with pytest.raises(ConfigError, match="batch_size \\(saved 4, now 8\\)"):
        make_ds(parts, batch_size=8).load_state_dict(state)


def test_hf_datasets_sources_map_streaming_and_pretokenized(parts):
    datasets = pytest.importorskip("datasets")
    tok = parts["base"].tokenizer
    texts = ["The cat sat on the mat. " * (i % 5 + 1) for i in range(40)]
    mapped = datasets.Dataset.from_dict({"text": texts})
    src = HFDatasetSource(mapped, 16, tokenizer=tok, seed=0)
    first = [w for _, w in zip(range(5), src.windows(0))]
    again = [w for _, w in zip(range(3), src.windows(2))]
    assert all(len(w) == 16 for w in first)
    assert all(np.array_equal(a, b) for a, b in zip(first[2:], again))
    streaming = HFDatasetSource(mapped.to_iterable_dataset(), 16, tokenizer=tok)
    assert len([w for _, w in zip(range(50), streaming.windows(0))]) == 50  # loops over epochs
    ids = tok(texts, add_special_tokens=False)["input_ids"]
    pretok = HFDatasetSource(datasets.Dataset.from_dict({"input_ids": ids}), 16, eos_id=tok.eos_token_id, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(first, pretok.windows(0)))
    space = parts["space"]
    sources = {n: (src if n == "math" else TokenArraySource(parts["data"].train[i], 16)) for i, n in
               enumerate(space.names)}
    ds = MixtureDataset(sources, space, batch_size=2, return_domain_ids=True)
    assert stream(ds, 3)[0]["input_ids"].shape == (2, 16)
    with pytest.raises(ConfigError, match="tokenizer="):
        HFDatasetSource(mapped, 16)
    streamed = {n: HFDatasetSource(mapped.to_iterable_dataset(), 16, tokenizer=tok) for n in space.names}
    with pytest.raises(SourceUseError, match="num_workers=0"):  # datasets would split its shards between workers
        next(iter(DataLoader(MixtureDataset(streamed, space, batch_size=2), batch_size=2, num_workers=1)))
    with pytest.raises(ConfigError, match="missing \\['math'\\]"):
        MixtureDataset({n: sources[n] for n in space.names[:3]}, space, batch_size=2)


# ---- plain loop ------------------------------------------------------------------------------------
def test_heldout_loss_and_mixer_save_load(parts, tmp_path):
    space, model = parts["space"], parts["base"].model
    res = parts["heldout"](model)
    assert set(res.bpb) == set(space.names) and all(0.5 < b < 20 for b in res.bpb.values())
    ds = make_ds(parts)
    mixer = Mixer(MixingScheduler(ReplayPolicy(0.5), space), ds, parts["heldout"], lag=3)
    mixer.begin(model)
    mixer.update(model, consumed_batches=4, progress=0.5)
    assert ds.schedule.entries()[-1][0] == 7
    path = mixer.save(tmp_path / "state.json", consumed_batches=6)
    other = Mixer(MixingScheduler(ReplayPolicy(0.5), space), make_ds(parts), parts["heldout"], lag=3)
    assert other.load(path) == 6 and other.dataset.start_batch == 6
    assert other.scheduler.history == json.loads(json.dumps(mixer.scheduler.history))
    with pytest.raises(SchedulerStateError, match="policy"):
        Mixer(MixingScheduler(UniformPolicy(), space), make_ds(parts), parts["heldout"], lag=3).load(path)
    with pytest.raises(ConfigError, match="seed \\(saved 3, now 4\\)"):
        Mixer(MixingScheduler(ReplayPolicy(0.5), space), make_ds(parts, seed=4), parts["heldout"], lag=3).load(path)
    with pytest.raises(CorruptArtifactError, match="no mixagent state"):
        other.load(tmp_path / "missing.json")
    with pytest.raises(ConfigError, match="no held-out windows for domains \\['math'\\]"):
        HeldOutLoss({n: w for n, w in parts["windows"].items() if n != "math"}, space)


def test_mixer_warns_when_a_change_arrives_late(parts, caplog):
    space, model = parts["space"], parts["base"].model
    ds = make_ds(parts)
    mixer = Mixer(MixingScheduler(ReplayPolicy(0.5), space), ds, parts["heldout"], lag=1)
    mixer.begin(model)
    it = iter(DataLoader(ds, batch_size=4))
    for _ in range(4):  # batches 0-3 exist when the change for batch 2 is written
        next(it)
    mixer.dataset.schedule.set(DomainWeights.from_mapping(space, {"math": 1}), 2)
    next(it)
    with caplog.at_level(logging.WARNING, logger="mixagent.deploy.loop"):
        mixer.update(model, consumed_batches=9, progress=0.5)
    assert ds.schedule.late >= 1 and "raise lag" in caplog.text


def test_default_lag_covers_prefetch():
    assert default_lag(0) == 2 and default_lag(2) == 6 and default_lag(4, 3) == 14


# ---- Trainer callback ------------------------------------------------------------------------------
def trainer_run(parts, out, max_steps=6, resume=None, eval_from="held_out", policy=None, perturb=0.0, **args):
    import copy

    from transformers import Trainer, TrainingArguments

    from mixagent.deploy.callback import MixAgentCallback

    space = parts["space"]
    model = copy.deepcopy(parts["base"].model)
    if perturb:  # another run of the same config (e.g. another base checkpoint): other evaluations
        with torch.no_grad():
            for p in model.parameters():
                p.add_(perturb * torch.randn(p.shape, generator=torch.Generator().manual_seed(7)))
    ds = make_ds(parts, batch_size=4)
    ds.return_domain_ids = False
    mixer = Mixer(MixingScheduler(policy or ReplayPolicy(0.5), space, config=SchedulerConfig(max_change=0.2)), ds,
                  parts["heldout"])
    extra = {}
    if eval_from == "trainer":
        import datasets

        evals = {n: datasets.Dataset.from_dict({"input_ids": w[:, :-1].tolist(), "labels": w[:, :-1].tolist()})
                 for n, w in parts["windows"].items()}
        extra = {"eval_dataset": evals}
        args.update(eval_strategy="steps", eval_steps=2, eval_on_start=True)
        cb = MixAgentCallback(mixer, eval_from="trainer", eval_dataset=evals)
    else:
        cb = MixAgentCallback(mixer, every_n_steps=2)
    args = {"report_to": [], "save_steps": 3, "lr_scheduler_type": "constant", **args}
    targs = TrainingArguments(output_dir=str(out), max_steps=max_steps, per_device_train_batch_size=4,
                              learning_rate=2e-3, logging_steps=1,
                              use_cpu=True, seed=0, save_only_model=False, disable_tqdm=True, **args)
    trainer = Trainer(model=model, args=targs, train_dataset=ds, callbacks=[cb], **extra)
    trainer.train(resume_from_checkpoint=resume)
    return model, mixer, trainer


def test_trainer_callback_updates_and_resume_is_exact(parts, tmp_path):
    model_a, mixer_a, trainer = trainer_run(parts, tmp_path / "a")
    hist = mixer_a.scheduler.history
    assert len(hist) == 3  # the start decision, then steps 2 and 4 (not at the last step)
    assert [e[0] for e in mixer_a.dataset.schedule.entries()] == [0, 0, 4, 6]
    assert hist[0]["capped"] and not hist[1]["capped"]  # max_change 0.2: uniform -> replay 0.5 takes two moves
    logged = [r for r in trainer.state.log_history if "mixagent/weight/math" in r]
    assert [r["step"] for r in logged] == [0, 2, 4]
    saved = json.loads((tmp_path / "a/checkpoint-3/mixagent_state.json").read_text())
    assert saved["consumed_batches"] == 3 and len(saved["scheduler"]["history"]) == 2
    # interrupted after the checkpoint at step 3, resumed in a fresh Trainer: identical weights and model
    trainer_run(parts, tmp_path / "b", max_steps=3)
    model_b, mixer_b, _ = trainer_run(parts, tmp_path / "b", resume=str(tmp_path / "b/checkpoint-3"))
    assert [h["weights"] for h in mixer_b.scheduler.history] == [h["weights"] for h in hist]
    assert mixer_b.dataset.schedule.entries() == mixer_a.dataset.schedule.entries()
    for (name, a), b in zip(model_a.state_dict().items(), model_b.state_dict().values()):
        assert torch.equal(a, b), name


class _LrPolicy:
    """A policy trained on an ``observe_lr`` env (stand-in): records the learning rate it is shown."""

    observe_lr = True

    def __init__(self) -> None:
        self.seen: list[float] = []

    def reset(self, space) -> None:
        self.space = space

    def act(self, observation):
        self.seen.append(float(observation[-1]))
        return DomainWeights.normalised(self.space, np.ones(self.space.k))


def test_trainer_callback_shows_the_coming_learning_rate_to_policies_that_observe_it(parts, tmp_path):
    policy = _LrPolicy()
    _, mixer, _ = trainer_run(parts, tmp_path / "lr", policy=policy, lr_scheduler_type="linear", warmup_steps=0,
                              save_steps=100)
    assert mixer.scheduler.obs_builder.dim == 3 * parts["space"].k + 6
    # decisions at steps 0, 2, 4 of 6 under a linear decay from the peak 2e-3: the coming step's LR / peak
    np.testing.assert_allclose(policy.seen, [1.0, 4 / 6, 2 / 6], rtol=1e-6)


def test_trainer_callback_gathers_per_dataset_evaluations_and_resumes(parts, tmp_path):
    model_a, mixer, _ = trainer_run(parts, tmp_path / "t", eval_from="trainer")
    hist = mixer.scheduler.history
    assert len(hist) == 3  # eval on start, then the evaluations at steps 2 and 4, each over all 4 datasets
    assert set(hist[0]["eval"]["bpb"]) == set(parts["space"].names)
    trainer_run(parts, tmp_path / "r", eval_from="trainer", max_steps=3)
    model_b, resumed, _ = trainer_run(parts, tmp_path / "r", eval_from="trainer",
                                      resume=str(tmp_path / "r/checkpoint-3"))
    # eval_on_start runs again at the resume step; it must not add a decision
    assert resumed.dataset.schedule.entries() == mixer.dataset.schedule.entries()
    assert [h["weights"] for h in resumed.scheduler.history] == [h["weights"] for h in hist]
    for a, b in zip(model_a.state_dict().values(), model_b.state_dict().values()):
        assert torch.equal(a, b)


def test_trainer_callback_preconditions(parts, tmp_path):
    from mixagent.deploy.callback import MissingEvalDataError, MixAgentCallback

    space = parts["space"]
    mixer = Mixer(MixingScheduler(UniformPolicy(), space), make_ds(parts))
    with pytest.raises(MissingEvalDataError, match="HeldOutLoss"):
        MixAgentCallback(mixer)
    with pytest.raises(MissingEvalDataError, match="no data for domains \\['math'\\]"):
        MixAgentCallback(mixer, eval_from="trainer", eval_dataset={"wiki": [], "news": [], "fiction": []})
    with pytest.raises(ConfigError, match="per_device_train_batch_size \\(4\\) differs"):
        _bad_batch(parts, tmp_path)
    _, _, _ = trainer_run(parts, tmp_path / "c", max_steps=3)
    with pytest.raises(SchedulerStateError):  # a checkpoint of a run with another policy
        trainer_run(parts, tmp_path / "c", resume=str(tmp_path / "c/checkpoint-3"), policy=UniformPolicy())


def _bad_batch(parts, tmp_path):
    from transformers import Trainer, TrainingArguments

    from mixagent.deploy.callback import MixAgentCallback

    ds = make_ds(parts, batch_size=2)
    mixer = Mixer(MixingScheduler(UniformPolicy(), parts["space"]), ds, parts["heldout"])
    args = TrainingArguments(output_dir=str(tmp_path / "bs"), max_steps=2, per_device_train_batch_size=4,
                             report_to=[], use_cpu=True, disable_tqdm=True)
    Trainer(model=parts["base"].model, args=args, train_dataset=ds, callbacks=[MixAgentCallback(mixer)]).train()


def test_trainer_callback_logs_weights_to_wandb_offline(parts, tmp_path, monkeypatch):
    import wandb
    from wandb.sdk.wandb_run import Run

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    logged = []
    real_log = Run.log

    def spy(run, data, *args, **kwargs):  # what reaches the live offline run (wandb.log is bound to it)
        logged.append(dict(data))
        return real_log(run, data, *args, **kwargs)

    monkeypatch.setattr(Run, "log", spy)
    wandb.teardown()  # wandb caches its settings process-wide on first use; read WANDB_MODE afresh
    try:
        _, mixer, _ = trainer_run(parts, tmp_path / "w", max_steps=3, report_to=["wandb"], save_strategy="no")
    finally:
        wandb.finish()  # the Trainer leaves its run open: close it, or the next wandb user in this process logs
        wandb.teardown()  # into a run whose service is gone
    ours = [d for d in logged if "mixagent/weight/math" in d]
    assert [d["train/global_step"] for d in ours] == [0, 2]
    assert ours[-1]["mixagent/weight/math"] == mixer.weights.to_mapping()["math"]
    assert list(tmp_path.glob("wandb/offline-run-*/*.wandb"))


# ---- run-time misuse and loss units ----------------------------------------------------------------
def test_run_time_misuse_is_a_usage_error_not_a_config_error(parts):
    space = parts["space"]
    mixer = Mixer(MixingScheduler(UniformPolicy(), space), make_ds(parts), parts["heldout"])
    with pytest.raises(UsageError, match="before Mixer.begin") as err:
        mixer.update(result=fake_eval(space))
    assert not isinstance(err.value, ConfigError) and "invalid config" not in str(err.value)
    schedule = make_ds(parts).schedule
    schedule.set(DomainWeights.from_mapping(space, {"math": 1.0}), first_batch=5)
    with pytest.raises(UsageError, match="changes must move forward"):
        schedule.set(DomainWeights.from_mapping(space, {"wiki": 1.0}), first_batch=3)


def test_held_out_loss_says_its_unit_and_the_scheduler_keeps_it(parts):
    space, model = parts["space"], parts["base"].model
    per_byte = parts["heldout"](model)
    per_token = HeldOutLoss(parts["windows"], space)(model)
    assert per_byte.unit == "byte" and per_token.unit == "token"
    assert "unit" not in per_byte.to_json()  # the environment's (trajectory) format is unchanged
    assert EvalResult.from_json(per_token.to_json()) == per_token
    sched = MixingScheduler(UniformPolicy(), space)
    sched.step(per_byte, 0.0)
    with pytest.raises(UsageError, match="bits per token, the run started in bits per byte"):
        sched.step(per_token, 0.5)


# ---- everything read back is validated before use (reliability issue) --------------------------------
def test_artifact_with_a_nan_temperature_is_refused_at_load(parts, tmp_path):
    from mixagent.policies.artifact import load_policy, random_artifact

    path = random_artifact(tmp_path / "art", parts["space"])
    meta = json.loads((path / "meta.json").read_text())
    for field, value, shown in (("temperature", float("nan"), "action.temperature is nan"),
                                ("floor", 0.5, "action.floor is 0.5")):
        (path / "meta.json").write_text(json.dumps({**meta, "action": {**meta["action"], field: value}}))
        with pytest.raises(CorruptArtifactError, match=shown):
            load_policy(path)


@pytest.mark.parametrize("bad, where", [(float("nan"), "schedule\\[1\\].weights"), (-0.5, "schedule\\[1\\].weights")])
def test_a_saved_state_with_a_bad_schedule_row_is_refused_before_use(parts, tmp_path, bad, where):
    space, model = parts["space"], parts["base"].model
    mixer = Mixer(MixingScheduler(ReplayPolicy(0.5), space), make_ds(parts), parts["heldout"], lag=3)
    mixer.begin(model)
    mixer.update(model, consumed_batches=4, progress=0.5)
    path = mixer.save(tmp_path / "state.json", consumed_batches=6)
    state = json.loads(path.read_text())
    state["data"]["schedule"][1][1][0] = bad
    path.write_text(json.dumps(state))
    other = Mixer(MixingScheduler(ReplayPolicy(0.5), space), make_ds(parts), parts["heldout"], lag=3)
    before = other.dataset.schedule.entries()
    with pytest.raises(CorruptArtifactError, match=where):
        other.load(path)
    assert other.dataset.schedule.entries() == before and other.scheduler.updates == 0  # nothing assigned
    state = json.loads(path.read_text())
    state["data"]["schedule"][1][1][0] = 0.25
    state["scheduler"]["weights"] = [float("nan")] * space.k
    path.write_text(json.dumps(state))
    with pytest.raises(CorruptArtifactError, match="saved mixing state is invalid: weights"):
        other.load(path)


def test_held_out_windows_without_bytes_are_refused_when_built(parts):
    space, lengths = parts["space"], token_byte_lengths(parts["base"].tokenizer)
    eos = int(np.flatnonzero(lengths == 0)[0])  # a token with no bytes (the document separator)
    windows = dict(parts["windows"], math=np.full_like(parts["windows"]["math"], eos))
    with pytest.raises(ConfigError, match="held-out windows of domains \\['math'\\] hold no bytes"):
        HeldOutLoss(windows, space, lengths)


def test_a_streaming_source_without_the_text_column_fails_before_training():
    import datasets

    def gen():
        yield from ({"body": f"text {i}"} for i in range(3))

    stream = datasets.IterableDataset.from_generator(gen)
    with pytest.raises(ConfigError, match="text_column 'text' is not a column .*\\['body'\\]"):
        HFDatasetSource(stream, 16, tokenizer=lambda texts, **kw: {"input_ids": [[1]] * len(texts)}, eos_id=0)


# ---- resuming uses the resumed checkpoint's state and nothing else (reliability issue) ---------------
def _history(mixer):
    return [(h["weights"], h["eval"]) for h in mixer.scheduler.history]


def test_resume_loads_the_state_of_the_checkpoint_it_resumes(parts, tmp_path):
    _, mixer_y, _ = trainer_run(parts, tmp_path / "y", max_steps=3)  # the run to continue
    _, mixer_x, _ = trainer_run(parts, tmp_path / "x", max_steps=3, perturb=0.05)  # an earlier run, same config
    assert _history(mixer_x) != _history(mixer_y)
    # resumed from y's checkpoint while output_dir holds x's checkpoint-3: y's state, not x's
    _, resumed, _ = trainer_run(parts, tmp_path / "x", max_steps=3, resume=str(tmp_path / "y/checkpoint-3"))
    assert _history(resumed) == _history(mixer_y)
    # and into a fresh output_dir: the state is found with the checkpoint
    _, fresh, _ = trainer_run(parts, tmp_path / "fresh", max_steps=6, resume=str(tmp_path / "y/checkpoint-3"))
    assert _history(fresh)[:2] == _history(mixer_y) and len(fresh.scheduler.history) == 3  # + the step-4 decision


def test_extending_a_finished_run_takes_the_decision_due_at_the_resume_step_once(parts, tmp_path):
    trainer_run(parts, tmp_path / "e", max_steps=4, save_steps=4)
    _, mixer, trainer = trainer_run(parts, tmp_path / "e", max_steps=8, save_steps=4,
                                    resume=str(tmp_path / "e/checkpoint-4"))
    logged = [r["step"] for r in trainer.state.log_history if "mixagent/weight/math" in r]
    assert logged == [0, 2, 4, 6] and len(mixer.scheduler.history) == 4
    # resuming the extended run at its step-4 checkpoint does not take the step-4 decision again
    _, again, trainer = trainer_run(parts, tmp_path / "e", max_steps=8, save_steps=4,
                                    resume=str(tmp_path / "e/checkpoint-4"))
    assert [r["step"] for r in trainer.state.log_history if "mixagent/weight/math" in r] == [0, 2, 4, 6]


def test_a_checkpoint_without_mixing_state_is_a_usage_error(parts, tmp_path):
    trainer_run(parts, tmp_path / "o", max_steps=3)
    state_path = tmp_path / "o/checkpoint-3/trainer_state.json"
    trainer_state = json.loads(state_path.read_text())
    trainer_state["stateful_callbacks"].pop("MixAgentCallback")  # as an older mixagent wrote it
    state_path.write_text(json.dumps(trainer_state))
    with pytest.raises(UsageError, match="holds no mixagent state.*resume_from="):
        trainer_run(parts, tmp_path / "o", max_steps=6, resume=str(tmp_path / "o/checkpoint-3"))


class CountingTokenizer:
    """A tokenizer that counts the texts it tokenizes in shared memory (DataLoader workers included)."""

    def __init__(self, tok):
        self.tok, self.eos_token_id = tok, tok.eos_token_id
        self.texts = torch.zeros(1, dtype=torch.int64).share_memory_()

    def __call__(self, texts, **kwargs):
        self.texts += len(texts)
        return self.tok(texts, **kwargs)


@pytest.mark.parametrize("workers", [0, 2])
def test_each_text_is_tokenized_once_whatever_the_workers(parts, workers):
    import datasets

    space, counting = parts["space"], CountingTokenizer(parts["base"].tokenizer)
    texts = {n: [f"{n} passage {i}: " + "words of text here. " * (i % 7 + 3) for i in range(48)] for n in space.names}
    sources = {n: HFDatasetSource(datasets.Dataset.from_dict({"text": t}), 16, tokenizer=counting, seed=i)
               for i, (n, t) in enumerate(texts.items())}
    assert int(counting.texts) == 192  # 4 domains x 48 texts, once each
    ds = MixtureDataset(sources, space, batch_size=4, seed=1)
    batches = stream(ds, 40, workers=workers)
    assert len(batches) == 40 and int(counting.texts) == 192  # reading (in any worker) tokenizes nothing more


@pytest.mark.parametrize("workers", [0, 2])
def test_a_new_pass_continues_the_stream_and_a_restart_is_explicit(parts, workers):
    whole = torch.cat([b["input_ids"] for b in stream(make_ds(parts), 20)])
    ds = make_ds(parts)
    first = torch.cat([b["input_ids"] for b in stream(ds, 5, workers=workers)])
    second = torch.cat([b["input_ids"] for b in stream(ds, 5, workers=workers)])
    assert torch.equal(first, whole[:20])  # 5 batches of 4
    if workers == 0:
        assert torch.equal(second, whole[20:40])  # exactly where the first pass stopped
    else:  # after what the workers had prepared: never a window of the first pass again
        skipped = next(i for i in range(5, 20) if torch.equal(second[:4], whole[4 * i: 4 * i + 4]))
        assert torch.equal(second, whole[4 * skipped: 4 * skipped + 20])
    ds.seek(0)
    assert torch.equal(torch.cat([b["input_ids"] for b in stream(ds, 5, workers=workers)]), whole[:20])


def _ids(loader, n):
    out = []
    for i, b in enumerate(loader):
        out.append(b["input_ids"].clone())
        if i + 1 == n:
            break
    return torch.cat(out)


@pytest.mark.parametrize("persistent", [False, True])
def test_passes_are_told_apart_with_seeded_loaders_and_persistent_workers(parts, persistent):
    whole = torch.cat([b["input_ids"] for b in stream(make_ds(parts), 40)])
    ds = make_ds(parts)
    loader = DataLoader(ds, batch_size=4, num_workers=2, persistent_workers=persistent,
                        generator=torch.Generator().manual_seed(0))  # the same worker seeds every pass
    seen = [_ids(loader, 3) for _ in range(3)]
    rows = [next(i for i in range(0, 160, 4) if torch.equal(x[:4], whole[i: i + 4])) for x in seen]
    assert rows[0] == 0 and rows[0] < rows[1] < rows[2]  # every pass continues, none repeats
    for _ in range(3):  # a restart right after a break holds, whatever the workers still prefetch
        ds.seek(0)
        assert torch.equal(_ids(loader, 3), whole[:12])


def test_a_pass_broken_mid_batch_continues_with_the_next_sample(parts):
    whole = torch.cat([b["input_ids"] for b in stream(make_ds(parts), 10)])
    ds = make_ds(parts)  # batches of 4 samples, read 2 at a time
    first, second = _ids(DataLoader(ds, batch_size=2), 3), _ids(DataLoader(ds, batch_size=2), 3)
    assert torch.equal(first, whole[:6]) and torch.equal(second, whole[6:12])


@pytest.mark.parametrize("edit, shown", [
    (lambda st: st["scheduler"].pop("start_eval"), "start_eval is missing"),
    (lambda st: st.update(consumed_batches="x"), "consumed_batches is 'x'"),
    (lambda st: st.update(consumed_batches=100), "consumed_batches 100 differs from the data section's 6"),
    (lambda st: st.update(scheduler="x"), "scheduler is str"),
    (lambda st: st["scheduler"].update(fingerprint=[]), "no fingerprint object"),
    (lambda st: st["scheduler"].update(history=[]), "history is empty although"),
    (lambda st: st["scheduler"].update(history=[1, "x"]), "history\\[0\\].weights"),
    (lambda st: st.update(lag=-5), "lag is -5"),
])
def test_every_part_of_a_saved_state_is_checked_before_anything_is_assigned(parts, tmp_path, edit, shown):
    space, model = parts["space"], parts["base"].model
    mixer = Mixer(MixingScheduler(ReplayPolicy(0.5), space), make_ds(parts), parts["heldout"], lag=3)
    mixer.begin(model)
    mixer.update(model, consumed_batches=4, progress=0.5)
    state = json.loads(json.dumps(mixer.state_dict(6)))
    edit(state)
    other = Mixer(MixingScheduler(ReplayPolicy(0.5), space), make_ds(parts), parts["heldout"], lag=3)
    with pytest.raises(CorruptArtifactError, match=shown):
        other.load_state_dict(state)
    assert other.scheduler.updates == 0 and other.dataset.schedule.rows == 1 and other.dataset.start_batch == 0


def test_an_edited_callback_entry_in_trainer_state_is_refused(parts, tmp_path):
    trainer_run(parts, tmp_path / "k", max_steps=3)
    path = tmp_path / "k/checkpoint-3/trainer_state.json"
    st = json.loads(path.read_text())
    st["stateful_callbacks"]["MixAgentCallback"]["attributes"]["last_decision_step"] = "x"
    path.write_text(json.dumps(st))
    with pytest.raises(CorruptArtifactError, match="MixAgentCallback entry is invalid"):
        trainer_run(parts, tmp_path / "k", max_steps=6, resume=str(tmp_path / "k/checkpoint-3"))


def test_artifacts_whose_tensors_do_not_match_the_network_are_refused(parts, tmp_path):
    from mixagent.policies.artifact import load_policy, random_artifact, write_artifact

    path = random_artifact(tmp_path / "art", parts["space"], hidden=(8, 8))
    meta = json.loads((path / "meta.json").read_text())
    (path / "meta.json").write_text(json.dumps({**meta, "network": {"hidden": [8]}}))
    with pytest.raises(CorruptArtifactError, match="not in a network of 1 hidden layers"):
        load_policy(path)
    (path / "meta.json").write_text(json.dumps({**meta, "action": {**meta["action"], "temperature": 1e-310}}))
    with pytest.raises(CorruptArtifactError, match="action.temperature is 1e-310"):
        load_policy(path)
    from safetensors.torch import load_file

    tensors = load_file(str(path / "policy.safetensors"))
    with pytest.raises(CorruptArtifactError, match="refusing to write.*action.temperature"):
        write_artifact(tmp_path / "bad", tensors, {**meta, "action": {"temperature": 0, "floor": 0.0}})
    assert not (tmp_path / "bad").exists()


def test_the_trainer_may_not_rebuild_the_callback_from_saved_arguments(parts, tmp_path):
    with pytest.raises(UsageError, match="restore_callback_states_from_checkpoint=True"):
        trainer_run(parts, tmp_path / "r", max_steps=2, restore_callback_states_from_checkpoint=True)


def test_a_version_2_policy_observes_the_stated_setting(parts, tmp_path, monkeypatch):
    """A per-domain policy trained on observation version 2 needs the run's stated setting, observes it, and
    the saved state records it; the deploy job reads it off policy.stated and the trainer section."""
    from mixagent.deploy.job import stated_setting
    from mixagent.deploy.job_config import DeployConfig
    from mixagent.env.observation import setting_features
    from mixagent.policies import load_policy
    from mixagent.policies.per_domain import PerDomainNet, write_per_domain_artifact

    torch.manual_seed(0)
    path = write_per_domain_artifact(tmp_path / "v2", PerDomainNet(8, 11), {"action": {"temperature": 0.25,
                                                                                       "floor": 0.0}},
                                     observation=2)
    space = parts["space"]
    with pytest.raises(ConfigError, match="observes the run's stated setting .* pass stated="):
        MixingScheduler(load_policy(path), space)
    stated = {"lam": 0.8, "steps": 4, "segment_tokens": 7680, "lr": 1e-4, "wsd": 0.0, "decay_fraction": 0.0,
              "target_tokens": 0}
    seen = []
    policy = load_policy(path)
    act = policy.act
    policy.act = lambda obs: seen.append(obs) or act(obs)
    sched = MixingScheduler(policy, space, stated=stated)
    sched.step(fake_eval(space), 0.0, lr=0.5)
    sched.step(fake_eval(space, 0.1), 0.5, lr=1.0)
    assert seen[-1].shape == (3 * space.k + 11,)
    np.testing.assert_allclose(seen[-1][-5:], setting_features(stated), rtol=1e-6)
    assert sched.fingerprint()["stated"] == stated and sched.fingerprint()["observation_version"] == 2
    with pytest.raises(ConfigError, match="lam in \\[0, 1\\]"):
        MixingScheduler(load_policy(path), space, stated={**stated, "lam": 2.0})
    # the deploy job: 60 steps, a decision every 15, 4 x 128-token rows per step: 4 decisions of 7,680 tokens
    judge_case = CONFIGS_DIR / "deploy/smollm2-judge.yaml"  # 60 steps, every 15, 4 rows per step, cosine
    cfg = load_config(DeployConfig, judge_case, ["policy.stated={lam: 0.8}", "trainer.learning_rate=1.0e-4"])
    assert stated_setting(cfg, 128) == stated
    accum = load_config(DeployConfig, judge_case, ["trainer.gradient_accumulation_steps=2"])
    assert stated_setting(accum, 64)["segment_tokens"] == 15 * 4 * 2 * 64  # a base model's own window of 64
    monkeypatch.setenv("WORLD_SIZE", "2")  # torchrun: every rank trains its own rows
    assert stated_setting(accum, 64)["segment_tokens"] == 15 * 4 * 2 * 64 * 2
    # a version-1 policy's saved state does not carry the stated setting (a run may still be extended)
    assert "stated" not in MixingScheduler(UniformPolicy(), space, stated=stated).fingerprint()
    wsd = load_config(DeployConfig, judge_case, ["trainer.lr_scheduler_type=warmup_stable_decay",
                                                 "trainer.lr_scheduler_kwargs={num_decay_steps: 15}"])
    assert stated_setting(wsd, 128)["wsd"] == 1.0 and stated_setting(wsd, 128)["decay_fraction"] == 0.25
    with pytest.raises(ConfigError, match="stated.lamda is not something a user states here.*did you mean 'lam'"):
        load_config(DeployConfig, judge_case, ["policy.stated={lamda: 0.3}"])
    with pytest.raises(ConfigError, match="stated.lam must be a number in \\[0, 1\\]"):
        load_config(DeployConfig, judge_case, ["policy.stated={lam: 1.5}"])
