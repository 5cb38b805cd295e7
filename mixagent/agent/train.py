"""The agent job: trajectories -> SFT (behaviour cloning) -> RL (CQL / IQL / TD3+BC) -> artifacts ->
offline evaluation (FQE) -> online evaluation against the baselines.

Run directory ``<out_dir>/<name>/``: ``config.json``, ``state.json`` (stages done), ``log.jsonl`` (one
metric line per ``log_every`` steps), ``checkpoints/`` (training state, resumable), ``sft/`` and ``rl/``
(policy artifacts), ``offline.json``, ``online/`` (one file per episode), ``table.md`` / ``table.json``.
Nothing is written elsewhere (no ``d3rlpy_logs/``): the training loop is our own, on d3rlpy's ``update``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import random
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from tqdm import tqdm

from mixagent.agent.algos import (
    OBS_EPS,
    actor_tensors,
    import_d3rlpy,
    init_actor_from,
    make_fqe,
    make_rl,
    make_sft,
    rl_params_problems,
)
from mixagent.agent.config import AgentConfig
from mixagent.agent.dataset import (
    TrajectorySet,
    Transitions,
    build_transitions,
    concat_transitions,
    load_trajectories,
    to_d3rlpy,
    top_trajectories,
)
from mixagent.agent.evaluate import baseline_label, check_held_out, evaluate_online
from mixagent.config import apply_overrides, config_hash, from_dict, to_dict
from mixagent.env.environment import MixingEnv
from mixagent.env.evaluation import EvalResult
from mixagent.env.observation import OBSERVATION_VERSION, observation_names
from mixagent.env.rewards import balanced_score, needs_reference
from mixagent.env.spec import EnvSpec
from mixagent.errors import ConfigError, ResumeMismatchError
from mixagent.paths import REPO_ROOT, atomic_write, atomic_write_bytes, atomic_write_json
from mixagent.policies.artifact import write_artifact
from mixagent.policies.ranges import RANGES_FORMAT, value_ranges
from mixagent.study.tables import format_table

__all__ = ["train_agent", "training_identity", "AgentResult", "MetricSink", "WorldModelSupply"]

log = logging.getLogger(__name__)
TRAIN_THREADS = 1  # torch threads for the gradient steps (see _run)
STAGES = ("sft", "rl")
# config keys that change what is trained; the rest (evaluation, logging) may differ on --resume
_TRAINING_KEYS = ("runs", "reward", "lam", "dedupe_prefixes", "seed", "sft", "rl", "checkpoint_every", "model")


class WorldModelSupply(Protocol):
    """What model-based stage 2 (``model.kind: synthetic | surrogate``) needs from a world model; the
    agent trains, :class:`mixagent.model_based.synthetic.WorldModelData` supplies (``mixagent train-agent``
    passes one when the config asks for it)."""

    def env(self, tset: TrajectorySet) -> Any:
        """The penalised surrogate env, checked against the runs (raises on a mismatch)."""

    def synthetic(self, tset: TrajectorySet, act: Callable[[np.ndarray], np.ndarray], seed: int,
                  progress: bool = True) -> Transitions:
        """Synthetic transitions branched from the runs' real states, acting with ``act``."""


class MetricSink(Protocol):
    """Where metric records go (``log.jsonl``, stdout, wandb)."""

    def write(self, record: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class JsonlSink:
    def __init__(self, path: Path) -> None:
        self.file = path.open("a")

    def write(self, record: dict[str, Any]) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class StdoutSink:
    def write(self, record: dict[str, Any]) -> None:
        tqdm.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))

    def close(self) -> None:
        pass


