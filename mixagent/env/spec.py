"""Environment specs: ``envs/<name>.yaml`` -> :class:`EnvSpec` (one MDP variant per file)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from mixagent.config import config_hash, load_config, to_dict
from mixagent.env.base_model import BaseModelConfig
from mixagent.env.evaluation import EvalSpec
from mixagent.env.proxy import OptimConfig
from mixagent.env.rewards import REWARDS, anchor_problems, needs_reference
from mixagent.errors import suggest
from mixagent.paths import REPO_ROOT

__all__ = ["ActionSpec", "RewardSpec", "EnvSpec", "load_spec"]


@dataclasses.dataclass(frozen=True)
class ActionSpec:
    """Action -> weights mapping (``mixagent.domains.action_to_weights``).

    Args:
        temperature: softmax temperature; lower = sharper mixtures reachable from [-1, 1].
        floor: minimum weight of every domain.
    """

    temperature: float = 0.25
    floor: float = 0.0

    def check(self) -> list[str]:
        return [] if self.temperature > 0 and self.floor >= 0 else ["temperature must be > 0 and floor >= 0"]


@dataclasses.dataclass(frozen=True)
class RewardSpec:
    """Args:
        name: a registered reward (``mixagent.env.rewards.REWARDS``).
        lam: weight of the target field in the balanced score (1 - lam for the source field).
        anchors: static mixtures (baseline specs: ``uniform``, ``natural``, ``replay:<rho>``) run beside the
            source-only and target-only reference runs; a normalised reward's extremes per field are then the
            best and worst of all of them (:func:`mixagent.env.references.get_reference`). With scarce
            unique target data target-only overfits and is not the target field's best run, so without
            anchors the scale stretches (normalised scores of 2-3); anchors keep one scale across settings.
    """

    name: str = "balanced"
    lam: float = 0.5
    anchors: tuple[str, ...] = ()

    ADDED_FIELDS = ("anchors",)

    def __post_init__(self) -> None:  # one spelling and order per set of anchors: one spec hash, one cache
        canonical = []
        for a in self.anchors:
            name, _, rho = str(a).partition(":")
            try:
                canonical.append(f"replay:{float(rho):g}" if name == "replay" else str(a))
            except ValueError:
                canonical.append(str(a))  # check() names the problem
        object.__setattr__(self, "anchors", tuple(sorted(canonical)))

    def check(self) -> list[str]:
        problems = [] if 0 <= self.lam <= 1 else [f"lam must be in [0, 1], got {self.lam}"]
        if self.name not in REWARDS:
            problems.append(f"unknown reward {self.name!r}{suggest(self.name, REWARDS)}; known: {', '.join(REWARDS)}")
        elif self.anchors and not needs_reference(self.name):
            problems.append(f"reward.anchors scale a normalised reward, and {self.name!r} is not one: drop anchors or "
                            f"use normalised_bpb")
        for a in self.anchors:
            problems += [f"reward.anchors: {p}" for p in anchor_problems(a)]
        if len(set(self.anchors)) != len(self.anchors):
            problems.append(f"reward.anchors repeats a mixture: {list(self.anchors)}")
        return problems


@dataclasses.dataclass(frozen=True)
class EnvSpec:
    """One MDP variant.

    Args:
        name: spec name; the env id is ``mixagent/<name>-v<version>``.
        space: domain-space YAML, relative to the repository root.
        base_model: base-model config YAML (the episode's starting checkpoint), relative to the repo root.
        eval: evaluation budget and benchmarks.
        steps: re-weighting steps T per episode.
        segment_tokens: training tokens per step.
        initial_mixture: mixture before the first action: ``natural`` (token shares) or ``uniform``.
        backend: ``lm`` (the real proxy LM) or ``analytic`` (a closed-form stand-in for control-flow tests).
        action: action mapping.
        reward: reward function.
        optim: continual pre-training optimizer (the schedule spans the whole episode).
        version: MDP version (bump when the MDP changes).
        target_tokens: cap on unique target-field training tokens per episode (0 = no cap): target-heavy
            mixtures then repeat data (``DomainData.capped_train``; the same subset every episode).
        observe_lr: append the coming segment's learning rate over the peak to the observation.
        reference_seeds: seeds of the reference runs (source-only and target-only at the episode's budget)
            that normalised rewards scale by; never used for evaluation.
        observation: the observation layout (:mod:`mixagent.env.observation`): 1, or 2 (one policy across
            settings: the spec's stated setting observed; needs ``observe_lr``). It changes no run.
    """

    name: str
    space: str
    base_model: str
    eval: EvalSpec
    steps: int = 8
    segment_tokens: int = 131072
    initial_mixture: str = "natural"
    backend: str = "lm"
    action: ActionSpec = dataclasses.field(default_factory=ActionSpec)
    reward: RewardSpec = dataclasses.field(default_factory=RewardSpec)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    version: int = 0
    target_tokens: int = 0
    observe_lr: bool = False
    reference_seeds: tuple[int, ...] = (9001,)
    observation: int = 1

    ADDED_FIELDS = ("target_tokens", "observe_lr", "reference_seeds", "observation")

    def check(self) -> list[str]:
        problems = []
        if self.reward.name in ("judge", "judge_bpb") and (self.eval.judge is None or self.backend != "lm"):
            problems.append(f"reward {self.reward.name!r} reads the judge's scores: set eval.judge (a judge block) "
                            f"with backend lm (the analytic backend has no model to judge), or use another reward")
        if self.eval.judge is not None and self.eval.judge.every != 1:
            problems.append(f"eval.judge.every must be 1 in an environment, got {self.eval.judge.every}: episodes "
                            f"fork, so a step the judge skipped would have no score of its own (every applies to "
                            f"the deploy job's runs)")
        if self.observation not in (1, 2):
            problems.append(f"observation must be 1 or 2 (the layout version), got {self.observation!r}")
        elif self.observation == 2 and not self.observe_lr:
            problems.append("observation 2 observes the learning rate: set observe_lr: true with it")
        if self.target_tokens < 0:
            problems.append(f"target_tokens must be >= 0 (0 = no cap), got {self.target_tokens}")
        if not self.reference_seeds:
            problems.append("reference_seeds must list at least one seed")
        if self.steps < 1:
            problems.append(f"steps must be >= 1, got {self.steps}")
        if self.segment_tokens < 1:
            problems.append(f"segment_tokens must be >= 1, got {self.segment_tokens}")
        if self.initial_mixture not in ("natural", "uniform"):
            problems.append(f"initial_mixture must be 'natural' or 'uniform', got {self.initial_mixture!r}")
        if self.backend not in ("lm", "analytic"):
            problems.append(f"backend must be 'lm' or 'analytic', got {self.backend!r}")
        for name in ("space", "base_model"):
            if not (REPO_ROOT / getattr(self, name)).is_file():
                problems.append(f"{name}: file {getattr(self, name)!r} not found under {REPO_ROOT}")
        return problems

    @property
    def env_id(self) -> str:
        return f"mixagent/{self.name}-v{self.version}"

    def base_config(self) -> BaseModelConfig:
        return load_config(BaseModelConfig, REPO_ROOT / self.base_model)

    def space_path(self) -> Path:
        return REPO_ROOT / self.space

    def mdp_dict(self) -> dict:
        """The spec as plain JSON without ``optim.threads``, which changes speed and, on some CPUs, the
        rounding of float32 sums around the 8th significant digit, nothing more (tested); bit-for-bit replay
        needs the same thread count."""
        spec = to_dict(self)
        spec["optim"].pop("threads")
        for bench in ("source", "target"):  # the default split stays out, so specs from before it keep their hash
            if spec["eval"][bench]["split"] == "val":
                spec["eval"][bench].pop("split")
        return spec

    def spec_hash(self) -> str:
        """Identifies the MDP: the spec (:meth:`mdp_dict`), its base-model config and its domain space file, and
        with a judge in ``eval``, the judge's weights (by content). The ``observation`` layout is left out: it is
        a view of the same runs, rebuilt from their raw evaluations (like ``optim.threads``, it changes no run),
        so both layouts share reference runs, audits and comparison caches."""
        mdp = {k: v for k, v in self.mdp_dict().items() if k != "observation"}
        parts = [mdp, to_dict(self.base_config()), self.space_path().read_text()]
        if self.eval.judge is not None:
            from mixagent.env.judge import judge_model_digest

            parts.append({"judge_weights": judge_model_digest(self.eval.judge.model)})
        return config_hash(*parts)


def load_spec(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> EnvSpec:
    """Load and validate an env spec (all problems reported at once)."""
    return load_config(EnvSpec, path, overrides)
