"""A learned world model of the mixing environment: an ensemble of small MLPs that predicts the next
evaluation from the observation and the mixture trained.

The model-based offline RL recipe (MOPO, Yu et al. 2020; MOReL, Kidambi et al. 2020; MBPO, Janner et al.
2019): fit an ensemble of dynamics models on the logged transitions, then use its disagreement as the
uncertainty of a step. Here one transition is one segment of continual pre-training:

* input ``x = [observation (3K+5, +1 with the observed LR), weights trained (K)]``, the observation being
  exactly the env's (:class:`~mixagent.env.observation.ObservationBuilder`);
* output ``y = [(b_{t+1} - b_t) / b_0 (K), (s_{t+1} - s_t) / s_0 (2), (a_{t+1} - a_t) / a_0 (2)]``: the change
  of every domain's bits per byte, of the two fields' benchmark scores and accuracies, relative to the start
  (the observation's own units), so the next evaluation, and from it the env's observation and reward, is
  rebuilt exactly as the env builds them.

The members are trained at once as batched matrices (``(M, in, out)`` weights, one ``baddbmm`` per layer),
each on its own bootstrap resample of the training transitions, with inputs and outputs standardised.
Artifacts are ``model.safetensors`` + ``meta.json`` (loaded without d3rlpy).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mixagent.agent.dataset import TrajectorySet, _owner
from mixagent.domains import FIELDS, Domain, DomainSpace
from mixagent.env.evaluation import EvalResult
from mixagent.env.observation import OBSERVATION_VERSION, ObservationBuilder
from mixagent.errors import ConfigError, CorruptArtifactError, SchemaVersionError, WorldModelError
from mixagent.paths import atomic_write, atomic_write_json

__all__ = ["WORLD_MODEL_VERSION", "WorldModelConfig", "ModelData", "WorldModel", "model_data", "fit_world_model",
           "load_world_model", "split_by_tree"]

WORLD_MODEL_VERSION = 1


@dataclasses.dataclass(frozen=True)
class WorldModelConfig:
    """How the ensemble is fitted.

    Args:
        members: ensemble members (each on its own bootstrap resample; MOPO uses 7, 5 are kept).
        hidden: width of each hidden layer.
        layers: hidden layers.
        epochs: passes over the (resampled) training transitions.
        batch_size: transitions per gradient step.
        lr: Adam learning rate.
        weight_decay: AdamW decoupled weight decay.
        holdout_trees: collection trees kept out of training (the held-out trajectories R² is measured on);
            whole trees, since branches of one tree share their prefix.
        seed: seeds the split, the resamples and the initialisation.
    """

    members: int = 5
    hidden: int = 128
    layers: int = 2
    epochs: int = 100
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    holdout_trees: int = 5
    seed: int = 0

    def check(self) -> list[str]:
        problems = []
        for name in ("members", "hidden", "layers", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if not (self.lr > 0 and self.weight_decay >= 0):
            problems.append(f"lr must be > 0 and weight_decay >= 0, got lr={self.lr}, weight_decay={self.weight_decay}")
        if self.holdout_trees < 0:
            problems.append(f"holdout_trees must be >= 0, got {self.holdout_trees}")
        return problems


@dataclasses.dataclass
class ModelData:
    """Transitions in the world model's layout.

    Attributes:
        x: ``(N, 4K+5[+1])`` float32 inputs (observation, then the weights trained).
        y: ``(N, K+4)`` float32 targets (relative changes; see the module docstring).
        tree: ``(N,)`` the collection tree of each transition (split key).
        traj: ``(N,)`` ``"run/trajectory id"`` of each transition.
        step: ``(N,)`` the step ``t`` of each transition.
    """

    x: np.ndarray
    y: np.ndarray
    tree: np.ndarray
    traj: np.ndarray
    step: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, mask: np.ndarray) -> ModelData:
        return ModelData(self.x[mask], self.y[mask], self.tree[mask], self.traj[mask], self.step[mask])


def output_names(space: DomainSpace) -> list[str]:
    """The names of the ``K + 4`` outputs, in order."""
    return ([f"bpb/{n}" for n in space.names] + [f"score/{f}" for f in FIELDS] + [f"accuracy/{f}" for f in FIELDS])


def _vector(result: EvalResult, space: DomainSpace) -> np.ndarray:
    """``(K+4,)`` bpb per domain, score and accuracy per field."""
    return np.array([result.bpb[n] for n in space.names] + [result.scores[f] for f in FIELDS]
                    + [result.accuracy[f] for f in FIELDS], dtype=np.float64)


def _result(v: np.ndarray, space: DomainSpace, tokens_seen: int, eval_tokens: int) -> EvalResult:
    k = space.k
    return EvalResult(dict(zip(space.names, map(float, v[:k]))), dict(zip(FIELDS, map(float, v[k:k + 2]))),
                      dict(zip(FIELDS, map(float, v[k + 2:k + 4]))), tokens_seen, eval_tokens)


def model_data(tset: TrajectorySet, dedupe: bool = True) -> ModelData:
    """Every completed step of ``tset`` as one world-model transition (a branched prefix once).

    Raises:
        WorldModelError: the runs hold no completed step, or a spec observes the LR and the runs did not
            record it.
    """
    space, horizon, lrs = tset.space, tset.horizon, tset.observed_lr
    if tset.env["spec"].get("observe_lr") and lrs is None:
        raise WorldModelError(f"the runs were collected on {tset.env['id']}, whose observation carries the learning "
                              f"rate, but their meta.json has no proxy.observed_lr; re-collect them with this mixagent")
    builder = ObservationBuilder(space, lrs is not None)
    seen: set[tuple[str, str, int]] = set()
    xs, ys, trees, trajs, steps = [], [], [], [], []
    for run, traj in sorted(tset.trajectories, key=lambda rt: (rt[0], rt[1].id)):
        evals = traj.evals
        start = traj.start
        before = [start] + evals
        weights = [np.asarray(traj.header["start_weights"])] + [np.asarray(s["weights"]) for s in traj.steps]
        v0 = _vector(start, space)
        for t in range(len(evals)):
            if dedupe:
                key = (run, _owner(tset.headers[run], traj.id, t), t)
                if key in seen:
                    continue
                seen.add(key)
            prev = before[t - 1] if t >= 1 else start
            obs = builder(weights[t], start, prev, before[t], t / horizon, None if lrs is None else lrs[t])
            xs.append(np.concatenate([obs, weights[t + 1]]))
            ys.append((_vector(before[t + 1], space) - _vector(before[t], space)) / v0)
            trees.append(int(traj.header.get("tree", 0)))
            trajs.append(f"{run}/{traj.id}")
            steps.append(t)
    if not xs:
        raise WorldModelError("the runs hold no completed step to fit a world model on; collect trajectories first "
                              "(make collect-trajectories) or pass trajectories/reference/math-cpt-v1")
    return ModelData(np.asarray(xs, np.float32), np.asarray(ys, np.float32), np.asarray(trees),
                     np.asarray(trajs), np.asarray(steps))


def split_by_tree(data: ModelData, holdout_trees: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train mask, held-out mask)``: ``holdout_trees`` whole collection trees, drawn with ``seed``.

    Raises:
        WorldModelError: fewer than ``holdout_trees + 1`` trees.
    """
    trees = np.unique(data.tree)
    if holdout_trees and len(trees) <= holdout_trees:
        raise WorldModelError(f"holdout_trees={holdout_trees} leaves no training data: the runs hold {len(trees)} "
                              f"trees; lower holdout_trees or collect more trees")
    held = np.random.default_rng(seed).choice(trees, size=holdout_trees, replace=False) if holdout_trees else []
    test = np.isin(data.tree, held)
    return ~test, test


