"""Deployment overhead of mixagent in a Hugging Face Trainer run (goals: callback + sampler <= 1% of the
Trainer step time for the ~8M model on this CPU; one policy decision <= 1 ms).

    python benchmarks/bench_deploy.py [--steps 30] [--repeats 3] [--every 25]

What is measured, all in this one process:

1. **Trainer step time, interleaved.** A randomly initialised ~8M model (``MODEL_SIZES["8m"]``, seq_len 128)
   trains at batch 8 on real token windows of the math-natural space, twice per repeat in alternating
   order (AB, BA, ...): (A) a plain ``IterableDataset`` cycling pre-built windows, no callback; (B)
   ``MixtureDataset`` + ``MixAgentCallback`` with the trained policy (or a random artifact of the same
   shape) updating every ``--every`` steps. B's evaluation is a stub returning a fixed ``EvalResult``, so
   the difference is the callback, the sampler and the decisions only. Step times are the intervals
   between ``on_step_end`` calls after ``--warmup`` steps.
2. **Microbenchmarks** (noise-free bound): ``MixtureDataset`` iteration per sample, ``Mixer.update`` with
   the stub evaluation, ``WeightSchedule`` reads, and the bound
   ``(batch_size * sample cost + update cost / every) / step time``.
3. **Decision latency**: ``MixingScheduler.step`` (observation + policy + guards), 1000 calls.
4. **Evaluation cost** (the method's cost, not overhead): one ``HeldOutLoss`` and one full ``Evaluator``
   call of the math-natural eval spec on the 8M model, amortised per step at ``--every``.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset
from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments

from mixagent.config import load_config
from mixagent.data.domain_data import DomainData
from mixagent.data.tokenizer import get_tokenizer, token_byte_lengths, tokenizer_dir
from mixagent.deploy.callback import MixAgentCallback
from mixagent.deploy.heldout import HeldOutLoss, field_scores_from_bits
from mixagent.deploy.loop import Mixer
from mixagent.deploy.mixture import MixtureDataset, _Reader
from mixagent.deploy.scheduler import MixingScheduler
from mixagent.domains import DomainSpace, DomainWeights
from mixagent.env.base_model import BaseModelConfig
from mixagent.env.evaluation import EvalResult, Evaluator
from mixagent.env.lm import MODEL_SIZES, ProxyModelConfig, build_model, count_parameters
from mixagent.env.spec import load_spec
from mixagent.paths import CONFIGS_DIR, REPO_ROOT
from mixagent.policies.artifact import load_policy
from mixagent.policies.artifact import random_artifact as make_random_artifact

COMMAND = ".venv/bin/python benchmarks/bench_deploy.py"
BATCH = 8


# ---- pieces --------------------------------------------------------------------------------------
class FixedWindows(IterableDataset):
    """Baseline data: pre-built windows cycled for ever (no mixing, no per-sample work beyond the yield)."""

    def __init__(self, windows: torch.Tensor) -> None:
        self.windows = windows

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        for ids in itertools.cycle(self.windows):
            yield {"input_ids": ids, "labels": ids}


class StepTimer(TrainerCallback):
    """Records ``time.perf_counter()`` at every ``on_step_end``."""

    def __init__(self) -> None:
        self.stamps: list[float] = []

    def on_step_end(self, args: TrainingArguments, state: Any, control: Any, **kwargs: Any) -> None:
        self.stamps.append(time.perf_counter())

    def intervals(self, warmup: int) -> list[float]:
        return [b - a for a, b in zip(self.stamps[warmup:], self.stamps[warmup + 1:])]


def stub_result(space: DomainSpace, rng: np.random.Generator | None = None) -> EvalResult:
    """A plausible evaluation (bits per byte around 3, field scores from them); jittered with ``rng``."""
    bits = {n: 3.0 + 0.1 * i + (float(rng.normal(0, 0.05)) if rng is not None else 0.0)
            for i, n in enumerate(space.names)}
    return EvalResult(bits, field_scores_from_bits(bits, space), {}, 0, 0)


def policy_path(space: DomainSpace) -> tuple[Path, str]:
    trained = REPO_ROOT / "runs/agent/default/rl"
    meta = json.loads((trained / "meta.json").read_text()) if (trained / "meta.json").is_file() else {}
    if meta.get("domains", {}).get("names") == list(space.names):  # a trained agent of this space
        return trained, "trained (runs/agent/default/rl)"
    return make_random_artifact(REPO_ROOT / "runs/bench/random_policy", space), "random artifact (no trained one)"


def make_mixer(path: Path, space: DomainSpace, data: DomainData, seq_len: int,
               evaluate: Callable[..., EvalResult] | None) -> Mixer:
    scheduler = MixingScheduler(load_policy(path), space, DomainWeights.normalised(space, data.natural))
    dataset = MixtureDataset.from_token_streams(data.train, space, seq_len, BATCH, seed=0)
    return Mixer(scheduler, dataset, evaluate)


def per_call(fn: Callable[[int], Any], n: int, warmup: int = 50) -> list[float]:
    """Seconds per call of ``fn(i)``, ``i`` counting on from the warm-up calls (``warmup + n`` in all)."""
    for i in range(warmup):
        fn(i)
    out = []
    for i in range(warmup, warmup + n):
        t0 = time.perf_counter()
        fn(i)
        out.append(time.perf_counter() - t0)
    return out


def p99(xs: list[float]) -> float:
    return float(np.percentile(xs, 99))


# ---- 1. the Trainer runs -------------------------------------------------------------------------
def train_run(mcfg: ProxyModelConfig, steps: int, out: str, dataset: IterableDataset,
              callbacks: list[TrainerCallback]) -> StepTimer:
    timer = StepTimer()
    args = TrainingArguments(output_dir=out, max_steps=steps, per_device_train_batch_size=BATCH, learning_rate=1e-3,
                             use_cpu=True, report_to=[], disable_tqdm=True, save_strategy="no",
                             logging_strategy="no", dataloader_num_workers=0, seed=0)
    trainer = Trainer(model=build_model(mcfg, seed=0), args=args, train_dataset=dataset,
                      callbacks=[*callbacks, timer])
    trainer.remove_callback(PrinterCallback)  # no metrics dict printed per run
    trainer.train()
    return timer


def trainer_runs(mcfg: ProxyModelConfig, space: DomainSpace, data: DomainData, path: Path, args: argparse.Namespace,
                 baseline: torch.Tensor) -> dict[str, Any]:
    fixed = stub_result(space)

    def run_a(steps: int, out: str) -> StepTimer:
        return train_run(mcfg, steps, out, FixedWindows(baseline), [])

    def run_b(steps: int, out: str) -> tuple[StepTimer, Mixer]:
        mixer = make_mixer(path, space, data, mcfg.seq_len, lambda model, tokens_seen=0: fixed)
        cb = MixAgentCallback(mixer, every_n_steps=args.every)
        return train_run(mcfg, steps, out, mixer.dataset, [cb]), mixer

    a_all: list[float] = []
    b_all: list[float] = []
    pairs = []
    updates = 0
    with tempfile.TemporaryDirectory() as out:
        run_a(3, out)  # warm the process (allocator, kernels) before anything is kept
        run_b(3, out)
        for rep in range(args.repeats):
            order = "AB" if rep % 2 == 0 else "BA"
            got: dict[str, list[float]] = {}
            for side in order:
                t0 = time.perf_counter()
                if side == "A":
                    got["A"] = run_a(args.steps, out).intervals(args.warmup)
                else:
                    timer, mixer = run_b(args.steps, out)
                    got["B"] = timer.intervals(args.warmup)
                    updates += mixer.scheduler.updates
                took = time.perf_counter() - t0
                print(f"  repeat {rep + 1}/{args.repeats} {side}: {args.steps} steps in {took:.1f} s, "
                      f"median step {1e3 * statistics.median(got[side]):.1f} ms, "
                      f"mean {1e3 * statistics.fmean(got[side]):.1f} ms", flush=True)
            a_all += got["A"]
            b_all += got["B"]
            pairs.append((statistics.median(got["A"]), statistics.median(got["B"]),
                          statistics.fmean(got["A"]), statistics.fmean(got["B"])))
    a_med, b_med = statistics.median(a_all), statistics.median(b_all)
    a_mean, b_mean = statistics.fmean(a_all), statistics.fmean(b_all)
    rep_over = sorted(100 * (b - a) / a for a, b, _, _ in pairs)
    return {"a_median_s": a_med, "b_median_s": b_med, "a_mean_s": a_mean, "b_mean_s": b_mean,
            "overhead_median_pct": 100 * (b_med - a_med) / a_med, "overhead_mean_pct": 100 * (b_mean - a_mean) / a_mean,
            "overhead_per_repeat_pct": rep_over, "steps_timed_per_side": len(a_all), "updates_in_b_runs": updates}


# ---- 2. microbenchmarks --------------------------------------------------------------------------
def micro(space: DomainSpace, data: DomainData, path: Path, seq_len: int, args: argparse.Namespace,
          baseline: torch.Tensor) -> dict[str, Any]:
    res: dict[str, Any] = {}
    n = args.samples
    mixer = make_mixer(path, space, data, seq_len, None)
    mixer.begin(result=stub_result(space), lr=1.0)
    it = iter(mixer.dataset)
    for _ in range(200):
        next(it)
    t0 = time.perf_counter()
    for _ in range(n):
        next(it)
    res["sample_us"] = 1e6 * (time.perf_counter() - t0) / n
    it_base = iter(FixedWindows(baseline))
    t0 = time.perf_counter()
    for _ in range(n):
        next(it_base)
    res["baseline_sample_us"] = 1e6 * (time.perf_counter() - t0) / n

    rng = np.random.default_rng(1)
    results = [stub_result(space, rng) for _ in range(args.calls + 50)]
    mixer = make_mixer(path, space, data, seq_len, None)  # fresh: 1000 updates fit the schedule's 4096 rows
    mixer.begin(result=results[0], lr=1.0)
    upd = per_call(lambda i: mixer.update(consumed_batches=25 * (i + 1), progress=0.5, result=results[i], lr=1.0),
                   args.calls)
    res["update_median_us"], res["update_p99_us"] = 1e6 * statistics.median(upd), 1e6 * p99(upd)
    sched = mixer.dataset.schedule
    w = mixer.weights
    last = int(sched.table[sched.rows - 1, 0])
    sets = per_call(lambda i: sched.set(w, last), args.calls)  # same first batch: rewrites the last row
    res["set_median_us"] = 1e6 * statistics.median(sets)

    reader = _Reader(sched)
    reader.cum_at(0)
    b0 = last + 1
    reads = per_call(lambda i: reader.cum_at(b0 + i), args.calls)
    res["read_median_us"] = 1e6 * statistics.median(reads)

    def read_after_change(i: int) -> None:
        sched.set(w, last)  # bumps the version: the next read refreshes its copy of the table
        t0 = time.perf_counter()
        reader.cum_at(b0 + i)
        changed.append(time.perf_counter() - t0)

    changed: list[float] = []
    per_call(read_after_change, 200, warmup=0)
    res["read_refresh_median_us"] = 1e6 * statistics.median(changed)
    res["schedule_rows"] = sched.rows

    # 3. decision latency: MixingScheduler.step alone
    scheduler = MixingScheduler(load_policy(path), space, DomainWeights.normalised(space, data.natural))
    scheduler.step(results[0], 0.0, lr=1.0)
    steps = per_call(lambda i: scheduler.step(results[i], (i % 100) / 100, lr=1.0), args.calls)
    res["decision_median_us"], res["decision_p99_us"] = 1e6 * statistics.median(steps), 1e6 * p99(steps)
    res["decision_fallbacks"] = sum(h["fallback"] is not None for h in scheduler.history)
    return res


# ---- 4. evaluation cost --------------------------------------------------------------------------
def evaluation_cost(mcfg: ProxyModelConfig, space: DomainSpace, data: DomainData, tok: Any) -> dict[str, Any]:
    espec = load_spec(REPO_ROOT / "envs/math-natural.yaml").eval
    lengths = token_byte_lengths(tok)
    evaluator = Evaluator(data, espec, tok, lengths, mcfg.seq_len)
    per_domain = max(1, int(espec.token_budget * espec.bpb_share) // (space.k * mcfg.seq_len))
    held = HeldOutLoss({n: data.val_windows(d, per_domain, mcfg.seq_len + 1) for d, n in enumerate(space.names)},
                       space, lengths, batch_size=espec.batch_size)
    model = build_model(mcfg, seed=0)
    out: dict[str, Any] = {"heldout_windows": len(held.windows), "evaluator_tokens": evaluator.eval_tokens}
    held(model)  # warm-up (the forward pass is the same in both)
    for name, fn, repeats in (("heldout", held, 2), ("evaluator", evaluator, 1)):
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn(model)
            times.append(time.perf_counter() - t0)
        out[f"{name}_s"] = min(times)
    return out


# ---- report --------------------------------------------------------------------------------------
def report(r: dict[str, Any], args: argparse.Namespace) -> str:
    t, m, e = r["trainer"], r["micro"], r["eval"]
    step = t["a_median_s"]
    sampler_us = BATCH * m["sample_us"] + m["read_median_us"]
    bound = (sampler_us + m["update_median_us"] / args.every) / (1e6 * step)
    reps = ", ".join(f"{x:+.2f}%" for x in t["overhead_per_repeat_pct"])
    load = ", ".join(f"{x:.2f}" for x in r["loadavg_before"]) + " before / " + \
        ", ".join(f"{x:.2f}" for x in r["loadavg_after"]) + " after"
    lines = [
        "## Deployment overhead in a Trainer run (goals: callback + sampler <= 1% of step time; decision <= 1 ms)",
        "",
        "```bash",
        f"{COMMAND}" + (f" --steps {args.steps} --repeats {args.repeats}" if (args.steps, args.repeats) != (30, 3)
                        else ""),
        "```",
        "",
        f"HF Trainer (transformers {r['versions']['transformers']}, torch {r['versions']['torch']}, "
        f"{r['threads']} torch threads, CPU) on a randomly initialised ~8M model ({r['parameters']:,} parameters, "
        f"seq_len {r['seq_len']}, batch {BATCH}), math-natural token windows. Policy: {r['policy']}, "
        f"updating every {args.every} steps; evaluation stubbed (fixed EvalResult). {args.repeats} interleaved "
        f"repeats x {args.steps} steps per side, first {args.warmup} steps of each run skipped "
        f"({t['steps_timed_per_side']} step times per side). Load average (1, 5, 15 min): {load}. "
        f"Benchmark wall time {r['wall_s']:.0f} s.",
        "",
        "| measure | A: plain IterableDataset | B: MixtureDataset + MixAgentCallback | overhead (B - A) / A |",
        "|---|---:|---:|---:|",
        f"| median step | {1e3 * t['a_median_s']:.1f} ms | {1e3 * t['b_median_s']:.1f} ms | "
        f"**{t['overhead_median_pct']:+.2f}%** |",
        f"| mean step (includes update steps) | {1e3 * t['a_mean_s']:.1f} ms | {1e3 * t['b_mean_s']:.1f} ms | "
        f"{t['overhead_mean_pct']:+.2f}% |",
        f"| per repeat (medians) | | | {reps} |",
        "",
        "| piece (microbenchmark, no training) | cost |",
        "|---|---:|",
        f"| MixtureDataset iteration | {m['sample_us']:.1f} µs/sample ({1e6 / m['sample_us']:,.0f} samples/s); "
        f"plain dataset {m['baseline_sample_us']:.2f} µs/sample |",
        f"| WeightSchedule read (`_Reader.cum_at`, per batch) | {m['read_median_us']:.2f} µs unchanged, "
        f"{m['read_refresh_median_us']:.1f} µs after a change ({m['schedule_rows']} rows) |",
        f"| `Mixer.update`, stub evaluation (scheduler.step + schedule.set) | median {m['update_median_us']:.0f} µs, "
        f"p99 {m['update_p99_us']:.0f} µs (schedule.set alone {m['set_median_us']:.1f} µs) |",
        f"| **bound** (batch sampler {sampler_us:.0f} µs + update / {args.every}) / step {1e3 * step:.0f} ms "
        f"| **{100 * bound:.3f}%** |",
        f"| **policy decision** `MixingScheduler.step` ({args.calls} calls) | "
        f"**median {m['decision_median_us']:.0f} µs, p99 {m['decision_p99_us']:.0f} µs** "
        f"({m['decision_fallbacks']} fallbacks) |",
        "",
        "Evaluation (the method's cost, not overhead), one call on the ~8M model with the math-natural eval spec:",
        "",
        "| evaluation | one call | amortised per step at every=" + f"{args.every} | share of a step |",
        "|---|---:|---:|---:|",
    ]
    for key, label in (("heldout", f"HeldOutLoss ({e['heldout_windows']} windows)"),
                       ("evaluator", f"Evaluator (bpb + benchmarks, {e['evaluator_tokens']:,} tokens)")):
        s = e[f"{key}_s"]
        lines.append(f"| {label} | {1e3 * s:.0f} ms | {1e3 * s / args.every:.1f} ms | "
                     f"{100 * s / args.every / step:.1f}% |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30, help="Trainer steps per run")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved A/B pairs")
    parser.add_argument("--warmup", type=int, default=5, help="steps skipped at the start of every run")
    parser.add_argument("--every", type=int, default=25, help="steps between mixture updates")
    parser.add_argument("--calls", type=int, default=1000, help="calls per microbenchmark")
    parser.add_argument("--samples", type=int, default=20000, help="samples drawn in the sampler microbenchmark")
    parser.add_argument("--out", default=str(REPO_ROOT / "runs/bench/deploy.json"))
    args = parser.parse_args()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    t_start = time.perf_counter()
    load_before = os.getloadavg()
    base = load_config(BaseModelConfig, CONFIGS_DIR / "base_model/default.yaml")
    tok = get_tokenizer(base.tokenizer)
    space = DomainSpace.from_yaml(CONFIGS_DIR / "spaces/math-natural.yaml")
    data = DomainData(space, tok, tokenizer_dir(base.tokenizer).name)
    mcfg = dataclasses.replace(MODEL_SIZES["8m"], seq_len=128, vocab_size=len(tok))
    path, label = policy_path(space)
    # baseline windows: the same real text, drawn once (natural shares), so A does no sampling work
    probe = MixtureDataset.from_token_streams(data.train, space, mcfg.seq_len, BATCH, seed=123)
    baseline = torch.stack([x["input_ids"] for x in itertools.islice(iter(probe), 256)])
    params = count_parameters(build_model(mcfg))
    print(f"policy: {label}; model {params:,} parameters", flush=True)
    res: dict[str, Any] = {"policy": label, "seq_len": mcfg.seq_len, "threads": torch.get_num_threads(),
                           "parameters": params,
                           "versions": {"torch": torch.__version__,
                                        "transformers": __import__("transformers").__version__}}
    print("microbenchmarks ...", flush=True)
    res["micro"] = micro(space, data, path, mcfg.seq_len, args, baseline)
    print("evaluation cost ...", flush=True)
    res["eval"] = evaluation_cost(mcfg, space, data, tok)
    print("Trainer runs (A: plain dataset, B: MixtureDataset + MixAgentCallback) ...", flush=True)
    res["trainer"] = trainer_runs(mcfg, space, data, path, args, baseline)
    res["loadavg_before"], res["loadavg_after"] = load_before, os.getloadavg()
    res["wall_s"] = time.perf_counter() - t_start
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2))
    print()
    print(report(res, args))


if __name__ == "__main__":
    main()
