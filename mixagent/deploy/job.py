"""The deploy job (``python -m mixagent.deploy --config configs/deploy/<name>.yaml [key=value ...]``): one
continual pre-training run of the user's model on the user's data with a Hugging Face Trainer, the data
mixture driven by a policy through :class:`~mixagent.deploy.callback.MixAgentCallback`.

Order of work, so that a bad request fails before anything heavy loads and leaves nothing behind:

1. the config (every problem at once), the device and precision, the output directory (another run's
   state, or nothing to resume, is refused);
2. the data (columns, domains, held-out rows) and the policy (an artifact for another domain space needs
   ``policy.mapping``; the mapping is checked against both lists);
3. the model and its tokenizer, then the tokenized data (a domain shorter than one window is refused);
4. ``deploy.json`` (what the run is) is written, then training; at the end ``report.json``, ``report.md``
   and the plots (``mixture.png``, ``heldout.png``) in the output directory.

Every path the job reads or writes is the config's resolved view (``cfg.model.resolved.path``,
``cfg.data.resolved.files``, ``cfg.output_dir``, ...): resolved once, when the config was loaded.
Under ``torchrun`` (DDP through accelerate) every process runs the same job on its share of each batch;
the first writes ``deploy.json`` and the report.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mixagent.config import config_hash, to_dict
from mixagent.deploy.job_config import DeployConfig
from mixagent.domains import Domain, DomainSpace, DomainWeights
from mixagent.env.rewards import balanced_score
from mixagent.errors import ConfigError, MixagentError, UsageError
from mixagent.paths import atomic_write_json

__all__ = ["run_deploy", "run_config", "DEPLOY_FORMAT"]

log = logging.getLogger(__name__)
DEPLOY_FORMAT = 1


def _device(cfg: DeployConfig) -> str:
    """``cpu`` or ``cuda``; refuses CUDA without a GPU and bf16 where the hardware lacks it."""
    want = cfg.model.device
    cuda = torch.cuda.is_available()
    if want == "cuda" and not cuda:
        raise ConfigError("model.device", ["cuda was asked for but torch sees no CUDA device: use device auto or "
                                           "cpu, or install a CUDA build of torch on a GPU machine"])
    device = "cuda" if want == "cuda" or (want == "auto" and cuda) else "cpu"
    if cfg.model.dtype == "bf16":
        ok = torch.cuda.is_bf16_supported() if device == "cuda" else torch.ops.mkldnn._is_mkldnn_bf16_supported()
        if not ok:
            raise ConfigError("model.dtype", [f"bf16 was asked for but this {device.upper()} lacks bfloat16 support: "
                                              f"use dtype fp32"])
    return device


def _identity(cfg: DeployConfig) -> dict:
    """What makes a run this run: everything but how long it trains and how it resumes."""
    trainer = {k: v for k, v in cfg.trainer.items() if k not in ("max_steps", "save_steps", "logging_steps",
                                                                   "output_dir", "report_to")}
    policy = to_dict(cfg.policy)
    if cfg.policy.resolved.artifact is not None:  # the guard acts on learned policies: its settings make the run
        from mixagent.policies.ranges import GUARD_VERSION

        policy |= {"ood": cfg.policy.ood, "ood_fallback": cfg.policy.ood_fallback,
                   "ood_tolerance": cfg.policy.ood_tolerance, "guard_version": GUARD_VERSION}
    evaluation = to_dict(cfg.eval)
    if cfg.eval.judge is not None:  # the judge by content: new weights at the same path make another run
        from mixagent.env.judge import judge_model_digest

        evaluation["judge_digest"] = judge_model_digest(cfg.eval.judge.model)
    return {"model": to_dict(cfg.model), "data": to_dict(cfg.data), "policy": policy,
            "eval": evaluation, "seed": cfg.seed, "trainer": trainer}


def _rank() -> int:
    """This process's rank under torchrun / accelerate (``RANK``), before the Trainer starts the process group."""
    return int(os.environ.get("RANK", "0"))


def _checkpoints(out: Path) -> list[Path]:
    return sorted(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]) if p.name.split("-")[-1]
                  .isdigit() else -1)


