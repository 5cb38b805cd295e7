"""A world model across settings: one ensemble that predicts the next evaluation in any setting of a suite, in
any domain space (agent v2's model-based variants; ``mixagent world-model-settings``).

The v1 model (:mod:`mixagent.model_based.world_model`) is a dense MLP over one space's observation, so it is tied
to one ``K`` and, in practice, to one setting. This one has the per-domain policy's architecture
(:mod:`mixagent.policies.per_domain`: DeepSets with field pooling, Zaheer et al. 2017) as a dynamics model, and
the scale-free units of observation version 2 (:class:`~mixagent.env.observation.SettingObservationBuilder`).
One transition is one segment of continual pre-training:

* per domain ``i`` (``K`` rows): ``[is_target, K w_i, K w'_i, K n_i, b_i / b_i0 - 1, (b_i - b_i_prev) / b_i0]``:
  its field, the weights of the last segment, of the coming one and the run's initial shares (each relative to
  uniform, so they mean the same for any ``K``), its loss relative to the start and its last change;
* per run (:data:`RUN_INPUTS`): the two fields' benchmark score changes since the start and since the last step
  (over :data:`~mixagent.env.observation.SCORE_SCALE`), progress, the coming LR over the peak, and the stated
  setting without lam (lam weighs the reward; it changes no run);
* out: per domain ``(b'_i - b_i) / b_i0``; per run the two fields' score and accuracy changes over ``SCORE_SCALE``.

What a user cannot state (the base's prior target exposure, its size) is not an input: the model reads it from
the losses, as a policy must. Members (MOPO's ensemble, Yu et al. 2020) each fit their own bootstrap resample.
Artifact: ``model.safetensors`` + ``meta.json`` (kind :data:`SETTINGS_MODEL_KIND`, checksummed).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mixagent.domains import FIELDS, DomainSpace
from mixagent.env.evaluation import EvalResult
from mixagent.env.observation import CLIP, SCORE_SCALE, SETTING_FEATURES, setting_features
from mixagent.errors import ConfigError, CorruptArtifactError, SchemaVersionError, WorldModelError
from mixagent.paths import atomic_write, atomic_write_json

__all__ = ["SETTINGS_MODEL_KIND", "SETTINGS_MODEL_VERSION", "DOMAIN_INPUTS", "RUN_INPUTS", "RUN_OUTPUTS",
           "SettingsModelConfig", "SettingRun", "SettingsData", "SettingsWorldModel", "setting_run", "inputs",
           "settings_data", "fit_settings_model", "load_settings_model", "rollout", "rollout_final"]

SETTINGS_MODEL_KIND = "mixagent.settings_world_model"
SETTINGS_MODEL_VERSION = 1
DOMAIN_INPUTS = ("is_target", "weight", "next_weight", "initial", "loss_rel", "loss_change")
_STATED = tuple(f for f in SETTING_FEATURES if f != "lam")  # lam weighs the reward, it changes no run
RUN_INPUTS = ("source_score", "target_score", "source_change", "target_change", "progress", "lr", *_STATED)
RUN_OUTPUTS = tuple(f"{what}/{f}" for what in ("score", "accuracy") for f in FIELDS)


@dataclasses.dataclass(frozen=True)
class SettingsModelConfig:
    """How the ensemble is fitted.

    Args:
        members: ensemble members, each on its own bootstrap resample.
        hidden: width of the shared per-domain encoder and the two heads.
        epochs: passes over the (resampled) training transitions.
        batch_size: transitions per gradient step.
        lr: AdamW learning rate.
        weight_decay: AdamW decoupled weight decay.
        seed: the resamples, the batch order and the initialisation.
    """

    members: int = 5
    hidden: int = 64
    epochs: int = 200
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0

    def check(self) -> list[str]:
        problems = [f"{n} must be >= 1, got {getattr(self, n)}" for n in ("members", "hidden", "epochs", "batch_size")
                    if not isinstance(getattr(self, n), int) or getattr(self, n) < 1]
        if not (self.lr > 0 and self.weight_decay >= 0):
            problems.append(f"lr must be > 0 and weight_decay >= 0, got lr={self.lr}, weight_decay={self.weight_decay}")
        return problems


@dataclasses.dataclass(frozen=True)
class SettingRun:
    """What a rollout in one setting needs, read off one collected run (:func:`setting_run`).

    Attributes:
        name: the run (its directory name: the suite setting's run hash).
        space: its domain space.
        start: the base model's evaluation every episode starts from.
        start_weights: ``(K,)`` the first segment's weights before any action (the natural shares).
        natural: ``(K,)`` the natural token shares (what ``replay`` schedules build on).
        lrs: ``(T,)`` each segment's learning rate over the peak.
        stated: the stated setting (:func:`~mixagent.env.setting.stated_from_spec`).
        reward: the run's reward name and lam; reference: its normalised reward's extremes (or ``None``).
        spec: the recorded env spec (a dict) and base_id: the base checkpoint it trained from.
    """

    name: str
    space: DomainSpace
    start: EvalResult
    start_weights: np.ndarray
    natural: np.ndarray
    lrs: np.ndarray
    stated: dict[str, float]
    reward: tuple[str, float]
    reference: Any
    spec: dict
    base_id: str

    @property
    def horizon(self) -> int:
        return len(self.lrs)

    @property
    def setting_vector(self) -> np.ndarray:
        """``(4,)`` the stated setting's features without lam (:data:`RUN_INPUTS`' last four)."""
        return setting_features(self.stated)[[SETTING_FEATURES.index(f) for f in _STATED]]


def setting_run(tset: Any) -> SettingRun:
    """The :class:`SettingRun` of a one-setting trajectory set (:func:`mixagent.agent.dataset.load_trajectories`).

    Raises:
        WorldModelError: runs that did not record the learning rates or their natural shares (re-collect them
            with an ``observe_lr`` spec), or an empty set.
    """
    from mixagent.agent.dataset import stated_of

    if not tset.trajectories:
        raise WorldModelError(f"{[str(r) for r in tset.runs]} hold no usable trajectory; collect the setting first")
    proxy = json.loads((tset.runs[0] / "meta.json").read_text()).get("proxy", {})
    if tset.observed_lr is None or "natural" not in proxy:
        raise WorldModelError(f"{tset.runs[0]}/meta.json records no proxy.observed_lr or proxy.natural: the model "
                              f"across settings reads both; collect on a spec with observe_lr: true "
                              f"(configs/collect/suite-v1.yaml does)")
    spec = tset.env["spec"]
    first = tset.trajectories[0][1]
    return SettingRun(Path(tset.runs[0]).name, tset.space, first.start,
                      np.asarray(first.header["start_weights"], np.float64), np.asarray(proxy["natural"], np.float64),
                      np.asarray(tset.observed_lr, np.float64), stated_of(tset, float(spec["reward"]["lam"])),
                      (spec["reward"]["name"], float(spec["reward"]["lam"])), tset.reference, spec,
                      str(proxy.get("base_model", "")))


def _bpb(e: EvalResult, space: DomainSpace) -> np.ndarray:
    return np.array([e.bpb[n] for n in space.names], np.float64)


def _fields(e: EvalResult) -> np.ndarray:
    """``(4,)`` score and accuracy per field (:data:`RUN_OUTPUTS` order)."""
    return np.array([e.scores[f] for f in FIELDS] + [e.accuracy[f] for f in FIELDS], np.float64)


def inputs(run: SettingRun, start: EvalResult, prev: EvalResult, now: EvalResult, weights: np.ndarray,
           next_weights: np.ndarray, t: int) -> tuple[np.ndarray, np.ndarray]:
    """``(K, 6)`` per-domain and ``(10,)`` run-level inputs (:data:`DOMAIN_INPUTS`, :data:`RUN_INPUTS`) of the
    segment ``t`` of ``run`` that trains ``next_weights`` after ``weights``, from the evaluations at the start,
    the last step and now; clipped to ``[-CLIP, CLIP]`` as observations are."""
    space, k = run.space, run.space.k
    b0, bp, bn = _bpb(start, space), _bpb(prev, space), _bpb(now, space)
    s0, sp, sn = (np.array([e.scores[f] for f in FIELDS]) for e in (start, prev, now))
    dom = np.stack([space.field_mask("target").astype(np.float64), k * np.asarray(weights),
                    k * np.asarray(next_weights), k * run.start_weights, bn / b0 - 1.0, (bn - bp) / b0], axis=1)
    lr = run.lrs[min(t, run.horizon - 1)]
    glob = np.concatenate([(sn - s0) / SCORE_SCALE, (sn - sp) / SCORE_SCALE, [t / run.horizon, lr], run.setting_vector])
    return tuple(np.clip(np.nan_to_num(a, nan=0.0, posinf=CLIP, neginf=-CLIP), -CLIP, CLIP).astype(np.float32)
                 for a in (dom, glob))


def _next_eval(run: SettingRun, now: EvalResult, dom_delta: np.ndarray, run_delta: np.ndarray,
               tokens_seen: int) -> EvalResult:
    """The evaluation after a segment that changed ``now`` by the model's outputs."""
    space = run.space
    bpb = _bpb(now, space) + dom_delta * _bpb(run.start, space)
    fields = _fields(now) + run_delta * SCORE_SCALE
    return EvalResult(dict(zip(space.names, map(float, bpb))), dict(zip(FIELDS, map(float, fields[:2]))),
                      dict(zip(FIELDS, map(float, fields[2:]))), tokens_seen, now.eval_tokens)


