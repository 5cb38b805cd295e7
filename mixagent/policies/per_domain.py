"""One policy for any domain space: per-domain inputs through one shared network to one
logit per domain, so the same artifact drives 2, 10 or 52 domains, in any order.

For domain ``i`` of a ``K``-domain space the observation (:mod:`mixagent.env.observation`) gives

* ``d_i = [is_target, K * w_i, K * n_i, b_i / b_i0 - 1, (b_i - b_i_prev) / b_i0]``: the field, the current
  weight and the run's initial (natural) share, both relative to uniform so they mean the same for any
  ``K``, the relative loss and its last change;

and for the run ``g = [source score, target score relative to the start, their last changes, progress,
LR over the peak (1 when not observed)]``; a policy trained on observations with the LR (``meta.json``
``observation.lr``) refuses one without it instead of reading the peak. The initial share ``n`` is the first
observation's weights (the env starts at the natural shares; a deployment at its initial weights), kept for
the run.

The network is a DeepSets encoder with field pooling (Zaheer et al. 2017; Lee et al. 2019):
``h_i = phi([d_i, g])``, ``c_f = mean_{j in field f} h_j`` (zero for an empty field),
``a_i = tanh(rho([h_i, c_source, c_target, g]))``. Permuting the domains permutes the actions and nothing
else (tested). The action goes through the env's action map (``action_to_weights``), like the dense
artifact's. d3rlpy's actors end in a dense ``Linear(features, K)`` head, which ties a network to one ``K``
and one domain order; this small module replaces it, and its training is behaviour cloning in plain torch
(:mod:`mixagent.agent.train_per_domain`).

Artifact: ``policy.safetensors`` (``phi.*``, ``rho.*``) + ``meta.json`` (kind ``mixagent.per_domain_policy``).
``meta.json`` ``training.feature_ranges`` (:mod:`mixagent.policies.ranges`; written by the training, or afterwards
by ``mixagent feature-ranges``) holds the training range of every feature: each per-domain feature but
``is_target`` by field (``domain.source``, ``domain.target``; pooled over that field's domains), and each
run-level feature (``run``). :meth:`PerDomainPolicy.out_of_range` checks an observation against them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mixagent.domains import DomainSpace, DomainWeights, action_to_weights, check_action_mapping
from mixagent.env.observation import OBSERVATION_V2, OBSERVATION_VERSION, SETTING_FEATURES
from mixagent.errors import CorruptArtifactError, SchemaVersionError, UsageError, WeightsError
from mixagent.policies.protocol import RunningState
from mixagent.policies.ranges import RANGES_FORMAT, OutOfRange, bounds, outside, table_problems, value_ranges

__all__ = ["PER_DOMAIN_KIND", "DOMAIN_FEATURES", "RUN_FEATURES", "DOMAIN_FEATURE_NAMES", "RUN_FEATURE_NAMES",
           "RUN_FEATURE_NAMES_V2", "run_feature_names",
           "PerDomainNet", "PerDomainPolicy", "features", "feature_ranges", "write_per_domain_artifact"]

PER_DOMAIN_KIND = "mixagent.per_domain_policy"
FORMAT_VERSION = 1
DOMAIN_FEATURES = 5
RUN_FEATURES = 6
WEIGHTS_FILE = "policy.safetensors"
META_FILE = "meta.json"
DOMAIN_FEATURE_NAMES = ("is_target", "weight", "initial", "loss_rel", "loss_change")
RUN_FEATURE_NAMES = ("source_score", "target_score", "source_change", "target_change", "progress", "lr")
RUN_FEATURE_NAMES_V2 = (*RUN_FEATURE_NAMES, *SETTING_FEATURES)  # observation version 2: the stated setting too
VERSIONS = (OBSERVATION_VERSION, OBSERVATION_V2)
RANGED = DOMAIN_FEATURE_NAMES[1:]  # is_target is the field itself: its ranges are kept per field


def run_feature_names(version: int = OBSERVATION_VERSION) -> tuple[str, ...]:
    """The run-level features of observation ``version`` (1: 6, 2: 11)."""
    return RUN_FEATURE_NAMES_V2 if version == OBSERVATION_V2 else RUN_FEATURE_NAMES


def features(obs: np.ndarray, is_target: np.ndarray, initial: np.ndarray,
             version: int = OBSERVATION_VERSION) -> tuple[np.ndarray, np.ndarray]:
    """``(K, DOMAIN_FEATURES)`` per-domain and ``(R,)`` run-level features of one observation (``R`` =
    ``len(run_feature_names(version))``).

    Args:
        obs: ``(3K+5,)`` or ``(3K+6,)`` observation (version 1), ``(3K+11,)`` (version 2:
            :class:`~mixagent.env.observation.SettingObservationBuilder`).
        is_target: ``(K,)`` 1 for target-field domains.
        initial: ``(K,)`` the run's initial weights.
        version: the observation layout.

    Raises:
        WeightsError: an observation whose size fits no ``K`` of ``is_target``.
    """
    k = len(is_target)
    v2 = version == OBSERVATION_V2
    if v2 and len(obs) != 3 * k + 11:
        raise WeightsError(f"observation has {len(obs)} entries; version 2 of a {k}-domain space gives {3 * k + 11}")
    if not v2 and len(obs) not in (3 * k + 5, 3 * k + 6):
        raise WeightsError(f"observation has {len(obs)} entries; a {k}-domain space gives {3 * k + 5} (or "
                           f"{3 * k + 6} with the learning rate)")
    per = np.stack([is_target, k * obs[:k], k * initial, obs[k:2 * k], obs[2 * k:3 * k]], axis=1)
    if v2:  # the run-level entries as they are: version 2 always carries the LR and the stated setting
        run = obs[3 * k:]
    else:  # without the LR, version 1 reads the peak
        run = np.concatenate([obs[3 * k:3 * k + 5], [obs[3 * k + 5] if len(obs) == 3 * k + 6 else 1.0]])
    return per.astype(np.float32), np.asarray(run, np.float32)


def feature_ranges(dom: np.ndarray, target: np.ndarray, valid: np.ndarray, run: np.ndarray,
                   run_names: tuple[str, ...] = RUN_FEATURE_NAMES) -> dict[str, Any]:
    """The training range of every feature (``meta.json`` ``training.feature_ranges``) of a padded batch of
    training observations.

    Args:
        dom: ``(N, K, DOMAIN_FEATURES)`` per-domain features (padded to the largest ``K``).
        target: ``(N, K)`` 1 for target-field domains; valid: ``(N, K)`` 1 for real (not padding) domains.
        run: ``(N, R)`` run-level features, named ``run_names`` (:func:`run_feature_names`).

    Returns:
        ``{"format", "rows": N, "domain": {"source": {feature: [lo, hi]}, "target": {...}}, "run": {...}}``,
        per-domain features pooled over the domains of each field (``is_target`` left out).
    """
    out: dict[str, Any] = {"format": RANGES_FORMAT, "rows": int(len(run)), "domain": {}}
    for field, want in (("source", 0.0), ("target", 1.0)):
        rows = dom[(valid > 0) & (target == want)]
        out["domain"][field] = value_ranges(RANGED, rows[:, 1:])
    out["run"] = value_ranges(run_names, run)
    return out


def _ranges_problems(table: Any, run_names: tuple[str, ...] = RUN_FEATURE_NAMES) -> list[str]:
    where = "training.feature_ranges"
    if not isinstance(table, dict) or not isinstance(table.get("domain"), dict):
        return [f"{where} is {table!r:.80}; expected {{domain: {{source, target}}, run}}"]
    return [*(p for f in ("source", "target") for p in table_problems(table["domain"].get(f), RANGED,
                                                                    f"{where}.domain.{f}")),
            *table_problems(table.get("run"), run_names, f"{where}.run")]


def _mlp(sizes: list[int], last_act: bool) -> torch.nn.Sequential:
    layers: list[torch.nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(torch.nn.Linear(a, b))
        if last_act or i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


class PerDomainNet(torch.nn.Module):
    """``(B, K, D)`` domain features, ``(B, K)`` target mask, ``(B, R)`` run features -> ``(B, K)`` actions
    in ``[-1, 1]``; a padded batch passes ``valid`` ``(B, K)`` (padding is left out of the field pooling)."""

    def __init__(self, hidden: int = 64, run_features: int = RUN_FEATURES) -> None:
        super().__init__()
        self.hidden, self.run_features = hidden, run_features
        self.phi = _mlp([DOMAIN_FEATURES + run_features, hidden, hidden], last_act=True)
        self.rho = _mlp([3 * hidden + run_features, hidden, 1], last_act=False)

    def forward(self, dom: torch.Tensor, target: torch.Tensor, run: torch.Tensor,
                valid: torch.Tensor | None = None) -> torch.Tensor:
        b, k, _ = dom.shape
        g = run.unsqueeze(1).expand(b, k, run.shape[-1])
        h = self.phi(torch.cat([dom, g], dim=-1))
        valid = torch.ones(b, k, dtype=h.dtype) if valid is None else valid.to(h.dtype)
        pools = []
        for mask in (valid * (1 - target), valid * target):
            n = mask.sum(1, keepdim=True).clamp(min=1.0)
            pools.append(((h * mask.unsqueeze(-1)).sum(1) / n).unsqueeze(1).expand(b, k, self.hidden))
        return torch.tanh(self.rho(torch.cat([h, *pools, g], dim=-1)).squeeze(-1))


def write_per_domain_artifact(out: Path, net: PerDomainNet, meta: dict[str, Any], observe_lr: bool = False,
                              observation: int = OBSERVATION_VERSION) -> Path:
    """``policy.safetensors`` + ``meta.json`` (kind, format version, checksum, network, action map, the
    training's ``meta``) into ``out``; ``observe_lr``: trained on observations that end with the learning rate
    (a deployment then passes it to the scheduler; version 2 always observes it); ``observation``: the layout
    version it was trained on."""
    from safetensors.torch import save

    from mixagent.paths import atomic_write_bytes, atomic_write_json

    out.mkdir(parents=True, exist_ok=True)
    raw = save({k: v.detach().contiguous() for k, v in net.state_dict().items()})
    atomic_write_bytes(out / WEIGHTS_FILE, raw)
    digest = hashlib.sha256(raw).hexdigest()
    full = {"kind": PER_DOMAIN_KIND, "format_version": FORMAT_VERSION, "weights_sha256": digest,
            "observation": {"version": observation, "lr": observe_lr or observation == OBSERVATION_V2},
            "network": {"hidden": net.hidden, **({"run_features": net.run_features}
                                                 if net.run_features != RUN_FEATURES else {})},
            "versions": {"torch": torch.__version__}, **meta}
    atomic_write_json(out / META_FILE, full)
    return out


class PerDomainPolicy(RunningState):
    """A per-domain policy artifact; a :class:`~mixagent.policies.MixingPolicy` in any domain space. Its
    running state is the run's initial weights (a resumed deployment keeps reading them).

    Args:
        path: the artifact directory.

    Raises:
        CorruptArtifactError: missing files, a checksum mismatch, tensors that do not fit the network, recorded
            feature ranges that are malformed.
        SchemaVersionError: another kind or format version, or another observation version.
    """

    def __init__(self, path: str | Path) -> None:
        from safetensors.torch import load

        self.path = path = Path(path)
        try:
            meta = json.loads((path / META_FILE).read_text())
            raw = (path / WEIGHTS_FILE).read_bytes()
        except (OSError, ValueError) as exc:
            raise CorruptArtifactError(f"policy artifact {path}: {type(exc).__name__}: {exc}; re-export it") from None
        if meta.get("kind") != PER_DOMAIN_KIND or meta.get("format_version") != FORMAT_VERSION:
            raise SchemaVersionError(f"{path / META_FILE}: kind {meta.get('kind')!r} version "
                                     f"{meta.get('format_version')!r}, this mixagent reads {PER_DOMAIN_KIND!r} "
                                     f"version {FORMAT_VERSION}")
        self.observation_version = meta.get("observation", {}).get("version")
        if self.observation_version not in VERSIONS:
            raise SchemaVersionError(f"{path}: trained on observation version {self.observation_version!r}, "
                                     f"this mixagent builds {' and '.join(map(str, VERSIONS))}; retrain it")
        self.run_names = run_feature_names(self.observation_version)
        if hashlib.sha256(raw).hexdigest() != meta.get("weights_sha256"):
            raise CorruptArtifactError(f"{path / WEIGHTS_FILE} does not match the sha256 recorded in {META_FILE}")
        try:
            self.net = PerDomainNet(int(meta["network"]["hidden"]),
                                    int(meta["network"].get("run_features", RUN_FEATURES)))
            if self.net.run_features != len(self.run_names):
                raise ValueError(f"{self.net.run_features} run features, observation version "
                                 f"{self.observation_version} has {len(self.run_names)}")
            self.net.load_state_dict(load(raw))
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise CorruptArtifactError(f"{path}: tensors do not fit the recorded network ({exc}); re-export it") \
                from None
        self.net.eval()
        ranges = meta.get("training", {}).get("feature_ranges")
        if ranges is not None and (problems := _ranges_problems(ranges, self.run_names)):
            raise CorruptArtifactError(f"{path / META_FILE}: {'; '.join(problems)}; record them again with "
                                       f"`mixagent feature-ranges --artifact {path}`")
        self.meta = meta
        self.temperature = float(meta["action"]["temperature"])
        self.floor = float(meta["action"]["floor"])
        self.observe_lr = bool(meta["observation"].get("lr", False))  # the scheduler then passes the LR
        self.space: DomainSpace | None = None
        self.initial: np.ndarray | None = None

    STATE = ("initial",)

    def reset(self, space: DomainSpace) -> None:
        """Start a run in ``space`` (any number of domains, any order)."""
        check_action_mapping(space.k, self.temperature, self.floor)
        self.space = space
        self.is_target = space.field_mask("target").astype(np.float32)
        self.initial: np.ndarray | None = None

    @property
    def feature_ranges(self) -> dict[str, Any] | None:
        """The training range of every feature (``meta.json`` ``training.feature_ranges``); ``None`` when the
        artifact does not record it (``mixagent feature-ranges --artifact PATH`` recomputes it)."""
        return self.meta.get("training", {}).get("feature_ranges")

    def _inputs(self, observation: np.ndarray, keep: bool) -> tuple[np.ndarray, np.ndarray]:
        """The ``(K, D)`` and ``(R,)`` features of ``observation``; ``keep`` records the run's initial weights
        from the first observation (an act does, a check does not)."""
        if self.space is None:
            raise UsageError(f"{self!r}: call reset(space) before act()")
        obs = np.nan_to_num(np.asarray(observation, np.float64), nan=0.0, posinf=10.0, neginf=-10.0)
        k = self.space.k
        v1 = self.observation_version == OBSERVATION_VERSION
        if v1 and self.observe_lr and obs.size == 3 * k + 5:  # features() would read LR = the peak at every step
            raise UsageError(
                f"policy {self.path} observes the learning rate (meta.json observation.lr true): expected "
                f"{3 * k + 6} entries (3K+6 for K={k}, the last the coming LR over the peak), got {obs.size} "
                f"(3K+5, no learning rate); run it in an env that observes the LR (env spec observe_lr: true, or "
                f"env_overrides observe_lr=true), or through the deploy job / MixingScheduler, which pass the LR "
                f"to a policy that observes it")
        initial = self.initial if self.initial is not None else obs[:k].copy()
        if keep:
            self.initial = initial
        return features(obs, self.is_target, initial, self.observation_version)

    def _forward(self, dom: np.ndarray, run: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            a = self.net(torch.from_numpy(dom)[None], torch.from_numpy(self.is_target)[None],
                         torch.from_numpy(run)[None])[0].numpy()
        return np.nan_to_num(a.astype(np.float64), nan=0.0)

    def _bounds(self) -> tuple[dict[str, np.ndarray], np.ndarray]:
        ranges = self.feature_ranges
        if ranges is None:
            raise UsageError(f"policy {self.path} records no feature ranges (meta.json training.feature_ranges): "
                             f"run `mixagent feature-ranges --artifact {self.path}`")
        return {f: bounds(ranges["domain"][f], RANGED) for f in ("source", "target")}, \
            bounds(ranges["run"], self.run_names)

    def action(self, observation: np.ndarray) -> np.ndarray:
        """``(K,)`` raw action in ``[-1, 1]``.

        Raises:
            UsageError: before ``reset``, or a policy that observes the learning rate handed an observation
                without it.
            WeightsError: an observation whose size fits no layout of the space.
        """
        return self._forward(*self._inputs(observation, keep=True))

    def act(self, observation: np.ndarray) -> DomainWeights:
        a = self.action(observation)
        return action_to_weights(self.space, a, self.temperature, self.floor)  # type: ignore[arg-type]

    def out_of_range(self, observation: np.ndarray, tolerance: float = 0.05) -> list[OutOfRange]:
        """The features of ``observation`` outside the training range by more than ``tolerance`` of its width
        (:mod:`mixagent.policies.ranges`): each domain's against its field's ranges (named ``loss_rel[d]``),
        the run-level ones as they are; empty when it is in range. Changes no running state.

        Raises:
            UsageError: before ``reset``, an artifact without recorded ranges, or an observation without the
                learning rate for a policy that observes it.
        """
        per_field, run_lohi = self._bounds()
        dom, run = self._inputs(observation, keep=False)
        names = self.space.names  # type: ignore[union-attr]
        found = []
        for i in range(len(names)):
            lohi = per_field["target" if self.is_target[i] else "source"]
            found += outside([f"{n}[{names[i]}]" for n in RANGED], dom[i, 1:], lohi, tolerance)
        return found + outside(self.run_names, run, run_lohi, tolerance)

    def act_clipped(self, observation: np.ndarray) -> DomainWeights:
        """:meth:`act` on the observation's features clipped into their training ranges (each domain's into its
        field's); the running state advances as with ``act``.

        Raises:
            UsageError: as :meth:`out_of_range`.
        """
        per_field, run_lohi = self._bounds()
        dom, run = self._inputs(observation, keep=True)
        for i in range(dom.shape[0]):
            lohi = per_field["target" if self.is_target[i] else "source"]
            dom[i, 1:] = np.clip(dom[i, 1:], lohi[:, 0], lohi[:, 1])
        run = np.clip(run, run_lohi[:, 0], run_lohi[:, 1]).astype(np.float32)
        a = self._forward(dom, run)
        return action_to_weights(self.space, a, self.temperature, self.floor)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"PerDomainPolicy({str(self.path)!r}, any K)"