class WandbSink:
    """wandb, imported only when a run asks for it; ``offline`` writes under the run directory."""

    def __init__(self, cfg: AgentConfig, run_dir: Path) -> None:
        try:
            import wandb
        except ImportError:
            raise ConfigError("wandb", ["wandb.mode is not 'disabled' but wandb is not installed: pip install "
                                        "wandb, or set wandb.mode=disabled"]) from None
        self.run = wandb.init(project=cfg.wandb.project, name=cfg.name, mode=cfg.wandb.mode, dir=str(run_dir),
                              config=to_dict(cfg))

    def write(self, record: dict[str, Any]) -> None:
        prefix = "/".join(str(record[k]) for k in ("stage", "policy") if k in record)
        self.run.log({f"{prefix}/{k}": v for k, v in record.items() if isinstance(v, (int, float))})

    def close(self) -> None:
        self.run.finish()


class MetricLog:
    def __init__(self, sinks: list[MetricSink]) -> None:
        self.sinks = sinks

    def write(self, **record: Any) -> None:
        for sink in self.sinks:
            sink.write(record)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


@dataclasses.dataclass
class AgentResult:
    """What a finished agent job produced."""

    run_dir: Path
    artifacts: dict[str, Path]
    offline: dict[str, Any]
    table: str
    rows: list[dict]
    seconds: dict[str, float]


# --- run directory state ----------------------------------------------------------------------------

def training_identity(cfg: AgentConfig) -> dict[str, Any]:
    """Everything a trained policy depends on: the config's training keys (``_TRAINING_KEYS``; not its
    evaluation or logging sections) and, for model-based stage 2, the world model's content (a refitted model
    is another run). Recorded in a run's ``state.json`` and in every artifact's ``meta.json``
    (``training.identity``)."""
    plain = {**to_dict(cfg), "model": dataclasses.asdict(cfg.model)}  # to_dict leaves a default model section out
    identity = {k: plain[k] for k in _TRAINING_KEYS}
    if cfg.model.kind:
        identity["world_model_sha256"] = hashlib.sha256(
            (REPO_ROOT / cfg.model.world_model / "model.safetensors").read_bytes()).hexdigest()
    return identity


def _prepare_run_dir(cfg: AgentConfig, resume: bool) -> dict:
    run_dir = cfg.run_dir
    state_path = run_dir / "state.json"
    identity = training_identity(cfg)
    if state_path.is_file():
        if not resume:
            raise ResumeMismatchError(f"{run_dir} already holds an agent run; pass --resume to continue it, or "
                                      f"choose another name (name=...)")
        state = json.loads(state_path.read_text())
        recorded = state["identity"]
        default_model = dataclasses.asdict(type(cfg.model)())  # runs from before the model section had none
        differing = [k for k in identity if recorded.get(k, default_model if k == "model" else None) != identity[k]]
        if differing:
            raise ResumeMismatchError(f"cannot resume {run_dir}: {', '.join(differing)} differ from the recorded "
                                      f"run ({', '.join(f'{k}: {recorded.get(k)!r}' for k in differing)}); use the "
                                      f"same config or another name")
        return state
    run_dir.mkdir(parents=True, exist_ok=True)
    state = {"identity": identity, "done": [], "seconds": {}}
    atomic_write_json(run_dir / "config.json", to_dict(cfg))
    atomic_write_json(state_path, state)
    return state


# --- checkpoints ------------------------------------------------------------------------------------

def _save_checkpoint(algo: Any, path: Path, step: int) -> None:
    """Modules, optimizers and every RNG the loop uses, so a resumed stage continues bit for bit."""
    modules = algo.impl.modules.create_checkpointer(algo.impl.device).modules
    payload = {"modules": {k: v.state_dict() for k, v in modules.items()}, "torch_rng": torch.get_rng_state()}
    np_state, py_state = np.random.get_state(), random.getstate()
    extra = {"step": step, "numpy_rng": [np_state[0], np_state[1].tolist(), *np_state[2:]],
             "python_rng": [py_state[0], list(py_state[1]), py_state[2]]}
    atomic_write(path, lambda tmp: torch.save(payload, tmp))
    atomic_write_json(path.with_suffix(".json"), extra)