@dataclasses.dataclass
class SettingsData:
    """Transitions of many settings, padded to the largest ``K``.

    Attributes:
        dom: ``(N, K, 6)`` per-domain inputs; target, valid: ``(N, K)`` target-field and real-domain masks.
        run: ``(N, 10)`` run-level inputs.
        y_dom: ``(N, K)`` per-domain loss changes; y_run: ``(N, 4)`` score and accuracy changes.
        setting: ``(N,)`` the run (setting) of each transition; traj: ``(N,)`` its trajectory; step: ``(N,)`` t.
    """

    dom: np.ndarray
    target: np.ndarray
    valid: np.ndarray
    run: np.ndarray
    y_dom: np.ndarray
    y_run: np.ndarray
    setting: np.ndarray
    traj: np.ndarray
    step: np.ndarray

    def __len__(self) -> int:
        return len(self.run)

    def subset(self, mask: np.ndarray) -> SettingsData:
        return SettingsData(*(getattr(self, f.name)[mask] for f in dataclasses.fields(self)))


def settings_data(tsets: Sequence[Any]) -> tuple[SettingsData, list[SettingRun]]:
    """Every completed step of every one-setting trajectory set as one transition (a branched prefix once), and
    each set's :class:`SettingRun`.

    Raises:
        WorldModelError: see :func:`setting_run`; no completed step at all.
    """
    from mixagent.agent.dataset import _owner

    rows, runs = [], []
    for tset in tsets:
        run = setting_run(tset)
        runs.append(run)
        seen: set[tuple[str, str, int]] = set()
        for name, traj in sorted(tset.trajectories, key=lambda rt: (rt[0], rt[1].id)):
            before = [traj.start] + traj.evals
            weights = [run.start_weights] + [np.asarray(s["weights"], np.float64) for s in traj.steps]
            for t in range(len(traj.evals)):
                key = (name, _owner(tset.headers[name], traj.id, t), t)
                if key in seen:
                    continue
                seen.add(key)
                prev = before[t - 1] if t >= 1 else traj.start
                dom, glob = inputs(run, traj.start, prev, before[t], weights[t], weights[t + 1], t)
                y_dom = (_bpb(before[t + 1], run.space) - _bpb(before[t], run.space)) / _bpb(traj.start, run.space)
                y_run = (_fields(before[t + 1]) - _fields(before[t])) / SCORE_SCALE
                rows.append((dom, glob, y_dom, y_run, run.name, f"{name}/{traj.id}", t))
    if not rows:
        raise WorldModelError("the runs hold no completed step to fit a world model on; collect a suite first "
                              "(mixagent collect --config configs/collect/suite-v1.yaml)")
    kmax, n = max(r[0].shape[0] for r in rows), len(rows)
    dom = np.zeros((n, kmax, len(DOMAIN_INPUTS)), np.float32)
    target, valid, y_dom = (np.zeros((n, kmax), np.float32) for _ in range(3))
    for i, r in enumerate(rows):
        k = r[0].shape[0]
        dom[i, :k], valid[i, :k], y_dom[i, :k] = r[0], 1.0, r[2]
        target[i, :k] = r[0][:, 0]
    data = SettingsData(dom, target, valid, np.stack([r[1] for r in rows]), y_dom,
                        np.stack([r[3] for r in rows]).astype(np.float32), np.array([r[4] for r in rows]),
                        np.array([r[5] for r in rows]), np.array([r[6] for r in rows]))
    return data, runs


