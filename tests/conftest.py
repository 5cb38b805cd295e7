"""Shared fixtures. Tests run on the real corpora (``make test`` builds them first; built here if missing)
and the tiny spec: a ~0.6M-parameter proxy pre-trained for a few seconds."""

from __future__ import annotations

import gymnasium
import pytest

import mixagent  # noqa: F401  (registers the envs)
from mixagent.config import load_config
from mixagent.data.build import DataConfig, build, corpora_dir
from mixagent.paths import CONFIGS_DIR, ENVS_DIR


@pytest.fixture(scope="session", autouse=True)
def corpora():
    """The real corpora, built once (a no-op when `make data` already built them)."""
    if not (corpora_dir() / "BUILD.json").exists():
        build(load_config(DataConfig, CONFIGS_DIR / "data/default.yaml"))
    return corpora_dir()


@pytest.fixture(scope="session", autouse=True)
def judge_cache(tmp_path_factory):
    """Judge validity checks and scores cache into a temporary directory, not the data root's (every tiny judge
    has new random weights: each test run would add entries there). Subprocesses inherit it."""
    import os

    old = os.environ.get("MIXAGENT_JUDGE_CACHE")
    os.environ["MIXAGENT_JUDGE_CACHE"] = str(tmp_path_factory.mktemp("judge-cache"))
    yield os.environ["MIXAGENT_JUDGE_CACHE"]
    if old is None:
        del os.environ["MIXAGENT_JUDGE_CACHE"]
    else:
        os.environ["MIXAGENT_JUDGE_CACHE"] = old


@pytest.fixture
def tiny_judge(tmp_path):
    """A judge directory built from config: the deploy fixture's tiny Llama (random weights) and its tokenizer,
    saved as a local Hugging Face causal LM (a fresh copy per test: some tests edit its files)."""
    import shutil

    from transformers import AutoConfig, AutoModelForCausalLM

    fix = CONFIGS_DIR.parent / "tests/fixtures/deploy"
    folder = tmp_path / "judge"
    config = AutoConfig.from_pretrained(fix / "tiny-llama")
    config.max_position_embeddings = 512  # a judge reads a prefix and two candidates (the model under training, 128)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    for f in (fix / "tokenizer").iterdir():
        shutil.copy(f, folder / f.name)
    return folder


@pytest.fixture(scope="session")
def tiny_spec_path():
    return ENVS_DIR / "tiny.yaml"


@pytest.fixture(scope="session")
def tiny_env():
    """One shared tiny env (the real LM backend); tests reset it with their own seeds."""
    env = gymnasium.make("mixagent.envs:mixagent/tiny-v0", disable_env_checker=True)
    yield env.unwrapped
    env.close()