def _load_checkpoint(algo: Any, path: Path) -> int:
    """Restore a :func:`_save_checkpoint`; returns the step it was taken at (0 when there is none)."""
    if not path.is_file() or not path.with_suffix(".json").is_file():
        return 0
    chkpt = torch.load(path, map_location=algo.impl.device, weights_only=True)  # tensors and plain containers only
    modules = algo.impl.modules.create_checkpointer(algo.impl.device).modules
    for k, v in modules.items():
        v.load_state_dict(chkpt["modules"][k])
    torch.set_rng_state(chkpt["torch_rng"])
    extra = json.loads(path.with_suffix(".json").read_text())
    np_state = extra["numpy_rng"]
    np.random.set_state((np_state[0], np.asarray(np_state[1], dtype=np.uint32), *np_state[2:]))
    random.setstate((extra["python_rng"][0], tuple(extra["python_rng"][1]), extra["python_rng"][2]))
    algo.set_grad_step(extra["step"])
    return int(extra["step"])


# --- the training loop ------------------------------------------------------------------------------

def _build(algo: Any, dataset: Any) -> None:
    obs_dim = dataset.sample_transition().observation_signature.shape[0][0]
    algo.create_impl((obs_dim,), dataset.dataset_info.action_size)


def train_stage(algo: Any, dataset: Any, stage: str, steps: int, cfg: AgentConfig, metrics: MetricLog,
                progress: bool, on_step: Callable[[str, int], None] | None = None) -> float:
    """Train ``algo`` for ``steps`` gradient steps from its last checkpoint; returns steps per second."""
    ckpt = cfg.run_dir / "checkpoints" / f"{stage}.pt"
    ckpt.parent.mkdir(exist_ok=True)
    start = _load_checkpoint(algo, ckpt)
    if start:
        log.info("%s: resuming at step %d of %d from %s", stage, start, steps, ckpt)
    sums: dict[str, list[float]] = defaultdict(list)
    t0 = time.perf_counter()
    with tqdm(total=steps, initial=start, desc=stage, unit="step", disable=not progress) as bar:
        for step in range(start + 1, steps + 1):
            batch = dataset.sample_transition_batch(algo.config.batch_size)
            for k, v in algo.update(batch).items():
                sums[k].append(v)
            bar.update()
            if step % cfg.log_every == 0 or step == steps:
                means = {k: float(np.mean(v)) for k, v in sums.items()}
                bar.set_postfix({k: f"{v:.3g}" for k, v in means.items()})
                metrics.write(stage=stage, step=step, **means)
                sums.clear()
            if step % cfg.checkpoint_every == 0 or step == steps:
                _save_checkpoint(algo, ckpt, step)
            if on_step is not None:
                on_step(stage, step)
    return (steps - start) / max(time.perf_counter() - t0, 1e-9)


