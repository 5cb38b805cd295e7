"""The deployment examples run end to end at tiny scale: a resumed plain loop equals an uninterrupted one,
and two-process DDP runs (gloo, CPU) of both examples (the plain loop; the YAML deploy job through
``examples/hf_trainer_cpt.py``) keep bit-identical mixtures on every rank while training on different
samples."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from mixagent.paths import REPO_ROOT

TINY = ["--base", "configs/base_model/tiny.yaml", "--space", "configs/spaces/tiny.yaml", "--env", "envs/tiny.yaml",
        "--batch", "4"]
# the same tiny run as overrides of configs/deploy/cpt.yaml (the deploy job's config)
TINY_JOB = ["model.path=configs/base_model/tiny.yaml", "data.corpora=configs/spaces/tiny.yaml",
            "eval.env=envs/tiny.yaml", "trainer.per_device_train_batch_size=4"]


def run(script: str, *args: str, procs: int = 1) -> str:
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"]
                if procs > 1 else [sys.executable])
    tiny = TINY_JOB if script == "hf_trainer_cpt.py" else TINY
    out = subprocess.run([*launcher, str(REPO_ROOT / "examples" / script), *tiny, *args], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    return out.stdout


def test_torch_loop_resume_equals_uninterrupted(tmp_path):
    common = ["--steps", "12", "--every", "4", "--policy", "replay:0.5", "--max-change", "0.3"]
    stdout = run("torch_loop.py", *common, "--out", str(tmp_path / "a"), "--report", str(tmp_path / "full.json"))
    assert "replay:0.5: 12 steps" in stdout and "balanced" in stdout
    run("torch_loop.py", *common, "--out", str(tmp_path / "b"), "--save-every", "6", "--stop-after", "6")
    run("torch_loop.py", *common, "--out", str(tmp_path / "b"), "--resume", "--report", str(tmp_path / "res.json"))
    full, resumed = (json.loads((tmp_path / f).read_text()) for f in ("full.json", "res.json"))
    assert len(full["weights"]) == 3  # start, steps 4 and 8
    for key in ("weights", "schedule", "final", "start"):
        assert resumed[key] == full[key], key


def test_torch_loop_ddp_two_processes(tmp_path):
    report = tmp_path / "ddp.json"
    run("torch_loop.py", "--steps", "8", "--every", "4", "--initial", "estimate", "--report", str(report),
        "--out", str(tmp_path / "o"), procs=2)
    r0, r1 = (json.loads(Path(tmp_path / f"ddp.rank{r}.json").read_text()) for r in (0, 1))
    assert r0["weights"] == r1["weights"] and r0["schedule"] == r1["schedule"]  # bit-identical mixtures
    assert r0["final"] == r1["final"]  # DDP kept the replicas identical
    # the two ranks' samples are the two halves of one global stream: a single process reading batches of 8
    # under the same (constant replay) mixtures trains on exactly their union, in order
    run("torch_loop.py", "--steps", "8", "--every", "4", "--initial", "estimate",
        "--report", str(tmp_path / "one.json"), "--out", str(tmp_path / "one"), "--batch", "8")
    one = json.loads((tmp_path / "one.json").read_text())
    assert one["schedule"] == r0["schedule"]
    assert [a + b for a, b in zip(r0["rows"], r1["rows"])] == one["rows"]
    assert not set(sum(r0["rows"], [])) & set(sum(r1["rows"], []))  # no sample drawn by both ranks


def test_hf_trainer_example_ddp_two_processes(tmp_path):
    report = tmp_path / "hf.json"
    stdout = run("hf_trainer_cpt.py", "trainer.max_steps=8", "trainer.warmup_steps=1", "policy.every=4",
                 f"report={report}", f"trainer.output_dir={tmp_path / 'o'}", procs=2)
    assert "source" in stdout and "target" in stdout and "progress 0.50:" in stdout
    r0, r1 = (json.loads(Path(tmp_path / f"hf.rank{r}.json").read_text()) for r in (0, 1))
    w0, w1 = ([h["weights"] for h in r["history"]] for r in (r0, r1))
    assert len(w0) == 2 and w0 == w1 and r0["schedule"] == r1["schedule"]  # bit-identical mixtures
    assert len(r0["batches_sha256"]) >= 8 and not set(r0["batches_sha256"]) & set(r1["batches_sha256"])
    assert r0["final"] == r1["final"]  # DDP kept the replicas identical
    assert json.loads(report.read_text())["final"] == r0["final"]
    assert json.loads((tmp_path / "o" / "report.json").read_text())["history"] == r0["history"]