class _Ensemble(torch.nn.Module):
    """``M`` MLPs as batched matrices: input ``(M, N, in)`` -> ``(M, N, out)``."""

    def __init__(self, members: int, d_in: int, d_out: int, hidden: int, layers: int, generator: torch.Generator):
        super().__init__()
        dims = [d_in] + [hidden] * layers + [d_out]
        self.weights = torch.nn.ParameterList()
        self.biases = torch.nn.ParameterList()
        for a, b in zip(dims[:-1], dims[1:]):
            bound = 1.0 / math.sqrt(a)  # torch.nn.Linear's default initialisation
            self.weights.append(torch.nn.Parameter((torch.rand(members, a, b, generator=generator) * 2 - 1) * bound))
            self.biases.append(torch.nn.Parameter((torch.rand(members, 1, b, generator=generator) * 2 - 1) * bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            x = torch.baddbmm(b, x, w)
            if i < last:
                x = torch.nn.functional.silu(x)
        return x


class WorldModel:
    """A fitted ensemble with its normalisation and identity (see the module docstring).

    Attributes:
        meta: the artifact's ``meta.json`` (spec, spec hash, domain space, start evaluation, reference
            extremes, natural shares, observed LRs, config, metrics).
        space: the domain space it predicts for.
    """

    def __init__(self, net: _Ensemble, norm: dict[str, np.ndarray], meta: dict) -> None:
        self.net = net.eval()
        # inference in numpy: a decision is a few (M, 1, 128) products, where torch's per-call overhead dominates
        self._layers = [(w.detach().numpy().copy(), b.detach().numpy().copy()) for w, b in zip(net.weights, net.biases)]
        self.norm = norm
        self.meta = meta
        self.space = DomainSpace(Path(meta["space"]).stem, [Domain(n, f, []) for n, f in
                                                             zip(meta["domains"], meta["fields"])])

    @property
    def members(self) -> int:
        return int(self.net.weights[0].shape[0])

    @property
    def input_dim(self) -> int:
        return int(self.net.weights[0].shape[1])

    def predict_members(self, x: np.ndarray) -> np.ndarray:
        """``(M, N, K+4)`` every member's prediction for inputs ``x`` ``(N, in)`` (or ``(in,)``: ``(M, 1, K+4)``).

        Raises:
            WorldModelError: inputs of another width (another domain space or observation layout).
        """
        x = np.atleast_2d(np.asarray(x, dtype=np.float32))
        if x.shape[1] != self.input_dim:
            raise WorldModelError(f"world-model input has {x.shape[1]} features, this model takes {self.input_dim} "
                                  f"(observation + weights of the {self.space.k}-domain space "
                                  f"{self.space.name!r}); fit a world model on trajectories of the space you use")
        h = ((x - self.norm["x_mean"]) / self.norm["x_std"])[None]
        for i, (w, b) in enumerate(self._layers):
            h = h @ w + b
            if i < len(self._layers) - 1:
                h = h / (1.0 + np.exp(-h))  # SiLU, as in training
        return h * self.norm["y_std"] + self.norm["y_mean"]

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(mean, std)`` over members, each ``(N, K+4)``."""
        out = self.predict_members(x)
        return out.mean(0), out.std(0)

    def start(self) -> EvalResult:
        """The base model's evaluation every episode of the spec starts from (as collected)."""
        return EvalResult.from_json(self.meta["start"])

    def next_eval(self, now: EvalResult, delta: np.ndarray, tokens_seen: int) -> EvalResult:
        """The evaluation after a step that changed ``now`` by the relative change ``delta`` ``(K+4,)``."""
        v0 = _vector(self.start(), self.space)
        return _result(_vector(now, self.space) + delta * v0, self.space, tokens_seen, now.eval_tokens)

    def save(self, out: str | Path) -> Path:
        """Write ``model.safetensors`` and ``meta.json`` into ``out`` (each atomically)."""
        from safetensors.torch import save_file

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        tensors = {f"w{i}": w.detach().contiguous() for i, w in enumerate(self.net.weights)}
        tensors |= {f"b{i}": b.detach().contiguous() for i, b in enumerate(self.net.biases)}
        tensors |= {k: torch.from_numpy(np.asarray(v, np.float32)) for k, v in self.norm.items()}
        atomic_write(out / "model.safetensors", lambda p: save_file(tensors, str(p)))
        digest = hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest()
        self.meta["sha256"] = digest
        atomic_write_json(out / "meta.json", self.meta)
        return out


def load_world_model(path: str | Path) -> WorldModel:
    """Load a world-model artifact directory.

    Raises:
        WorldModelError: no artifact there.
        SchemaVersionError: a world-model version this mixagent does not know, or an observation version
            other than the env's.
        CorruptArtifactError: the weights do not match their recorded checksum.
    """
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / "meta.json").is_file() or not (path / "model.safetensors").is_file():
        raise WorldModelError(f"{path} is not a world-model artifact (model.safetensors + meta.json); fit one with "
                              f"mixagent world-model --config configs/world_model/default.yaml")
    meta = json.loads((path / "meta.json").read_text())
    if meta.get("version") != WORLD_MODEL_VERSION:
        raise SchemaVersionError(f"{path}: world-model version {meta.get('version')!r}, this mixagent reads "
                                 f"{WORLD_MODEL_VERSION}; refit it with this mixagent")
    if meta.get("observation_version") != OBSERVATION_VERSION:
        raise SchemaVersionError(f"{path}: fitted on observation version {meta.get('observation_version')!r}, the "
                                 f"env builds version {OBSERVATION_VERSION}; refit it on re-collected trajectories")
    raw = (path / "model.safetensors").read_bytes()
    if hashlib.sha256(raw).hexdigest() != meta.get("sha256"):
        raise CorruptArtifactError(f"{path / 'model.safetensors'} does not match the checksum in meta.json; refit "
                                   f"or restore it (git checkout -- {path})")
    tensors = load_file(str(path / "model.safetensors"))
    layers = sum(1 for k in tensors if k.startswith("w"))
    w0 = tensors["w0"]
    net = _Ensemble(w0.shape[0], w0.shape[1], tensors[f"w{layers - 1}"].shape[2], w0.shape[2], layers - 1,
                    torch.Generator().manual_seed(0))
    with torch.no_grad():
        for i in range(layers):
            net.weights[i].copy_(tensors[f"w{i}"])
            net.biases[i].copy_(tensors[f"b{i}"])
    norm = {k: tensors[k].numpy() for k in ("x_mean", "x_std", "y_mean", "y_std")}
    return WorldModel(net, norm, meta)


def fit_world_model(data: ModelData, tset: TrajectorySet, cfg: WorldModelConfig,
                    progress: Callable[[int, float], None] | None = None) -> WorldModel:
    """Fit the ensemble on ``data`` (the training transitions) of the runs ``tset``.

    Args:
        data: training transitions (:func:`model_data`, the train part of :func:`split_by_tree`).
        tset: their trajectory set (the meta: spec, space, start evaluation, reference, LRs).
        cfg: the fit's settings.
        progress: called after every epoch with ``(epoch, mean training loss)`` (standardised MSE).

    Raises:
        ConfigError: bad ``cfg``.
        WorldModelError: fewer transitions than one batch of one.
    """
    problems = cfg.check()
    if problems:
        raise ConfigError("world_model", problems)
    if len(data) < 2:
        raise WorldModelError(f"{len(data)} training transitions: a world model needs at least 2; collect more "
                              f"trajectories or lower holdout_trees")
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    x_mean, x_std = data.x.mean(0), data.x.std(0) + 1e-6
    y_mean, y_std = data.y.mean(0), data.y.std(0) + 1e-6
    x = torch.from_numpy((data.x - x_mean) / x_std)
    y = torch.from_numpy((data.y - y_mean) / y_std)
    n, m = len(data), cfg.members
    net = _Ensemble(m, x.shape[1], y.shape[1], cfg.hidden, cfg.layers, gen)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    boot = torch.randint(0, n, (m, n), generator=gen)  # each member's bootstrap resample
    for epoch in range(cfg.epochs):
        order = boot.gather(1, torch.argsort(torch.rand(m, n, generator=gen), dim=1))
        total = 0.0
        for lo in range(0, n, cfg.batch_size):
            idx = order[:, lo:lo + cfg.batch_size]  # (M, B): member i's batch from its own resample
            loss = torch.nn.functional.mse_loss(net(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * idx.shape[1]
        if progress is not None:
            progress(epoch, total / n)
    first = tset.trajectories[0][1]
    proxy = json.loads((tset.runs[0] / "meta.json").read_text()).get("proxy", {})
    meta: dict[str, Any] = {
        "version": WORLD_MODEL_VERSION, "observation_version": OBSERVATION_VERSION,
        "env_id": tset.env["id"], "spec": tset.env["spec"], "spec_hash": tset.env["spec_hash"],
        "horizon": tset.horizon, "space": str(tset.space.name), "domains": list(tset.space.names),
        "fields": [d.field for d in tset.space.domains], "outputs": output_names(tset.space),
        "start": first.header["start"], "start_weights": list(map(float, first.header["start_weights"])),
        "natural": _natural(proxy, tset), "reference": tset.reference.to_json() if tset.reference else None,
        "observed_lr": tset.observed_lr, "base_model": str(proxy.get("base_model", "")),
        "config": dataclasses.asdict(cfg), "runs": [_shown(r) for r in tset.runs], "transitions": len(data),
        "trees": sorted(map(int, np.unique(data.tree))),
    }
    return WorldModel(net, {"x_mean": x_mean, "x_std": x_std, "y_mean": y_mean, "y_std": y_std}, meta)


def _shown(path: Path) -> str:
    """A run directory as recorded: relative to the repository when inside it (no machine paths)."""
    from mixagent.paths import REPO_ROOT

    path = Path(path).resolve()
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def _natural(proxy: dict, tset: TrajectorySet) -> list[float]:
    if "natural" not in proxy:
        raise WorldModelError(f"{tset.runs[0]}/meta.json records no proxy.natural (the natural token shares the "
                              f"surrogate starts from); re-collect the run with this mixagent")
    return list(map(float, proxy["natural"]))