def _online_stage(algo: Any, cfg: AgentConfig, tset: TrajectorySet, world_model: WorldModelSupply,
                  progress: bool) -> float:
    """d3rlpy's ``fit_online`` of SAC or TD3 in the penalised surrogate (one ensemble member per step) for
    ``model.online_steps`` env steps, updates from step ``min(1000, steps / 10)``, d3rlpy's logger off (no
    files); TD3 explores with Gaussian noise 0.1. Returns env steps per second. Not resumable inside: a
    finished stage is loaded from its checkpoint, an unfinished one retrains from the SFT policy (minutes).
    """
    ckpt = cfg.run_dir / "checkpoints" / "rl.pt"
    ckpt.parent.mkdir(exist_ok=True)
    meta = ckpt.with_suffix(".json")
    if meta.is_file() and json.loads(meta.read_text()).get("step") == cfg.model.online_steps:
        _load_checkpoint(algo, ckpt)
        return 0.0  # an unfinished stage's checkpoint is not loaded: it retrains from the SFT policy
    env, m = world_model.env(tset), cfg.model
    d3rlpy = import_d3rlpy()
    env.reset(seed=cfg.seed)
    buffer = d3rlpy.dataset.create_fifo_replay_buffer(limit=m.buffer, env=env)
    explorer = d3rlpy.algos.NormalNoise(0.0, 0.1) if cfg.rl.algo == "td3" else None  # SAC samples its own
    t0 = time.perf_counter()
    algo.fit_online(env, buffer=buffer, explorer=explorer, n_steps=m.online_steps,
                    n_steps_per_epoch=min(m.online_steps, 5000), update_start_step=min(1000, m.online_steps // 10),
                    logger_adapter=d3rlpy.logging.NoopAdapterFactory(), show_progress=progress,
                    experiment_name="surrogate", with_timestamp=False)
    _save_checkpoint(algo, ckpt, m.online_steps)
    return m.online_steps / max(time.perf_counter() - t0, 1e-9)


# --- offline evaluation -------------------------------------------------------------------------------

def _offline_metrics(algo: Any, stage: str, dataset: Any, tr: Transitions, cfg: AgentConfig, gamma: float,
                     scale: float, metrics: MetricLog, progress: bool) -> dict[str, float]:
    """FQE value of the greedy policy at the initial state vs the behaviour data's return, TD error (RL),
    and squared action difference to the data. Logged for diagnosis, not a verdict."""
    d3rlpy = import_d3rlpy()
    out: dict[str, float] = {
        "action_diff": d3rlpy.metrics.ContinuousActionDiffEvaluator()(algo, dataset)}
    if stage != "sft":
        out["td_error"] = d3rlpy.metrics.TDErrorEvaluator()(algo, dataset) / scale**2
    starts = [e["row"] for e in tr.episodes if e["first_step"] == 0]  # the runs' true initial states
    if cfg.fqe.steps > 0 and starts:
        fqe = make_fqe(algo, cfg.fqe.hidden, cfg.fqe.learning_rate, cfg.fqe.batch_size, gamma, scale, cfg.device)
        _build(fqe, dataset)
        train_stage(fqe, dataset, f"fqe_{stage}", cfg.fqe.steps, cfg, metrics, progress)
        obs0 = tr.observations[starts]
        out["fqe_initial_value"] = float(np.mean(fqe.predict_value(obs0, algo.predict(obs0)))) / scale
    returns = [e["return"] for e in tr.episodes]  # every trajectory is a rollout from the same start state
    out["data_mean_return"], out["data_best_return"] = float(np.mean(returns)), float(np.max(returns))
    out = {k: v if np.isfinite(v) else None for k, v in out.items()}  # strict JSON: a diverged estimate is null
    metrics.write(stage=f"offline_{stage}", **out)
    return out


# --- the job ------------------------------------------------------------------------------------------

def train_agent(cfg: AgentConfig, resume: bool = False, progress: bool = True,
                env_factory: Callable[[], MixingEnv] | None = None,
                on_step: Callable[[str, int], None] | None = None,
                world_model: WorldModelSupply | None = None) -> AgentResult:
    """Run the whole agent job (see the module docstring); ``resume`` continues an interrupted run.

    Args:
        cfg: the job config.
        resume: continue the run in ``cfg.run_dir`` (training from its last checkpoint, finished stages
            and evaluated episodes kept).
        progress: show progress bars.
        env_factory: builds the online-evaluation env in this process instead of the recorded spec (tests).
        on_step: called after every gradient step with ``(stage, step)`` (tests interrupt through it).
        world_model: the world model's supply for ``model.kind`` (``synthetic``, ``surrogate``):
            :func:`mixagent.model_based.synthetic.world_model_data` (``mixagent train-agent`` passes it).
    """
    problems = rl_params_problems(cfg.rl.algo, cfg.rl.params)
    if problems:  # before anything is read or written
        raise ConfigError("rl.params", problems)
    tset = load_trajectories(cfg.run_paths())
    check_held_out(cfg.eval.seeds, tset.episode_seeds())
    spec_reward = tset.env["spec"].get("reward", {})
    reward = cfg.reward or spec_reward.get("name", "balanced")
    lam = cfg.lam if cfg.lam >= 0 else float(spec_reward.get("lam", 0.5))
    if cfg.model.kind:  # before anything is written: the world model must fit the runs and their reward
        if world_model is None:
            raise ConfigError("model", [f"model.kind {cfg.model.kind!r} trains with a world model, and none was "
                                        f"supplied: run `mixagent train-agent` (it loads the world model), or pass "
                                        f"world_model=mixagent.model_based.world_model_data(cfg)"])
        world_model.env(tset)
        if (reward, lam) != (spec_reward.get("name"), float(spec_reward.get("lam", 0.5))):
            raise ConfigError("model", [f"model.kind {cfg.model.kind!r}: synthetic and surrogate rewards are the env's "
                                        f"({spec_reward.get('name')}, lam {spec_reward.get('lam')}), but the config "
                                        f"asks for reward {reward!r}, lam {lam}; leave reward and lam at the env's "
                                        f"(reward: '', lam: -1) when using the world model"])
    all_tr = build_transitions(tset, reward, lam, dedupe=cfg.dedupe_prefixes)
    top = top_trajectories(tset, cfg.sft.top_fraction, reward, lam)
    sft_tr = build_transitions(tset, reward, lam, select=top, dedupe=cfg.dedupe_prefixes)
    state = _prepare_run_dir(cfg, resume)
    run_dir = cfg.run_dir
    sinks: list[MetricSink] = [JsonlSink(run_dir / "log.jsonl"), StdoutSink()]
    if cfg.wandb.mode != "disabled":
        sinks.append(WandbSink(cfg, run_dir))
    metrics = MetricLog(sinks)
    try:
        log.info("dataset: %s (reward %s, lam %.2f); SFT on the top %.0f%%: %s", all_tr.describe(), reward, lam,
                 100 * cfg.sft.top_fraction, sft_tr.describe())
        metrics.write(stage="data", reward=reward, lam=lam, **{f"all_{k}": v for k, v in all_tr.describe().items()},
                      **{f"sft_{k}": v for k, v in sft_tr.describe().items()})
        return _run(cfg, state, tset, all_tr, sft_tr, reward, lam, metrics, progress, env_factory, on_step,
                    world_model)
    finally:
        metrics.close()


def _run(cfg: AgentConfig, state: dict, tset: TrajectorySet, all_tr: Transitions, sft_tr: Transitions, reward: str,
         lam: float, metrics: MetricLog, progress: bool, env_factory: Callable[[], MixingEnv] | None,
         on_step: Callable[[str, int], None] | None, world_model: WorldModelSupply | None) -> AgentResult:
    d3rlpy = import_d3rlpy()
    # The 64-64 MLPs at batch 64 are too small to split across threads: one thread ran CQL at 92 steps/s on
    # the 2-core machine, two threads at ~10 steps/s alone and under 1 step/s beside another job (spin-waits).
    threads = torch.get_num_threads()
    torch.set_num_threads(TRAIN_THREADS)
    try:
        return _stages(cfg, state, tset, all_tr, sft_tr, reward, lam, metrics, progress, env_factory, on_step, d3rlpy,
                       world_model)
    finally:
        torch.set_num_threads(threads)


def _stages(cfg: AgentConfig, state: dict, tset: TrajectorySet, all_tr: Transitions, sft_tr: Transitions, reward: str,
            lam: float, metrics: MetricLog, progress: bool, env_factory: Callable[[], MixingEnv] | None,
            on_step: Callable[[str, int], None] | None, d3rlpy: Any,
            world_model: WorldModelSupply | None = None) -> AgentResult:
    run_dir, k = cfg.run_dir, tset.space.k
    mean, std = all_tr.observations.mean(axis=0), all_tr.observations.std(axis=0)
    all_ds, sft_ds = to_d3rlpy(all_tr, k), to_d3rlpy(sft_tr, k)
    seconds = state["seconds"]

    def mark(stage: str, t0: float) -> None:
        seconds[stage] = seconds.get(stage, 0.0) + time.perf_counter() - t0
        state["done"].append(stage)
        atomic_write_json(run_dir / "state.json", state)

    # the two stages, each seeded on its own so either reruns alone identically
    algos = {"sft": make_sft(cfg.sft, mean, std, cfg.device), "rl": make_rl(cfg.rl, mean, std, cfg.device)}
    datasets, steps = {"sft": sft_ds, "rl": all_ds}, {"sft": cfg.sft.steps, "rl": cfg.rl.steps}
    artifacts = {}
    for i, stage in enumerate(STAGES):
        t0 = time.perf_counter()
        d3rlpy.seed(cfg.seed + i)
        algo = algos[stage]
        if stage == "rl" and cfg.model.kind == "synthetic":  # after SFT: it is the branching policy
            assert world_model is not None  # checked by train_agent before anything is written
            synthetic = world_model.synthetic(tset, algos["sft"].predict, cfg.seed, progress)
            metrics.write(stage="synthetic", **{f"synthetic_{k}": v for k, v in synthetic.describe().items()},
                          synthetic_mean_reward=float(synthetic.rewards[~synthetic.final_obs].mean()))
            datasets["rl"] = to_d3rlpy(concat_transitions(all_tr, synthetic), k)
        _build(algo, datasets[stage])
        if stage == "rl" and cfg.rl.init_from_sft:
            init_actor_from(algo, algos["sft"])  # a resumed stage then loads its checkpoint over this
        if stage == "rl" and cfg.model.kind == "surrogate":
            assert world_model is not None
            rate = _online_stage(algo, cfg, tset, world_model, progress)
        else:
            rate = train_stage(algo, datasets[stage], stage, steps[stage], cfg, metrics, progress, on_step)
        artifacts[stage] = write_artifact(run_dir / stage, actor_tensors(algo), _artifact_meta(
            cfg, tset, stage, reward, lam, mean, std, _observation_ranges(sft_tr if stage == "sft" else all_tr, tset)))
        if stage not in state["done"]:
            metrics.write(stage=stage, steps_per_second=rate)
            mark(stage, t0)
    offline = {}
    if "offline" in state["done"] and (run_dir / "offline.json").is_file():
        offline = json.loads((run_dir / "offline.json").read_text())
    else:
        t0 = time.perf_counter()
        for i, stage in enumerate(STAGES):
            d3rlpy.seed(cfg.seed + 10 + i)
            offline[stage] = _offline_metrics(algos[stage], stage, all_ds, all_tr, cfg, cfg.rl.gamma,
                                              cfg.rl.reward_scale, metrics, progress)
        atomic_write_json(run_dir / "offline.json", offline)
        mark("offline", t0)

    t0 = time.perf_counter()
    labels = {"sft": "agent SFT (bc)", "rl": f"agent RL ({cfg.rl.algo})"}
    policies = {labels[s]: str(artifacts[s]) for s in STAGES if s in cfg.eval.agents}
    policies.update({baseline_label(b): b for b in cfg.eval.baselines})
    shared = cfg.eval.cache and env_factory is None  # tests' in-process envs keep their episodes in the run
    cache = REPO_ROOT / cfg.eval.cache if shared else run_dir / "online"
    reuse = tuple(REPO_ROOT / r for r in cfg.eval.reuse) if shared else ()
    spec, spec_hash = _eval_spec(tset, cfg.eval.env_overrides)
    same_spec = tset.reference is not None and spec_hash == tset.env["spec_hash"]  # overrides get their own
    results = evaluate_online(spec, spec_hash, policies, list(cfg.eval.seeds), cache, cfg.eval.launcher,
                              cfg.eval.workers, env_factory, progress,
                              tset.reference.to_json() if same_spec else None, reuse, run_dir / "report")
    first = next(iter(results.values()))[0]["start"]
    start = EvalResult.from_json(first)
    b0 = balanced_score(reward, lam, start, start, tset.space, tset.reference) if same_spec or not \
        needs_reference(reward) else 0.0
    table, rows = format_table(results, tset.space, lam, start_score=b0)
    atomic_write_bytes(run_dir / "table.md", (table + "\n").encode())
    atomic_write_json(run_dir / "table.json", {"env": tset.env["id"], "spec_hash": spec_hash,
                                          "env_overrides": list(cfg.eval.env_overrides),
                                          "seeds": list(cfg.eval.seeds), "reward": reward, "lam": lam, "rows": rows})
    for row in rows:
        metrics.write(stage="online", policy=row["policy"], balanced=row["balanced"],
                      source_score=row["source_score"], target_score=row["target_score"])
    if "online" not in state["done"]:
        mark("online", t0)
    return AgentResult(run_dir, artifacts, offline, table, rows, dict(seconds))


def _eval_spec(tset: TrajectorySet, overrides: list[str]) -> tuple[dict, str]:
    """The env spec (as a dict) and hash that online evaluation runs in: the runs' recorded spec, with
    ``eval.env_overrides`` applied (then the recorded spec must still reproduce its recorded hash, so the
    base model and data are those of collection)."""
    if not overrides:
        return tset.env["spec"], tset.env["spec_hash"]
    recorded = from_dict(EnvSpec, tset.env["spec"], "recorded env spec")
    if recorded.spec_hash() != tset.env["spec_hash"]:
        raise ConfigError("online evaluation", [
            f"the recorded env spec now hashes to {recorded.spec_hash()}, the trajectories were collected with "
            f"{tset.env['spec_hash']}: the base model, data or domain space changed since collection"])
    spec = from_dict(EnvSpec, apply_overrides(tset.env["spec"], overrides), "eval.env_overrides")
    return to_dict(spec), spec.spec_hash()


def _observation_ranges(tr: Transitions, tset: TrajectorySet) -> dict[str, Any]:
    """The training range of every observation entry the policy acted on (terminal observations left out):
    ``training.feature_ranges`` of a dense artifact (:mod:`mixagent.policies.ranges`)."""
    rows = tr.observations if tr.final_obs is None else tr.observations[~tr.final_obs]
    names = observation_names(tset.space.names, tset.observed_lr is not None)
    return {"format": RANGES_FORMAT, "rows": int(len(rows)), "observation": value_ranges(names, rows)}


def _artifact_meta(cfg: AgentConfig, tset: TrajectorySet, stage: str, reward: str, lam: float, mean: np.ndarray,
                   std: np.ndarray, ranges: dict[str, Any] | None = None) -> dict[str, Any]:
    import d3rlpy

    spec = tset.env["spec"]
    hidden = cfg.sft.hidden if stage == "sft" else cfg.rl.hidden
    return {
        "algo": "bc" if stage == "sft" else cfg.rl.algo, "stage": stage,
        "domains": {"names": list(tset.space.names), "fields": list(tset.space.fields), "space": tset.space.name},
        "observation": {"version": OBSERVATION_VERSION, "dim": int(mean.shape[0]), "lr": tset.observed_lr is not None},
        "action": {"temperature": spec["action"]["temperature"], "floor": spec["action"]["floor"],
                   "map": "floor + (1 - K*floor) * softmax(tanh_output / temperature)"},
        "normalisation": {"kind": "standard", "eps": OBS_EPS, "tensors": ["obs_mean", "obs_std (std + eps)"]},
        "network": {"hidden": list(hidden), "activation": "relu", "output": "tanh"},
        "env": {"id": tset.env["id"], "spec_hash": tset.env["spec_hash"], "horizon": tset.horizon},
        "reward": {"name": reward, "lam": lam},
        "training": {"config": to_dict(cfg), "config_hash": config_hash(to_dict(cfg)),
                     "identity": training_identity(cfg),
                     "runs": [str(p.relative_to(REPO_ROOT)) if p.is_relative_to(REPO_ROOT) else str(p)
                              for p in tset.runs],
                     **({"feature_ranges": ranges} if ranges is not None else {})},
        "versions": {"d3rlpy": d3rlpy.__version__},
    }
