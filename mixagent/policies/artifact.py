"""The policy artifact: ``policy.safetensors`` + ``meta.json``, and :class:`AgentPolicy`, its loader.

Loading needs plain torch and safetensors, never d3rlpy or pickle. The network is the greedy actor every
supported d3rlpy algorithm shares: ``tanh(head(mlp(standardise(obs))))`` with ReLU hidden layers; the
action then goes through the env's action map (``mixagent.domains.action_to_weights``).

``policy.safetensors`` holds ``layers.{i}.weight/bias`` (hidden layers), ``head.weight/bias``,
``obs_mean`` and ``obs_std``; ``meta.json`` holds everything else (format below, ``FORMAT_VERSION``);
``observation.lr`` (optional, default false) marks a policy trained on an ``observe_lr`` env, whose
observation ends with the learning rate over the peak (``3K + 6``). ``training.feature_ranges`` (optional;
written by ``mixagent train-agent``) holds the training range of every observation entry,
``{"observation": {name: [lo, hi]}}`` in the layout's order (:func:`mixagent.env.observation.observation_names`,
:mod:`mixagent.policies.ranges`).
"""

from __future__ import annotations

import hashlib
import json
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mixagent.config import is_int, is_number
from mixagent.domains import (
    FIELDS,
    MIN_TEMPERATURE,
    DomainSpace,
    DomainWeights,
    action_to_weights,
    check_action_mapping,
)
from mixagent.env.observation import OBSERVATION_VERSION, observation_names
from mixagent.errors import CorruptArtifactError, SchemaVersionError, UsageError, WeightsError
from mixagent.paths import atomic_write_bytes, atomic_write_json
from mixagent.policies.ranges import OutOfRange, bounds, outside, table_problems

__all__ = ["FORMAT_VERSION", "AgentPolicy", "load_policy", "write_artifact", "random_artifact", "ArtifactMismatchError",
           "meta_problems", "tensor_problem"]

FORMAT_VERSION = 1
KIND = "mixagent.policy"
WEIGHTS_FILE = "policy.safetensors"
META_FILE = "meta.json"


class ArtifactMismatchError(WeightsError):
    """A policy artifact was trained for another domain space or observation version than it is used in."""


