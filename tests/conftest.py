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


@pytest.fixture(scope="session")
def tiny_spec_path():
    return ENVS_DIR / "tiny.yaml"


@pytest.fixture(scope="session")
def tiny_env():
    """One shared tiny env (the real LM backend); tests reset it with their own seeds."""
    env = gymnasium.make("mixagent.envs:mixagent/tiny-v0", disable_env_checker=True)
    yield env.unwrapped
    env.close()