def _check_output_dir(cfg: DeployConfig, out: Path) -> None:
    """Refuse an output directory holding another run's state, or one with nothing to resume."""
    fix = "set trainer.output_dir to a new directory, or delete this one"
    # another process of this run may be publishing deploy.json right now: its temporary file is not a file
    if not out.exists() or not any(p for p in out.iterdir() if not (p.name.startswith(".deploy.json.")
                                                                     and p.name.endswith(".tmp"))):
        if cfg.resume:
            raise UsageError(f"resume=true but {out} holds no run to resume: start without resume")
        return
    record = out / "deploy.json"
    if not record.is_file():
        raise UsageError(f"trainer.output_dir {out} holds files not written by a deploy job "
                         f"({sorted(p.name for p in out.iterdir())[:5]}): {fix}")
    try:
        theirs = json.loads(record.read_text())["identity"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"{record} is unreadable ({exc}): {fix}") from exc
    mine = json.loads(json.dumps(_identity(cfg)))
    if theirs != mine:
        diff = sorted(k for k in mine if mine[k] != theirs.get(k))
        raise UsageError(f"trainer.output_dir {out} holds another run's state (it differs in {diff}): {fix}")
    if _checkpoints(out) and not cfg.resume:
        raise UsageError(f"trainer.output_dir {out} holds this run's checkpoints: resume=true to continue it, or "
                         f"{fix} to start over")
    if cfg.resume and not _checkpoints(out):
        raise UsageError(f"resume=true but {out} holds no checkpoint (set trainer.save_steps to write them): start "
                         f"without resume")


def _policy_space(policy: Any) -> DomainSpace | None:
    names, fields = getattr(policy, "names", None), getattr(policy, "fields", None)
    if names is None or fields is None:
        return None
    return DomainSpace(str(policy.meta["domains"].get("space", "agent")),
                       [Domain(n, f, [n]) for n, f in zip(names, fields)])


def _policy(cfg: DeployConfig, space: DomainSpace, natural: DomainWeights, batches: int):
    """The policy and, for an artifact of another domain space, the mapping onto the run's (typed errors
    name both domain lists)."""
    from mixagent.deploy.mapping import DomainMapping
    from mixagent.policies.artifact import ArtifactMismatchError, load_policy
    from mixagent.policies.guard import guard_problem
    from mixagent.policies.registry import PolicyContext, build_policy, method_problems

    spec = cfg.policy.spec
    path = cfg.policy.resolved.artifact
    if path is not None:
        if not path.is_dir():
            raise ConfigError("policy.spec", [f"{spec!r}: no such artifact directory (train one with make train-agent, "
                                              f"or name a baseline such as replay:0.5)"])
        policy = load_policy(path)
        agent = _policy_space(policy)
        if agent is None and cfg.policy.mapping:  # a per-domain policy reads any domain space as it is
            raise ConfigError("policy.mapping", [f"{spec!r} is a per-domain policy that drives any domain space "
                                                 f"directly; a mapping is only for an artifact of another space: "
                                                 f"drop it"])
        if agent is not None and agent.names != space.names:
            if not cfg.policy.mapping:
                raise ArtifactMismatchError(
                    f"policy {spec} was trained on domains {dict(zip(agent.names, agent.fields))}, the run has "
                    f"{dict(zip(space.names, space.fields))}: give policy.mapping {{agent domain: your domain}} "
                    f"(same field), or use a policy trained on your domains")
        mapping = DomainMapping(agent, space, dict(cfg.policy.mapping)) if agent is not None and \
            agent.names != space.names else None
        if problem := guard_problem(policy, _ood_config(cfg)):  # before the model loads
            raise ConfigError("policy.ood", [problem])
        return policy, mapping
    if problems := method_problems(spec):
        raise ConfigError("policy.spec", problems)
    if cfg.policy.mapping:
        raise ConfigError("policy.mapping", [f"{spec!r} acts on the run's own domains; a mapping is only for a "
                                             f"trained artifact of another domain space: drop it"])
    return build_policy(spec, PolicyContext(natural.to_mapping(), batches_per_step=batches)), None


def _ood_config(cfg: DeployConfig) -> Any:
    """The out-of-distribution guard's config (``policy.ood``, ``ood_fallback``, ``ood_tolerance``)."""
    from mixagent.policies.guard import OODConfig

    return OODConfig(cfg.policy.ood, cfg.policy.ood_fallback, cfg.policy.ood_tolerance)