def _mlp(sizes: list[int]) -> torch.nn.Sequential:
    layers: list[torch.nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(torch.nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(torch.nn.SiLU())
    return torch.nn.Sequential(*layers)


class _Member(torch.nn.Module):
    """One member: ``h_i = phi([d_i, g])``, field means ``c_source, c_target`` over real domains,
    ``y_i = head_dom([h_i, c_s, c_t, g])``, ``y_run = head_run([c_s, c_t, g])`` (standardised units)."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        d, r = len(DOMAIN_INPUTS), len(RUN_INPUTS)
        self.phi = torch.nn.Sequential(_mlp([d + r, hidden, hidden]), torch.nn.SiLU())
        self.head_dom = _mlp([3 * hidden + r, hidden, 1])
        self.head_run = _mlp([2 * hidden + r, hidden, len(RUN_OUTPUTS)])

    def forward(self, dom: torch.Tensor, target: torch.Tensor, valid: torch.Tensor,
                run: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, k, _ = dom.shape
        h = self.phi(torch.cat([dom, run.unsqueeze(1).expand(b, k, run.shape[-1])], dim=-1))
        pools = []
        for mask in (valid * (1 - target), valid * target):
            pools.append((h * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1.0))
        pooled = torch.cat(pools, dim=-1)
        y_dom = self.head_dom(torch.cat([h, pooled.unsqueeze(1).expand(b, k, pooled.shape[-1]),
                                         run.unsqueeze(1).expand(b, k, run.shape[-1])], dim=-1)).squeeze(-1)
        return y_dom, self.head_run(torch.cat([pooled, run], dim=-1))


class SettingsWorldModel:
    """A fitted ensemble across settings (see the module docstring).

    Attributes:
        members: the ensemble's networks; norm: input and output standardisation; meta: the artifact's meta.
    """

    def __init__(self, members: torch.nn.ModuleList, norm: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        self.members = members.eval()
        self.norm = norm
        self.meta = meta

    def predict(self, dom: np.ndarray, target: np.ndarray, valid: np.ndarray,
                run: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Mean and std over members of ``(N, K)`` per-domain and ``(N, 4)`` run-level changes (real units) for a
        padded batch (:class:`SettingsData`' layout)."""
        n = self.norm
        x_dom = torch.from_numpy(((dom - n["dom_mean"]) / n["dom_std"]).astype(np.float32))
        x_run = torch.from_numpy(((run - n["run_mean"]) / n["run_std"]).astype(np.float32))
        t, v = torch.from_numpy(target.astype(np.float32)), torch.from_numpy(valid.astype(np.float32))
        with torch.inference_mode():
            outs = [m(x_dom, t, v, x_run) for m in self.members]
        field = target.astype(int)  # each domain's outputs are standardised by its field's statistics
        y_dom = np.stack([o[0].numpy() for o in outs]) * n["ydom_std"][field] + n["ydom_mean"][field]
        y_run = np.stack([o[1].numpy() for o in outs]) * n["yrun_std"] + n["yrun_mean"]
        return y_dom.mean(0), y_dom.std(0), y_run.mean(0), y_run.std(0)

    def save(self, out: str | Path) -> Path:
        """Write ``model.safetensors`` and ``meta.json`` into ``out`` (each atomically)."""
        from safetensors.torch import save_file

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        tensors = {f"m{i}.{k}": v.detach().contiguous() for i, m in enumerate(self.members)
                   for k, v in m.state_dict().items()}
        tensors |= {f"norm.{k}": torch.from_numpy(np.asarray(v, np.float32)) for k, v in self.norm.items()}
        atomic_write(out / "model.safetensors", lambda p: save_file(tensors, str(p)))
        self.meta["sha256"] = hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest()
        atomic_write_json(out / "meta.json", self.meta)
        return out


def load_settings_model(path: str | Path) -> SettingsWorldModel:
    """Load an artifact of :meth:`SettingsWorldModel.save`.

    Raises:
        WorldModelError: no artifact there.
        SchemaVersionError: another kind or version.
        CorruptArtifactError: weights that do not match their checksum or the recorded network.
    """
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / "meta.json").is_file() or not (path / "model.safetensors").is_file():
        raise WorldModelError(f"{path} is not a world-model artifact (model.safetensors + meta.json); fit one with "
                              f"mixagent world-model-settings --config configs/world_model/suite-v1.yaml")
    meta = json.loads((path / "meta.json").read_text())
    if (meta.get("kind"), meta.get("version")) != (SETTINGS_MODEL_KIND, SETTINGS_MODEL_VERSION):
        raise SchemaVersionError(f"{path}: {meta.get('kind')!r} version {meta.get('version')!r}, this mixagent reads "
                                 f"{SETTINGS_MODEL_KIND!r} version {SETTINGS_MODEL_VERSION}; refit it")
    if hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest() != meta.get("sha256"):
        raise CorruptArtifactError(f"{path / 'model.safetensors'} does not match the checksum in meta.json; refit "
                                   f"or restore it (git checkout -- {path})")
    tensors = load_file(str(path / "model.safetensors"))
    try:
        members = torch.nn.ModuleList(_Member(int(meta["config"]["hidden"])) for _ in range(meta["config"]["members"]))
        for i, m in enumerate(members):
            m.load_state_dict({k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith(f"m{i}.")})
    except (RuntimeError, KeyError, TypeError, ValueError) as exc:
        raise CorruptArtifactError(f"{path}: tensors do not fit the recorded network ({exc!r}); refit it") from None
    norm = {k.removeprefix("norm."): v.numpy() for k, v in tensors.items() if k.startswith("norm.")}
    return SettingsWorldModel(members, norm, meta)


def fit_settings_model(data: SettingsData, cfg: SettingsModelConfig,
                       progress: Callable[[int, float], None] | None = None) -> SettingsWorldModel:
    """Fit the ensemble on ``data`` (every member on its own bootstrap resample; mean squared error in
    standardised units, per-domain outputs over real domains only, plus the run-level outputs).

    Args:
        data: the training transitions (:func:`settings_data`).
        cfg: the fit.
        progress: called after every epoch with ``(epoch, mean training loss)``.

    Raises:
        ConfigError: bad ``cfg``.
        WorldModelError: fewer than 2 transitions.
    """
    if problems := cfg.check():
        raise ConfigError("model", problems)
    if len(data) < 2:
        raise WorldModelError(f"{len(data)} training transitions: a world model needs at least 2; collect more")
    norm = _standardisation(data)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    members = torch.nn.ModuleList(_Member(cfg.hidden) for _ in range(cfg.members))
    field = data.target.astype(int)
    tensors = [torch.from_numpy(a.astype(np.float32)) for a in (
        (data.dom - norm["dom_mean"]) / norm["dom_std"], data.target, data.valid,
        (data.run - norm["run_mean"]) / norm["run_std"],
        (data.y_dom - norm["ydom_mean"][field]) / norm["ydom_std"][field] * data.valid,
        (data.y_run - norm["yrun_mean"]) / norm["yrun_std"])]
    opt = torch.optim.AdamW(members.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    n, m = len(data), cfg.members
    boot = torch.randint(0, n, (m, n), generator=gen)
    for epoch in range(cfg.epochs):
        order = boot.gather(1, torch.argsort(torch.rand(m, n, generator=gen), dim=1))
        total = 0.0
        for lo in range(0, n, cfg.batch_size):
            loss = torch.zeros(())
            for i, member in enumerate(members):
                dom, tgt, valid, run, y_dom, y_run = (x[order[i, lo:lo + cfg.batch_size]] for x in tensors)
                p_dom, p_run = member(dom, tgt, valid, run)
                loss = loss + (((p_dom - y_dom) * valid) ** 2).sum() / valid.sum() + ((p_run - y_run) ** 2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) / m * min(cfg.batch_size, n - lo)
        if progress is not None:
            progress(epoch, total / n)
    meta = {"kind": SETTINGS_MODEL_KIND, "version": SETTINGS_MODEL_VERSION, "config": dataclasses.asdict(cfg),
            "inputs": {"domain": list(DOMAIN_INPUTS), "run": list(RUN_INPUTS)},
            "outputs": {"domain": "(b' - b) / b0", "run": list(RUN_OUTPUTS), "score_scale": SCORE_SCALE},
            "transitions": len(data), "settings": sorted(map(str, np.unique(data.setting))),
            "versions": {"torch": torch.__version__}}
    return SettingsWorldModel(members, norm, meta)


def _standardisation(data: SettingsData) -> dict[str, np.ndarray]:
    """Means and stds of the inputs (per-domain ones over real domains) and outputs (per-domain ones per field: a
    target domain's loss moves several times as much as a source domain's). A feature (nearly) constant in the
    training settings keeps std 1, so a held-out setting that differs there reads a difference, not 1e6 of one."""
    real = data.valid > 0
    flat = data.dom[real]
    ydom_mean, ydom_std = np.zeros(2), np.ones(2)
    for f in (0, 1):
        vals = data.y_dom[real & (data.target == f)]
        if vals.size:
            ydom_mean[f], ydom_std[f] = vals.mean(), vals.std() + 1e-6
    std = _floored(flat.std(0))
    std[0] = 1.0  # is_target stays 0/1
    mean = flat.mean(0)
    mean[0] = 0.0
    return {"dom_mean": mean, "dom_std": std, "run_mean": data.run.mean(0), "run_std": _floored(data.run.std(0)),
            "ydom_mean": ydom_mean, "ydom_std": ydom_std, "yrun_mean": data.y_run.mean(0),
            "yrun_std": data.y_run.std(0) + 1e-6}


def _floored(std: np.ndarray, floor: float = 1e-3) -> np.ndarray:
    return np.where(std < floor, 1.0, std)


def rollout(model: SettingsWorldModel, run: SettingRun, weights: Sequence[np.ndarray]) -> list[EvalResult]:
    """The evaluation after every segment that the model predicts (ensemble mean) for training ``weights[t]`` in
    segment ``t`` of ``run``'s setting, from its start (``len(weights)`` is the horizon).

    Raises:
        WorldModelError: a schedule whose length is not the setting's horizon.
    """
    if len(weights) != run.horizon:
        raise WorldModelError(f"a schedule of {len(weights)} segments for a setting of {run.horizon}: give one "
                              f"weight vector per segment of the setting")
    target = run.space.field_mask("target").astype(np.float32)[None]
    valid = np.ones_like(target)
    prev = now = run.start
    last = run.start_weights
    evals = []
    for t, w in enumerate(weights):
        dom, glob = inputs(run, run.start, prev, now, last, np.asarray(w, np.float64), t)
        y_dom, _, y_run, _ = model.predict(dom[None], target, valid, glob[None])
        prev, now = now, _next_eval(run, now, y_dom[0].astype(np.float64), y_run[0].astype(np.float64),
                                    now.tokens_seen + int(run.stated["segment_tokens"]))
        evals.append(now)
        last = np.asarray(w, np.float64)
    return evals


def rollout_final(model: SettingsWorldModel, run: SettingRun, weights: Sequence[np.ndarray]) -> EvalResult:
    """The last evaluation of :func:`rollout` (what the grid ranking scores)."""
    return rollout(model, run, weights)[-1]