def write_artifact(out: Path, tensors: Mapping[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """Write ``out/policy.safetensors`` and ``out/meta.json`` (each through a temporary file and an atomic
    rename; the meta records the weights' sha256, so a torn or swapped pair is detected on load).

    Raises:
        CorruptArtifactError: a tensor holds NaN or Inf (nothing is written).
    """
    from safetensors.torch import save

    hidden = meta.get("network", {}).get("hidden")
    problem = tensor_problem(tensors, len(hidden) if isinstance(hidden, list) else -1)
    problems = ([problem] if problem else []) + meta_problems(meta)
    if problems:  # such an artifact could never be loaded: say so where it is made, and write nothing
        raise CorruptArtifactError(f"refusing to write policy artifact {out}: {'; '.join(problems)}"
                                   + (" (the training diverged; lower the learning rates or resume from an earlier "
                                      "checkpoint)" if problem and "non-finite" in problem else ""))
    out.mkdir(parents=True, exist_ok=True)
    raw = save({k: v.detach().to("cpu", torch.float32).contiguous() for k, v in tensors.items()})
    digest = hashlib.sha256(raw).hexdigest()
    atomic_write_bytes(out / WEIGHTS_FILE, raw)
    full = {"kind": KIND, "format_version": FORMAT_VERSION, "weights_sha256": digest, **meta,
            "versions": {"torch": torch.__version__, "python": platform.python_version(), **meta.get("versions", {})}}
    atomic_write_json(out / META_FILE, full)
    return out


def tensor_problem(tensors: Mapping[str, torch.Tensor], layers: int) -> str | None:
    """What is wrong with an artifact's tensors for ``layers`` hidden layers (``None`` when they fit):
    non-finite values, ``obs_std <= 0``, or tensors the network does not have (or lacks)."""
    bad = sorted(k for k, v in tensors.items() if not torch.isfinite(v).all())
    if bad:
        return f"non-finite tensors {bad}"
    want = {f"layers.{i}.{p}" for i in range(max(layers, 0)) for p in ("weight", "bias")}
    want |= {"head.weight", "head.bias", "obs_mean", "obs_std"}
    if set(tensors) != want:
        return (f"tensors {sorted(set(tensors) - want)} are not in a network of {layers} hidden layers and "
                f"{sorted(want - set(tensors))} are missing")
    if not (tensors["obs_std"] > 0).all():
        return "obs_std has entries <= 0"
    return None


def meta_problems(meta: dict[str, Any]) -> list[str]:
    """Every invalid field of an artifact's ``meta.json`` (types, finite numbers, ranges, sizes), named by
    its path, e.g. ``action.temperature is nan; expected a finite number > 0``. Empty when it is valid."""

    def get(dotted: str) -> Any:
        node: Any = meta
        for key in dotted.split("."):
            node = node.get(key) if isinstance(node, dict) else None
        return node

    problems = []
    names, fields = get("domains.names"), get("domains.fields")
    if not (isinstance(names, list) and names and all(isinstance(n, str) and n for n in names)
            and len(set(names)) == len(names)):
        problems.append(f"domains.names is {names!r}; expected a list of unique domain names")
        names = None
    if not (isinstance(fields, list) and all(f in FIELDS for f in fields) and names and len(fields) == len(names)):
        problems.append(f"domains.fields is {fields!r}; expected one of {FIELDS} per domain")
    for key in ("observation.version", "observation.dim"):
        if not is_int(get(key), 1):
            problems.append(f"{key} is {get(key)!r}; expected a positive integer")
    lr, dim = get("observation.lr"), get("observation.dim")
    if lr not in (None, True, False):
        problems.append(f"observation.lr is {lr!r}; expected true (trained on an observe_lr env) or false")
    elif names and is_int(dim, 1) and dim != 3 * len(names) + 5 + int(bool(lr)):
        problems.append(f"observation.dim is {dim}; {len(names)} domains give 3K+5 = {3 * len(names) + 5} "
                        f"(3K+6 with observation.lr true): set observation.lr to what the policy was trained "
                        f"on, or retrain it")
    temperature, floor = get("action.temperature"), get("action.floor")
    if not (is_number(temperature) and temperature >= MIN_TEMPERATURE):
        problems.append(f"action.temperature is {temperature!r}; expected a finite number >= {MIN_TEMPERATURE}")
    if not (is_number(floor) and floor >= 0 and (not names or floor * len(names) < 1)):
        problems.append(f"action.floor is {floor!r}; expected a finite number with 0 <= floor * K < 1")
    hidden = get("network.hidden")
    if not (isinstance(hidden, list) and all(is_int(h, 1) for h in hidden)):
        problems.append(f"network.hidden is {hidden!r}; expected a list of positive layer widths")
    return problems


def _corrupt(path: Path, what: str) -> CorruptArtifactError:
    return CorruptArtifactError(f"policy artifact {path}: {what}; re-export it with `mixagent train-agent "
                                f"--config <its config> --resume` (or train again)")


class AgentPolicy:
    """A trained mixing policy loaded from an artifact directory; a :class:`~mixagent.policies.MixingPolicy`.

    Args:
        path: the artifact directory (``policy.safetensors`` + ``meta.json``).
        device: torch device for the forward pass (``cpu`` by default; one decision is tiny).

    Raises:
        CorruptArtifactError: missing or unreadable files, a checksum mismatch, a ``meta.json`` field of the
            wrong type or out of range (non-finite temperature, floor * K >= 1, ...; named in the message),
            non-finite tensors, or tensors that do not fit the recorded network shape.
        SchemaVersionError: an artifact format or kind this code does not read.
    """

    def __init__(self, path: str | Path, device: str = "cpu") -> None:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        self.path = path = Path(path)
        try:
            meta = json.loads((path / META_FILE).read_text())
        except FileNotFoundError:
            raise _corrupt(path, f"no {META_FILE} (is this an artifact directory?)") from None
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise _corrupt(path, f"{META_FILE} is not valid JSON ({exc})") from None
        if not isinstance(meta, dict) or meta.get("kind") != KIND:
            raise SchemaVersionError(f"{path / META_FILE} is not a mixagent policy artifact (kind "
                                     f"{meta.get('kind') if isinstance(meta, dict) else None!r}, expected {KIND!r})")
        if meta.get("format_version") != FORMAT_VERSION:
            raise SchemaVersionError(f"{path / META_FILE} has format_version {meta.get('format_version')!r}; this "
                                     f"mixagent reads version {FORMAT_VERSION}: upgrade mixagent or re-export the "
                                     f"policy")
        try:
            raw = (path / WEIGHTS_FILE).read_bytes()
        except OSError:
            raise _corrupt(path, f"{WEIGHTS_FILE} is missing or unreadable") from None
        if hashlib.sha256(raw).hexdigest() != meta.get("weights_sha256"):
            raise _corrupt(path, f"{WEIGHTS_FILE} does not match the sha256 recorded in {META_FILE}")
        problems = meta_problems(meta)
        if problems:
            raise _corrupt(path, f"{META_FILE} has invalid fields: {'; '.join(problems)}")
        try:
            tensors = load_file(str(path / WEIGHTS_FILE), device=device)
            problem = tensor_problem(tensors, len(meta["network"]["hidden"]))
            if problem:
                raise ValueError(problem)
            self.meta = meta
            self.names: tuple[str, ...] = tuple(meta["domains"]["names"])
            self.fields: tuple[str, ...] = tuple(meta["domains"]["fields"])
            self.observation_version = int(meta["observation"]["version"])
            self.obs_dim = int(meta["observation"]["dim"])
            self.observe_lr = bool(meta["observation"].get("lr", False))  # trained on an observe_lr env
            self.temperature = float(meta["action"]["temperature"])
            self.floor = float(meta["action"]["floor"])
            hidden = [int(h) for h in meta["network"]["hidden"]]
            layers: list[torch.nn.Module] = []
            for i, width in enumerate(hidden):
                lin = torch.nn.Linear(tensors[f"layers.{i}.weight"].shape[1], width)
                lin.load_state_dict({"weight": tensors[f"layers.{i}.weight"], "bias": tensors[f"layers.{i}.bias"]})
                layers += [lin, torch.nn.ReLU()]
            head = torch.nn.Linear(hidden[-1] if hidden else self.obs_dim, len(self.names))
            head.load_state_dict({"weight": tensors["head.weight"], "bias": tensors["head.bias"]})
            self.net = torch.nn.Sequential(*layers, head, torch.nn.Tanh()).to(device).eval()
            self.mean = tensors["obs_mean"].reshape(1, self.obs_dim)
            self.std = tensors["obs_std"].reshape(1, self.obs_dim)
            self.net(torch.zeros(1, self.obs_dim, device=device))  # shapes fit end to end
        except (KeyError, TypeError, ValueError, RuntimeError, SafetensorError) as exc:
            raise _corrupt(path, f"tensors or meta do not fit together ({type(exc).__name__}: {exc})") from None
        check_action_mapping(len(self.names), self.temperature, self.floor)
        self.feature_names = observation_names(self.names, self.observe_lr)
        ranges = self.feature_ranges
        if ranges is not None and (bad := table_problems(ranges.get("observation") if isinstance(ranges, dict)
                                                          else None, self.feature_names,
                                                          "training.feature_ranges.observation")):
            raise _corrupt(path, f"{META_FILE} has invalid fields: {'; '.join(bad)}")
        self.device = device
        self.space: DomainSpace | None = None

    # -- MixingPolicy --------------------------------------------------------------------------------
    def reset(self, space: DomainSpace) -> None:
        """Start a run in ``space``, which must be the artifact's domain space (same names, order, fields).

        Raises:
            ArtifactMismatchError: naming the differing domains, or an observation version mismatch.
        """
        if tuple(space.names) != self.names or tuple(space.fields) != self.fields:
            missing = [n for n in self.names if n not in space.names]
            extra = [n for n in space.names if n not in self.names]
            detail = (f"the policy's domains missing from the space: {missing}; the space's domains the policy "
                      f"does not know: {extra}" if missing or extra else
                      "same domains in another order or with other fields: "
                      f"policy {list(zip(self.names, self.fields))}, space {list(zip(space.names, space.fields))}")
            raise ArtifactMismatchError(f"policy {self.path} was trained for domain space "
                                        f"{self.meta['domains'].get('space')!r}, not {space.name!r} ({detail}); use "
                                        f"a policy trained on this space, or run in the policy's space")
        if self.observation_version != OBSERVATION_VERSION:
            raise ArtifactMismatchError(f"policy {self.path} expects observation version {self.observation_version}, "
                                        f"this mixagent builds version {OBSERVATION_VERSION}; use a matching mixagent "
                                        f"or retrain the policy")
        self.space = space

    def action(self, observation: np.ndarray) -> np.ndarray:
        """The raw action in ``[-1, 1]^K`` (non-finite inputs read as 0; the output is always finite)."""
        x = torch.as_tensor(np.nan_to_num(np.asarray(observation, np.float32), nan=0.0, posinf=10.0, neginf=-10.0),
                            device=self.device).reshape(1, -1)
        if x.shape[1] != self.obs_dim:
            raise ValueError(f"observation has {x.shape[1]} entries, this policy takes {self.obs_dim} "
                             f"(ObservationBuilder layout for {len(self.names)} domains)")
        with torch.inference_mode():
            a = self.net((x - self.mean) / self.std)[0].cpu().numpy()
        return np.nan_to_num(a, nan=0.0)  # a NaN weight (from a corrupt training run) falls back to uniform

    def act(self, observation: np.ndarray) -> DomainWeights:
        if self.space is None:
            raise UsageError(f"{self!r}: call reset(space) before act()")
        return action_to_weights(self.space, self.action(observation), self.temperature, self.floor)

    # -- training range (mixagent.policies.ranges.RangeChecked) ---------------------------------------
    @property
    def feature_ranges(self) -> dict[str, Any] | None:
        """The training range of every observation entry (``meta.json`` ``training.feature_ranges``); ``None``
        when the artifact does not record it (trained before artifacts did: retrain it)."""
        return self.meta.get("training", {}).get("feature_ranges")

    def _bounds(self) -> np.ndarray:
        if self.feature_ranges is None:
            raise UsageError(f"policy {self.path} records no feature ranges (meta.json training.feature_ranges): "
                             f"retrain it with `mixagent train-agent`, which records them")
        return bounds(self.feature_ranges["observation"], self.feature_names)

    def _observation(self, observation: np.ndarray) -> np.ndarray:
        x = np.nan_to_num(np.asarray(observation, np.float64), nan=0.0, posinf=10.0, neginf=-10.0).reshape(-1)
        if x.size != self.obs_dim:
            raise ValueError(f"observation has {x.size} entries, this policy takes {self.obs_dim} "
                             f"(ObservationBuilder layout for {len(self.names)} domains)")
        return x

    def out_of_range(self, observation: np.ndarray, tolerance: float = 0.05) -> list[OutOfRange]:
        """The entries of ``observation`` outside their training range by more than ``tolerance`` of its width
        (named as in :func:`~mixagent.env.observation.observation_names`); empty when it is in range.

        Raises:
            UsageError: an artifact without recorded ranges. ValueError: an observation of another size.
        """
        return outside(self.feature_names, self._observation(observation), self._bounds(), tolerance)

    def act_clipped(self, observation: np.ndarray) -> DomainWeights:
        """:meth:`act` on the observation clipped into its training range, entry by entry."""
        lohi = self._bounds()
        return self.act(np.clip(self._observation(observation), lohi[:, 0], lohi[:, 1]))

    def __repr__(self) -> str:
        return f"AgentPolicy({str(self.path)!r}, algo={self.meta.get('algo')!r}, k={len(self.names)})"


def load_policy(path: str | Path, device: str = "cpu") -> AgentPolicy | Any:
    """Load a policy artifact directory: a dense one (:class:`AgentPolicy`, one domain space) or a per-domain
    one (:class:`~mixagent.policies.per_domain.PerDomainPolicy`, any domain space), by its ``meta.json`` kind."""
    from mixagent.policies.per_domain import PER_DOMAIN_KIND, PerDomainPolicy

    if Path(path).is_dir() and not (Path(path) / META_FILE).exists():
        raise CorruptArtifactError(f"{path} is not a policy artifact directory (it has no {META_FILE}): give a "
                                   f"directory written by `mixagent train-agent` (runs/agent/<name>/sft or "
                                   f"rl) or `mixagent per-domain`, or a baseline such as replay:0.5")
    try:
        kind = json.loads((Path(path) / META_FILE).read_text()).get("kind")
    except (OSError, ValueError, AttributeError):
        kind = None  # AgentPolicy raises the typed error
    if kind == PER_DOMAIN_KIND:
        return PerDomainPolicy(path)
    return AgentPolicy(path, device)


def random_artifact(out: Path, space: DomainSpace, hidden: Sequence[int] = (64, 64), seed: int = 0) -> Path:
    """A randomly initialised policy artifact for ``space`` (timing, tests and demos before an agent is
    trained; its mixtures are arbitrary)."""
    from mixagent.env.observation import ObservationBuilder  # the artifact module itself stays light

    g = torch.Generator().manual_seed(seed)
    k, dim = space.k, ObservationBuilder(space).dim
    widths = [dim, *hidden]
    tensors = {f"layers.{i}.{p}": torch.randn(*((o, n) if p == "weight" else (o,)), generator=g) * 0.1
               for i, (n, o) in enumerate(zip(widths, widths[1:])) for p in ("weight", "bias")}
    tensors |= {"head.weight": torch.randn(k, widths[-1], generator=g) * 0.1, "head.bias": torch.zeros(k),
                "obs_mean": torch.zeros(dim), "obs_std": torch.ones(dim)}
    meta = {"algo": "random",
            "domains": {"names": list(space.names), "fields": list(space.fields), "space": space.name},
            "observation": {"version": OBSERVATION_VERSION, "dim": dim}, "action": {"temperature": 0.25, "floor": 0.0},
            "network": {"hidden": list(hidden)}}
    return write_artifact(Path(out), tensors, meta)