def stated_setting(cfg: DeployConfig, seq_len: int) -> dict[str, float]:
    """What a policy trained on observation version 2 observes of this run
    (:func:`mixagent.env.observation.setting_features`): ``policy.stated`` (lam, target_tokens) and, read off
    the trainer section, the decisions (``steps``: ``max_steps / policy.every``, rounded up), the tokens per
    decision (``segment_tokens``: ``every x per_device_train_batch_size x gradient_accumulation_steps x
    seq_len x WORLD_SIZE``; ``seq_len`` is the run's window: a mixagent base model's own, else
    ``data.seq_len``), the peak LR, and whether the schedule is warmup-stable-decay with its decay
    share (``lr_scheduler_kwargs.num_decay_steps / max_steps``)."""
    t, p = cfg.trainer, cfg.policy
    max_steps = int(t.get("max_steps", 1))
    wsd = t.get("lr_scheduler_type") == "warmup_stable_decay"
    decay = float((t.get("lr_scheduler_kwargs") or {}).get("num_decay_steps", 0)) / max_steps if wsd else 0.0
    return {"lam": float(p.stated.get("lam", 0.5)), "target_tokens": float(p.stated.get("target_tokens", 0)),
            "steps": float(math.ceil(max_steps / p.every)),
            "segment_tokens": float(p.every * int(t.get("per_device_train_batch_size", 8))
                                    * int(t.get("gradient_accumulation_steps", 1)) * seq_len
                                    * int(os.environ.get("WORLD_SIZE", "1"))),  # every rank trains its own rows
            "lr": float(t.get("learning_rate", 5e-5)), "wsd": float(wsd), "decay_fraction": decay}


def _ood_fallback(cfg: DeployConfig, natural: DomainWeights, batches: int) -> Any:
    """The policy that decides out-of-range updates (``policy.ood_fallback``), in the run's context."""
    from mixagent.policies.registry import PolicyContext, build_policy

    return build_policy(cfg.policy.ood_fallback, PolicyContext(natural.to_mapping(), batches_per_step=batches))


def _load_model(cfg: DeployConfig, device: str) -> tuple[torch.nn.Module, Any, dict]:
    """The model (fp32 weights; bf16 runs use the Trainer's mixed precision) and its tokenizer."""
    m = cfg.model
    if m.kind == "base":
        from mixagent.config import load_config
        from mixagent.env.base_model import BaseModelConfig, get_base_model

        base = get_base_model(load_config(BaseModelConfig, m.resolved.path))
        return base.model, base.tokenizer, {"parameters": base.meta["parameters"], "name": m.resolved.path.stem}
    if m.kind == "smollm2_gguf":
        from mixagent.env.gguf import load_gguf_model

        model, tok = load_gguf_model(device=device)
        return model, tok, {"parameters": sum(p.numel() for p in model.parameters()), "name": "SmolLM2-135M"}
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    path = m.resolved.path
    tok = AutoTokenizer.from_pretrained(str(m.resolved.tokenizer), local_files_only=True)
    if m.kind == "hf":
        model = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True, dtype=torch.float32)
    else:
        torch.manual_seed(cfg.seed)
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(path), local_files_only=True))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model, tok, {"parameters": sum(p.numel() for p in model.parameters()), "name": path.name}


def _pieces(cfg: DeployConfig, model: Any, tokenizer: Any, batch: int):
    """(space, dataset, evaluate, natural, local run or None) for mixagent's corpora."""
    d = cfg.data
    if d.form == "corpora":
        from mixagent.deploy.local import build_local_run, text_run_pieces

        if cfg.model.kind == "base":
            run = build_local_run(cfg.model.resolved.path, d.resolved.corpora, cfg.eval.resolved.env)
            evaluate = run.evaluator if cfg.eval.kind == "benchmarks" else None
            if evaluate is None:
                from mixagent.data.tokenizer import token_byte_lengths
                from mixagent.deploy.heldout import HeldOutLoss

                windows = {n: run.data.val_windows(i, d.eval_windows, run.seq_len + 1)
                           for i, n in enumerate(run.space.names)}
                evaluate = HeldOutLoss(windows, run.space, token_byte_lengths(run.base.tokenizer),
                                       cfg.eval.batch_size)
            return run.space, run.dataset(batch, seed=cfg.seed), evaluate, run.natural, run
        from mixagent.data.sources import load_space

        space = load_space(d.resolved.corpora)
        dataset, evaluate, natural = text_run_pieces(space, tokenizer, d.seq_len, batch, d.eval_windows,
                                                     max_docs=d.max_docs or None, seed=cfg.seed)
        return space, dataset, evaluate, natural, None
    raise AssertionError("user data is built by tokenized_pieces")  # pragma: no cover


