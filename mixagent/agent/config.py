"""The agent job's config (``configs/agent/*.yaml``), validated all at once like every mixagent config."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from mixagent.env.rewards import REWARDS
from mixagent.errors import suggest
from mixagent.paths import REPO_ROOT
from mixagent.policies.baselines import BASELINE_SPECS

__all__ = ["ModelBasedConfig", "MODEL_KINDS", "ONLINE_ALGOS",
           "AgentConfig", "SFTConfig", "RLConfig", "FQEConfig", "OnlineEvalConfig", "WandbConfig", "RL_ALGOS",
           "BASELINES"]

MODEL_KINDS = ("", "synthetic", "surrogate")
ONLINE_ALGOS = ("sac", "td3")


@dataclasses.dataclass(frozen=True)
class ModelBasedConfig:
    """How stage 2 uses a world model.

    Args:
        kind: ``""`` (real transitions only: the paper's recipe), ``synthetic`` (real + branched synthetic
            transitions, offline algorithm) or ``surrogate`` (online ``sac``/``td3`` in the surrogate env).
        world_model: the world-model artifact directory (fitted on the same env spec as the runs).
        penalty: MOPO's coefficient: each synthetic reward is ``r - penalty * u``, ``u`` the ensemble's
            disagreement in standardised units (:class:`mixagent.model_based.surrogate.UncertaintyPenalty`).
        branches: synthetic rollouts, each from a real state drawn uniformly from the dataset.
        horizon: steps per synthetic rollout (MBPO's short branches; it stops earlier at the episode's end).
        noise: standard deviation of the Gaussian noise on the SFT policy's pre-softmax action in [-1, 1]
            while branching (exploration around the cloned behaviour).
        online_steps: env steps of online training in the surrogate (``surrogate``).
        buffer: replay buffer size of online training.
    """

    kind: str = ""
    world_model: str = "checkpoints/world_models/math-cpt-v1"
    penalty: float = 0.05
    branches: int = 2000
    horizon: int = 3
    noise: float = 0.3
    online_steps: int = 20000
    buffer: int = 100000

    def check(self) -> list[str]:
        problems = []
        if self.kind not in MODEL_KINDS:
            problems.append(f"kind must be '' (real data only), 'synthetic' or 'surrogate', got {self.kind!r}")
        if not self.penalty >= 0:
            problems.append(f"penalty must be >= 0, got {self.penalty}")
        if min(self.branches, self.horizon, self.online_steps, self.buffer) < 1:
            problems.append("branches, horizon, online_steps and buffer must be >= 1")
        if not self.noise >= 0:
            problems.append(f"noise must be >= 0, got {self.noise}")
        if self.kind and not (REPO_ROOT / self.world_model / "meta.json").is_file():
            problems.append(f"world_model {self.world_model!r} is not a world-model artifact (no meta.json); give "
                            f"one such as checkpoints/world_models/math-cpt-v1, or fit one with make world-model")
        return problems


RL_ALGOS = ("cql", "iql", "td3_plus_bc", *ONLINE_ALGOS)  # sac and td3 train online in the surrogate (model.kind)
BASELINES = BASELINE_SPECS  # baselines of the online comparison (``replay:<rho>`` takes any rho in [0, 1])


def _eval_baseline_problems(spec: str) -> list[str]:
    from mixagent.policies.registry import NEEDS_REFERENCE, is_method, method_problems

    if is_method(spec):
        if spec.partition(":")[0] in (*NEEDS_REFERENCE, "regmix"):
            return [f"{spec!r} needs preparation runs (a reference run or proxy runs): compare the agent with it "
                    f"through `mixagent compare --policies {spec},runs/agent/<name>/rl`"]
    return method_problems(spec)


def _hidden_problems(hidden: list[int]) -> list[str]:
    return [] if hidden and all(h > 0 for h in hidden) else [f"hidden must list positive layer widths, got {hidden}"]


@dataclasses.dataclass(frozen=True)
class SFTConfig:
    """Stage 1, "SFT": behaviour cloning (d3rlpy BC, deterministic policy) of the best trajectories.

    Args:
        top_fraction: share of complete trajectories, best by return under the agent's reward, to clone.
        steps: gradient steps.
        batch_size: transitions per step.
        learning_rate: Adam learning rate.
        hidden: hidden layer widths of the policy MLP (also the RL actor's when it starts from SFT).
    """

    top_fraction: float = 0.25
    steps: int = 2000
    batch_size: int = 64
    learning_rate: float = 1e-3
    hidden: list[int] = dataclasses.field(default_factory=lambda: [64, 64])

    def check(self) -> list[str]:
        problems = _hidden_problems(self.hidden)
        if not 0 < self.top_fraction <= 1:
            problems.append(f"top_fraction must be in (0, 1], got {self.top_fraction}")
        if self.steps < 1 or self.batch_size < 1:
            problems.append("steps and batch_size must be >= 1")
        return problems


@dataclasses.dataclass(frozen=True)
class RLConfig:
    """Stage 2, "RL": offline RL on every transition.

    Args:
        algo: ``cql`` (conservative Q-learning, the method's choice), ``iql`` or ``td3_plus_bc`` (offline);
            ``sac`` or ``td3`` (online in the surrogate env: ``model.kind: surrogate``).
        init_from_sft: start the actor from the SFT policy (needs the same ``hidden`` as ``sft``).
        steps: gradient steps.
        batch_size: transitions per step.
        hidden: hidden widths of the actor and critic MLPs.
        gamma: discount (episodes are ``T`` steps long; the return telescopes to ``B_T - B_0``).
        reward_scale: rewards are multiplied by this for training (step rewards are ~0.01-0.05).
        params: any other field of the d3rlpy config (``CQLConfig``, ``IQLConfig``, ``TD3PlusBCConfig``),
            e.g. ``{conservative_weight: 5.0, actor_learning_rate: 1e-4}``; unknown keys are refused.
    """

    algo: str = "cql"
    init_from_sft: bool = True
    steps: int = 5000
    batch_size: int = 64
    hidden: list[int] = dataclasses.field(default_factory=lambda: [64, 64])
    gamma: float = 0.99
    reward_scale: float = 10.0
    params: dict[str, Any] = dataclasses.field(default_factory=dict)

    def check(self) -> list[str]:
        problems = _hidden_problems(self.hidden)
        if self.algo not in RL_ALGOS:
            problems.append(f"algo {self.algo!r} unknown{suggest(self.algo, RL_ALGOS)}; use one of "
                            f"{', '.join(RL_ALGOS)}")
        if self.steps < 1 or self.batch_size < 1:
            problems.append("steps and batch_size must be >= 1")
        if not 0 < self.gamma <= 1:
            problems.append(f"gamma must be in (0, 1], got {self.gamma}")
        if self.reward_scale <= 0:
            problems.append(f"reward_scale must be > 0, got {self.reward_scale}")
        return problems


@dataclasses.dataclass(frozen=True)
class FQEConfig:
    """Offline evaluation: fitted Q evaluation (d3rlpy FQE) of each learned policy on all transitions.

    Args:
        steps: FQE gradient steps per policy (0 skips FQE; TD error and action difference are still logged).
        batch_size: transitions per step.
        learning_rate: Adam learning rate.
        hidden: hidden widths of the FQE critic.
    """

    steps: int = 2000
    batch_size: int = 64
    learning_rate: float = 1e-3
    hidden: list[int] = dataclasses.field(default_factory=lambda: [64, 64])

    def check(self) -> list[str]:
        return _hidden_problems(self.hidden) + (["steps must be >= 0"] if self.steps < 0 else [])


@dataclasses.dataclass(frozen=True)
class OnlineEvalConfig:
    """Online evaluation: the learned policies and the baselines rolled out in the real env.

    Args:
        seeds: episode seeds; must not be among the collection's episode seeds (checked).
        agents: which learned policies to roll out: ``sft``, ``rl`` or both.
        env_overrides: ``key=value`` overrides of the runs' recorded env spec for evaluation only, e.g.
            ``[eval.source.split=test, eval.target.split=test]`` scores every policy on held-out
            benchmark items that collection never saw.
        baselines: ``uniform``, ``natural``, ``target_only`` and ``replay:<rho>`` entries, and the registered
            methods that need nothing but the natural shares (``decay_switch``, ``end_upsample``, ``odm``,
            ``ado``, ``aioli``); DoReMi, Velocitune and RegMix need preparation runs: compare against them
            with ``mixagent compare``.
        workers: evaluation worker processes (0 = one per core, at most one per episode).
        launcher: ``local`` (worker processes) or ``inline`` (this process).
        cache: root of the episode cache (``mixagent.rollout.cache``: one file per episode, keyed by the env's
            spec hash and the policy's identity), relative to the repository root. ``runs/compare`` is also
            where ``mixagent compare`` writes by default, so the two share episodes there (the
            shipped comparison configs write to the committed ``audits/compare`` instead, and read only
            that). Empty keeps the episodes in the run directory and turns ``reuse`` off.
        reuse: comparison roots whose cached episodes are reused read only (the committed ``audits/compare``:
            the baselines' episodes on the audit's seeds are not rerun).
    """

    seeds: list[int] = dataclasses.field(default_factory=lambda: [1000, 1001, 1002])
    agents: list[str] = dataclasses.field(default_factory=lambda: ["sft", "rl"])
    env_overrides: list[str] = dataclasses.field(default_factory=list)
    baselines: list[str] = dataclasses.field(default_factory=lambda: [
        "uniform", "natural", "target_only", "replay:0.25", "replay:0.5", "replay:0.75"])
    workers: int = 0
    launcher: str = "local"
    cache: str = "runs/compare"
    reuse: list[str] = dataclasses.field(default_factory=lambda: ["audits/compare"])

    def check(self) -> list[str]:
        problems = [] if self.seeds else ["seeds must list at least one seed"]
        problems += [f"agents: {a!r} is not a stage; use sft and/or rl" for a in self.agents if a not in ("sft", "rl")]
        if len(set(self.seeds)) != len(self.seeds):
            problems.append(f"seeds has duplicates: {self.seeds}")
        if self.launcher not in ("local", "inline"):
            problems.append(f"launcher must be 'local' or 'inline', got {self.launcher!r}")
        if self.workers < 0:
            problems.append("workers must be >= 0 (0 = one per core)")
        problems += [f"baselines: {p}" for b in self.baselines for p in _eval_baseline_problems(b)]
        return problems


@dataclasses.dataclass(frozen=True)
class WandbConfig:
    """Weights & Biases logging.

    Args:
        mode: ``disabled`` (default), ``offline`` (files under the run directory, sync later) or ``online``.
        project: wandb project.
    """

    mode: str = "disabled"
    project: str = "mixagent"

    def check(self) -> list[str]:
        return [] if self.mode in ("disabled", "offline", "online") else [
            f"mode must be disabled, offline or online, got {self.mode!r}"]


@dataclasses.dataclass(frozen=True)
class AgentConfig:
    """An agent training job: ``mixagent train-agent --config configs/agent/<name>.yaml``.

    Args:
        name: run name: the directory ``<out_dir>/<name>``.
        runs: trajectory run directories (relative to the repository root), all of one env spec and space.
        reward: registered reward the rewards are recomputed with (``mixagent.env.rewards``); empty = the
            env spec's reward.
        lam: target-field weight of the balanced score; negative = the env spec's.
        dedupe_prefixes: enter each branched prefix step once (else once per trajectory that copies it).
        seed: seeds d3rlpy (sampling, initialisation).
        device: torch device for training, e.g. ``cpu`` or ``cuda:0``; the artifact always loads on CPU.
        sft: stage 1 (behaviour cloning).
        rl: stage 2 (offline RL).
        fqe: offline evaluation.
        eval: online evaluation.
        log_every: gradient steps between metric lines (stdout, ``log.jsonl``, wandb).
        checkpoint_every: gradient steps between checkpoints (training resumes from the last one).
        out_dir: directory of agent runs, relative to the repository root (or absolute).
        wandb: wandb logging.
        model: the world model in stage 2 (:class:`ModelBasedConfig`, served by :mod:`mixagent.model_based`): none (real
            transitions only), synthetic transitions for the offline algorithm, or online RL in the surrogate.
    """

    name: str
    runs: list[str] = dataclasses.field(default_factory=lambda: ["trajectories/default"])
    reward: str = ""
    lam: float = -1.0
    dedupe_prefixes: bool = True
    seed: int = 0
    device: str = "cpu"
    sft: SFTConfig = dataclasses.field(default_factory=SFTConfig)
    rl: RLConfig = dataclasses.field(default_factory=RLConfig)
    fqe: FQEConfig = dataclasses.field(default_factory=FQEConfig)
    eval: OnlineEvalConfig = dataclasses.field(default_factory=OnlineEvalConfig)
    log_every: int = 250
    checkpoint_every: int = 1000
    out_dir: str = "runs/agent"
    wandb: WandbConfig = dataclasses.field(default_factory=WandbConfig)
    model: ModelBasedConfig = dataclasses.field(default_factory=ModelBasedConfig)

    ADDED_FIELDS = ("model",)  # added after configs were hashed: one without it keeps its hash

    def check(self) -> list[str]:
        problems = []
        if not self.name or "/" in self.name or self.name.startswith("."):
            problems.append(f"name must be a plain directory name, got {self.name!r}")
        if self.reward and self.reward not in REWARDS:
            problems.append(f"reward {self.reward!r} unknown{suggest(self.reward, REWARDS)}; known: "
                            f"{', '.join(REWARDS)}")
        if self.lam > 1:
            problems.append(f"lam must be in [0, 1] (or negative for the env's), got {self.lam}")
        if self.log_every < 1 or self.checkpoint_every < 1:
            problems.append("log_every and checkpoint_every must be >= 1")
        if self.rl.init_from_sft and list(self.rl.hidden) != list(self.sft.hidden):
            problems.append(f"rl.init_from_sft needs rl.hidden == sft.hidden, got {self.rl.hidden} vs "
                            f"{self.sft.hidden}")
        online = self.rl.algo in ONLINE_ALGOS
        if online != (self.model.kind == "surrogate"):
            problems.append(f"rl.algo {self.rl.algo!r} with model.kind {self.model.kind!r}: sac and td3 train online "
                            f"in the surrogate (model.kind: surrogate), the offline algorithms (cql, iql, "
                            f"td3_plus_bc) on the dataset (model.kind: '' or synthetic)")
        return problems

    @property
    def run_dir(self) -> Path:
        return (REPO_ROOT / self.out_dir / self.name).resolve()

    def run_paths(self) -> list[Path]:
        return [(REPO_ROOT / r).resolve() for r in self.runs]
