"""One command line: ``mixagent <job>`` (the console script), ``python -m mixagent <job>`` and the older module
entry points reach the same jobs; ``--help`` lists every job."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mixagent.cli import JOBS, main

EXPECTED = {"data", "base-model", "collect", "train-agent", "world-model", "audit", "compare", "generalize",
            "deploy", "demo"}


def test_help_lists_every_job(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert EXPECTED <= set(JOBS)
    for job in JOBS:
        assert f"\n  {job} " in out


def test_an_unknown_job_is_refused_with_a_suggestion(capsys):
    assert main(["train_agent"]) == 2
    assert "did you mean 'train-agent'?" in capsys.readouterr().err
    assert main([]) == 2


@pytest.mark.parametrize("job", sorted(JOBS))
def test_every_job_resolves_to_a_callable(job):
    import importlib

    module, function = JOBS[job].target.split(":")
    assert callable(getattr(importlib.import_module(module), function))


def test_a_job_forwards_its_arguments(monkeypatch):
    seen = {}
    import mixagent.study.__main__ as study_cli

    monkeypatch.setattr(study_cli, "main", lambda argv: seen.setdefault("argv", argv) and 0)
    assert main(["audit", "--env", "envs/math-cpt.yaml", "--report-only"]) == 0
    assert seen["argv"] == ["audit", "--env", "envs/math-cpt.yaml", "--report-only"]


def test_console_script_module_form_and_old_entry_points_agree():
    exe = Path(sys.executable).parent / "mixagent"  # the console script pip installed beside this python
    assert exe.is_file(), f"{exe} is missing: install the package (pip install -e .) to get the console script"
    via_script = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True).stdout
    via_module = subprocess.run([sys.executable, "-m", "mixagent", "--help"], capture_output=True, text=True,
                                check=True).stdout
    assert via_script == via_module and "train-agent" in via_module
    old = subprocess.run([sys.executable, "-m", "mixagent.train_agent", "--help"], capture_output=True, text=True,
                         check=True).stdout
    new = subprocess.run([sys.executable, "-m", "mixagent", "train-agent", "--help"], capture_output=True, text=True,
                         check=True).stdout
    assert old[old.index("\n\n"):] == new[new.index("\n\n"):]  # the same parser; only its program name differs
    audit = subprocess.run([sys.executable, "-m", "mixagent.study", "headroom", "--help"], capture_output=True,
                           text=True, check=True).stdout
    assert "--report-only" in audit  # the audit's old subcommand name is kept