def _judge(cfg: DeployConfig, space: DomainSpace, user: Any, tokenizer: Any, model: Any, device: str) -> Any:
    """The judge of ``eval.judge`` over each field's held-out documents: the held-out rows of its domains (user
    data), or the ``judge.split`` of its domains' corpora."""
    from mixagent.data.build import read_split
    from mixagent.env.judge import JudgeEvaluation, cut_prefixes, judge_cache_dir, load_judge

    spec = cfg.eval.judge
    prefixes = {}
    for field in ("source", "target"):
        domains = [d for d in space.domains if d.field == field]
        if user is not None:
            docs = [t for d in domains for t in user.held_out[d.name][user.text_column]]
        else:
            corpora = dict.fromkeys(c for d in domains for c in d.corpora)
            docs = [p["text"] for c in corpora for p in read_split(c, spec.split)]
        prefixes[field] = cut_prefixes(docs, spec.prefixes, spec.prefix_chars, spec.suffix_chars, spec.seed,
                                       where=f"the {field} field's held-out data")
    context = min(int(getattr(model.config, "max_position_embeddings", 0) or 1 << 30),
                  int(tokenizer.model_max_length or 1 << 30), 1 << 20)
    return JudgeEvaluation(spec, load_judge(spec, device), prefixes, tokenizer, context,
                           judge_cache_dir())


def _initial(cfg: DeployConfig, space: DomainSpace, natural: DomainWeights, model: Any, run: Any) -> DomainWeights:
    """The mixture before the first decision (``policy.initial``)."""
    if cfg.policy.initial == "natural":
        return natural
    if cfg.policy.initial == "uniform":
        return DomainWeights.normalised(space, np.ones(space.k))
    if run is None:  # load_config refuses this combination; a config built in code is checked here
        raise ConfigError("policy.initial", ["estimate needs data.corpora and model.kind base (it classifies "
                                             "text sampled from the model with mixagent's tokenizer): use natural "
                                             "or uniform"])
    return run.initial("estimate", model, seed=cfg.seed)


def _write_copies(cfg: DeployConfig, report: dict, rank: int, world: int, first: bool) -> None:
    """``cfg.report``: the first process's report there; under DDP each process's beside it, rank-suffixed."""
    path = cfg.resolved.report
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    if world > 1:
        atomic_write_json(path.with_name(f"{path.stem}.rank{rank}{path.suffix}"), report)
    if first:
        atomic_write_json(path, report)


