"""d3rlpy algorithms for the two stages, and the bridge from a trained d3rlpy actor to the artifact.

This is the only module besides :mod:`mixagent.agent.train` that imports d3rlpy, lazily.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
from typing import Any

import numpy as np
import torch

from mixagent.agent.config import RLConfig, SFTConfig
from mixagent.errors import ConfigError, suggest

__all__ = ["import_d3rlpy", "make_sft", "make_rl", "make_fqe", "actor_tensors", "init_actor_from", "OBS_EPS"]

OBS_EPS = 1e-3  # d3rlpy's StandardObservationScaler divides by (std + eps); the artifact stores std + eps
_RL_CONFIGS = {"cql": "CQLConfig", "iql": "IQLConfig", "td3_plus_bc": "TD3PlusBCConfig", "sac": "SACConfig",
               "td3": "TD3Config"}
_SET_BY_MIXAGENT = ("batch_size", "gamma", "observation_scaler", "action_scaler", "reward_scaler",
                    "actor_encoder_factory", "critic_encoder_factory", "value_encoder_factory")


def import_d3rlpy() -> Any:
    """Import d3rlpy quietly: its old ``gym`` dependency prints a deprecation notice on import, and its
    structlog output is cut to warnings (mixagent logs what matters itself)."""
    try:
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            import d3rlpy
    except ImportError:
        raise ConfigError("agent", ["training the agent needs d3rlpy: pip install 'd3rlpy==2.8.1' (after "
                                    "torch==2.13.0), or pip install -e '.'"]) from None
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    return d3rlpy


def _scaler(mean: np.ndarray, std: np.ndarray) -> Any:
    d3rlpy = import_d3rlpy()
    return d3rlpy.preprocessing.StandardObservationScaler(mean=mean, std=std, eps=OBS_EPS)


def _encoder(hidden: list[int]) -> Any:
    return import_d3rlpy().models.VectorEncoderFactory(hidden_units=list(hidden), activation="relu")


def make_sft(cfg: SFTConfig, mean: np.ndarray, std: np.ndarray, device: str) -> Any:
    """d3rlpy BC with a deterministic policy (``tanh(mlp(obs))``, trained by MSE to the data's actions)."""
    d3rlpy = import_d3rlpy()
    return d3rlpy.algos.BCConfig(batch_size=cfg.batch_size, learning_rate=cfg.learning_rate,
                                 policy_type="deterministic", encoder_factory=_encoder(cfg.hidden),
                                 observation_scaler=_scaler(mean, std)).create(device=device)


def rl_params_problems(algo: str, params: dict[str, Any]) -> list[str]:
    """Keys of ``rl.params`` that the chosen d3rlpy config does not have (or that mixagent sets itself)."""
    if algo not in _RL_CONFIGS:
        return []
    cls = getattr(import_d3rlpy().algos, _RL_CONFIGS[algo])
    known = [f.name for f in dataclasses.fields(cls) if f.name not in _SET_BY_MIXAGENT]
    problems = []
    for key in params:
        if key in _SET_BY_MIXAGENT:
            problems.append(f"rl.params.{key} is set by mixagent; use rl.batch_size, rl.gamma, rl.reward_scale or "
                            f"rl.hidden instead")
        elif key not in known:
            problems.append(f"rl.params.{key}: d3rlpy's {cls.__name__} has no such field{suggest(key, known)}; "
                            f"known: {', '.join(known)}")
    return problems


def make_rl(cfg: RLConfig, mean: np.ndarray, std: np.ndarray, device: str) -> Any:
    """The stage-2 algorithm (CQL, IQL or TD3+BC offline; SAC or TD3 online) with small MLPs and scaled rewards.

    Raises:
        ConfigError: a key of ``rl.params`` d3rlpy does not know, or a value it rejects.
    """
    problems = rl_params_problems(cfg.algo, cfg.params)
    if problems:
        raise ConfigError("rl.params", problems)
    d3rlpy = import_d3rlpy()
    cls = getattr(d3rlpy.algos, _RL_CONFIGS[cfg.algo])
    kwargs: dict[str, Any] = {"batch_size": cfg.batch_size, "gamma": cfg.gamma,
                              "observation_scaler": _scaler(mean, std),
                              "reward_scaler": d3rlpy.preprocessing.MultiplyRewardScaler(cfg.reward_scale),
                              "actor_encoder_factory": _encoder(cfg.hidden),
                              "critic_encoder_factory": _encoder(cfg.hidden)}
    if cfg.algo == "iql":
        kwargs["value_encoder_factory"] = _encoder(cfg.hidden)
    try:
        return cls(**kwargs, **cfg.params).create(device=device)
    except (TypeError, ValueError) as exc:
        raise ConfigError("rl.params", [f"d3rlpy's {cls.__name__} rejected {cfg.params}: {exc}"]) from None


def make_fqe(algo: Any, hidden: list[int], lr: float, batch_size: int, gamma: float, reward_scale: float,
             device: str) -> Any:
    """d3rlpy FQE of ``algo``'s greedy policy (same observation scaler, scaled rewards)."""
    d3rlpy = import_d3rlpy()
    cfg = d3rlpy.ope.FQEConfig(learning_rate=lr, batch_size=batch_size, gamma=gamma, encoder_factory=_encoder(hidden),
                               observation_scaler=algo.observation_scaler,
                               reward_scaler=d3rlpy.preprocessing.MultiplyRewardScaler(reward_scale))
    return d3rlpy.ope.FQE(algo=algo, config=cfg, device=device)


def _policy_module(algo: Any) -> torch.nn.Module:
    modules = algo.impl.modules
    return modules.imitator if hasattr(modules, "imitator") else modules.policy


def actor_tensors(algo: Any) -> dict[str, torch.Tensor]:
    """The greedy actor of a trained BC / CQL / IQL / TD3+BC as artifact tensors (``layers.{i}.*``,
    ``head.*``, ``obs_mean``, ``obs_std``). Every one acts as ``tanh(head(mlp(standardised obs)))``."""
    policy = _policy_module(algo)
    linears = [m for m in policy._encoder._layers if isinstance(m, torch.nn.Linear)]
    others = [m for m in policy._encoder._layers if not isinstance(m, (torch.nn.Linear, torch.nn.ReLU))]
    if others:
        raise ValueError(f"the actor's encoder has layers the artifact cannot express: {others}")
    head = policy._fc if hasattr(policy, "_fc") else policy._mu
    out = {}
    for i, lin in enumerate(linears):
        out[f"layers.{i}.weight"], out[f"layers.{i}.bias"] = lin.weight, lin.bias
    out["head.weight"], out["head.bias"] = head.weight, head.bias
    scaler = algo.observation_scaler
    out["obs_mean"] = torch.as_tensor(np.asarray(scaler.mean, np.float32))
    out["obs_std"] = torch.as_tensor(np.asarray(scaler.std, np.float32) + scaler.eps)
    return {k: v.detach().cpu().clone() for k, v in out.items()}


def init_actor_from(rl: Any, sft: Any) -> None:
    """Copy the SFT policy into the RL actor (and its target copy, when the algorithm keeps one), so the
    RL stage starts from the cloned behaviour: same encoder, BC's output layer as the actor's mean."""
    src = _policy_module(sft)
    state = {k.replace("_fc.", "_mu." if hasattr(_policy_module(rl), "_mu") else "_fc."): v
             for k, v in src.state_dict().items()}
    modules = rl.impl.modules
    for name in ("policy", "targ_policy"):
        if hasattr(modules, name):
            missing, unexpected = getattr(modules, name).load_state_dict(state, strict=False)
            if unexpected or [m for m in missing if "logstd" not in m]:
                raise ValueError(f"the SFT policy does not fit the RL actor (missing {missing}, unexpected "
                                 f"{unexpected}); use the same hidden sizes")