def run_deploy(cfg: DeployConfig, progress: bool = True, mixing: bool = True) -> dict:
    """Run (or resume) the job; returns the report (also ``<output dir>/report.json``).

    ``mixing=False`` trains the same run on the starting mixture without the callback (the baseline of the
    callback's overhead in ``benchmarks/gpu_check.py``).

    Raises:
        ConfigError: bad config values, CUDA or bf16 the machine lacks, a policy the registry does not know,
            a mapping that does not fit both domain lists, data without the named columns, ``policy.ood`` clip
            or fallback for an artifact that records no feature ranges.
        ArtifactMismatchError: an artifact for another domain space without ``policy.mapping``.
        DataMissingError: a domain without training or held-out data, or shorter than one window.
        UsageError: an output directory holding another run's state, or nothing to resume.
    """
    from transformers import Trainer, TrainingArguments, default_data_collator

    from mixagent.deploy.callback import MixAgentCallback
    from mixagent.deploy.loop import Mixer
    from mixagent.deploy.report import write_report
    from mixagent.deploy.scheduler import MixingScheduler, SchedulerConfig
    from mixagent.deploy.user_data import load_user_data, tokenized_pieces

    out = cfg.output_dir
    rank = _rank()
    device = _device(cfg)
    _check_output_dir(cfg, out)
    batch = int(cfg.trainer.get("per_device_train_batch_size", 8))
    accum = int(cfg.trainer.get("gradient_accumulation_steps", 1))
    user = load_user_data(cfg.data, cfg.seed) if cfg.data.form != "corpora" else None
    # the policy against the run's domains before the model loads (natural shares later)
    if user is not None:
        early = user.space
    else:
        from mixagent.data import load_space

        early = load_space(cfg.data.resolved.corpora)
    _policy(cfg, early, DomainWeights.normalised(early, np.ones(early.k)), 1)
    if cfg.policy.floor * early.k >= 1:  # the other guards are checked with the config
        raise ConfigError("policy.floor", [f"floor {cfg.policy.floor} with {early.k} domains: floor * K must stay "
                                           f"below 1; use policy.floor < {1 / early.k:.4g}"])
    model, tokenizer, about = _load_model(cfg, device)
    run = None
    if user is not None:
        space = user.space
        dataset, evaluate, natural = tokenized_pieces(user, tokenizer, cfg.data.seq_len, batch, cfg.data.eval_windows,
                                                      cfg.eval.unit, cfg.eval.batch_size, cfg.seed)
    else:
        space, dataset, evaluate, natural, run = _pieces(cfg, model, tokenizer, batch)
    judge = _judge(cfg, space, user, tokenizer, model, device) if cfg.eval.judge is not None else None
    if judge is not None:
        from mixagent.deploy.heldout import WithJudge

        evaluate = WithJudge(evaluate, judge)
    policy, mapping = _policy(cfg, space, natural, cfg.policy.every * accum)
    initial = _initial(cfg, space, natural, model, run)
    p = cfg.policy
    scheduler = MixingScheduler(policy, space, initial, SchedulerConfig(p.floor, p.max_change, p.fallback), mapping,
                                ood=_ood_config(cfg), ood_fallback=_ood_fallback(cfg, natural, p.every * accum),
                                stated=stated_setting(cfg, run.seq_len if run is not None else cfg.data.seq_len))
    mixer = Mixer(scheduler, dataset, evaluate)
    out.mkdir(parents=True, exist_ok=True)  # every check passed: now the run may write
    if rank == 0:
        atomic_write_json(out / "deploy.json", {"format": DEPLOY_FORMAT, "identity": _identity(cfg),
                                                "config": to_dict(cfg), "hash": config_hash(_identity(cfg)),
                                                "domains": dict(zip(space.names, space.fields)),
                                                "mapping": mapping.to_json() if mapping else None})
    asked = cfg.trainer.get("report_to") or []
    use_wandb = cfg.wandb != "disabled" or "wandb" in ([asked] if isinstance(asked, str) else asked)
    if use_wandb:
        os.environ["WANDB_MODE"] = cfg.wandb if cfg.wandb != "disabled" else "offline"  # offline unless told
        os.environ.setdefault("WANDB_DIR", str(out))
        import wandb

        # wandb reads the environment once per process: one that set wandb up before (an earlier job, another
        # library) would keep its first mode and directory, so they are handed over explicitly too
        wandb.setup(wandb.Settings(mode=os.environ["WANDB_MODE"], root_dir=os.environ["WANDB_DIR"]))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    args: dict[str, Any] = {"per_device_train_batch_size": batch, "logging_steps": 10, "save_strategy": "no",
                            "report_to": [], "ddp_find_unused_parameters": False,
                            "accelerator_config": {"dispatch_batches": False}}
    if cfg.trainer.get("save_steps"):
        args["save_strategy"] = "steps"
    args.update(cfg.trainer)
    if cfg.wandb != "disabled":
        args["report_to"] = ["wandb"]
    args.update(output_dir=str(out), seed=cfg.seed, bf16=cfg.model.dtype == "bf16", use_cpu=device == "cpu",
                disable_tqdm=not progress)
    if world > 1 and device == "cpu":
        args["ddp_backend"] = "gloo"
    digests: list[str] = []  # what this process trained on, batch by batch (resumed runs compare them)

    def collate(items: list[dict]) -> dict:
        batch = default_data_collator(items)
        digests.append(hashlib.sha256(batch["input_ids"].numpy().tobytes()).hexdigest()[:16])
        return batch

    trainer = Trainer(model=model, args=TrainingArguments(**args), train_dataset=dataset, data_collator=collate,
                      callbacks=[MixAgentCallback(mixer, every_n_steps=p.every)] if mixing else [])
    run_t0 = time.perf_counter()  # this process's run: the start evaluation, training, the last evaluation
    if not mixing:
        mixer.begin(model)  # the starting mixture for the whole run, no decisions after it
    try:
        trainer.train(resume_from_checkpoint=True if cfg.resume else None)
    finally:
        if use_wandb:  # the Trainer leaves its wandb run open; a later job in this process would log into it
            import wandb

            if wandb.run is not None:
                wandb.finish()
    steps = int(args["max_steps"])
    if judge is not None:
        judge.judge_next()  # the run's last evaluation is always judged: the report's score is of the end
    final = evaluate(trainer.model, tokens_seen=steps * accum * mixer.tokens_per_batch)
    run_seconds = time.perf_counter() - run_t0
    label = p.spec if mixing else f"{p.spec} (not mixing: the starting mixture throughout)"
    report = {"format": DEPLOY_FORMAT, "name": cfg.name, "policy": label, "model": about, "steps": steps,
              "domains": list(space.names), "fields": list(space.fields),
              "mapping": mapping.to_json() if mapping else None, "history": scheduler.history,
              "ood": scheduler.ood_summary(),
              "schedule": dataset.schedule.entries(), "start": scheduler.start_eval.to_json(),
              "final": final.to_json(), "device": device, "dtype": cfg.model.dtype,
              "balanced": balanced_score("balanced", 0.5, scheduler.start_eval, final, space),
              "train_loss": [{"step": h["step"], "loss": h["loss"]} for h in trainer.state.log_history if "loss" in h],
              "train_seconds": next((h["train_runtime"] for h in trainer.state.log_history if "train_runtime" in h),
                                    None),
              "batches_sha256": digests}
    if judge is not None:  # its validity, its cost per training step, and the judge reward of the run (lam 0.5)
        about_judge = judge.describe()
        # this process's judging over its run's wall time (a resumed run counts only what it ran)
        share = about_judge["seconds_total"] / run_seconds if run_seconds > 0 else math.nan
        report["judge"] = about_judge | {
            "seconds_per_step": about_judge["seconds_total"] / steps, "run_seconds": run_seconds,
            "share_of_run_seconds": share,
            "rewards": {name: balanced_score(name, 0.5, scheduler.start_eval, final, space) for name in ("judge",)}}
        if share > 0.5:
            every = cfg.eval.judge.every
            fix = (f"judge every {2 * every}th evaluation (eval.judge.every={2 * every}) or only at the first and "
                   f"last (eval.judge.every=0)" if every > 0 else "judge fewer prefixes (eval.judge.prefixes) or "
                   "generate shorter continuations (eval.judge.max_new_tokens)")
            log.warning("judging took %.0f%% of the run's time (%.1f s per judged evaluation): %s",
                        100 * share, about_judge["seconds_per_judged_eval"], fix)
    first = trainer.is_world_process_zero()
    _write_copies(cfg, report, trainer.args.process_index, world, first)
    if first:
        write_report(out, report)
        s, f = scheduler.start_eval.scores, final.scores
        print(f"{label} on {about['name']} ({about['parameters']:,} params), {steps} steps: source "
              f"{s['source']:.4f} -> {f['source']:.4f}, target {s['target']:.4f} -> {f['target']:.4f}; report: "
              f"{out / 'report.md'}")
    return report


def run_config(config: str | Path, overrides: list[str] | tuple[str, ...] = (), progress: bool = True,
               check_only: bool = False) -> int:
    """Load ``config`` with ``key=value`` overrides and run the job, as ``python -m mixagent.deploy`` does
    (it and the legacy alias ``python -m mixagent.deploy.cpt`` call this); returns the exit status: 0, or 2
    with the typed error (what was wrong, what was expected, the fix) printed to stderr.

    Args:
        config: the deploy config YAML (``configs/deploy/*.yaml``).
        overrides: ``key=value`` overrides (``trainer.max_steps=500``).
        progress: show progress bars (``False``: logs only, the libraries' bars too).
        check_only: validate the config and the overrides (every problem at once), load nothing, run nothing.
    """
    import sys

    from mixagent.config import load_config

    try:
        cfg = load_config(DeployConfig, config, list(overrides))
        if check_only:
            print(f"config ok: {config}")
            return 0
        if not progress:  # the libraries' bars too (datasets' splits and maps, transformers' shard writes)
            import datasets
            import transformers

            datasets.disable_progress_bars()
            transformers.utils.logging.disable_progress_bar()
        run_deploy(cfg, progress=progress)
    except MixagentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
