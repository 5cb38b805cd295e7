"""Domain spaces and domain weights: the single source of truth for index <-> name and action -> weights.

A :class:`DomainSpace` is loaded from YAML (``configs/spaces/*.yaml``). Each domain belongs to a field
(``source`` or ``target``) and selects its data from built corpora: whole corpora (``corpora: [wiki]``) or
one k-means cluster of a field's documents (``cluster: 3`` of a ``clusters`` block, built by
:mod:`mixagent.data.labeller`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mixagent.config import from_dict, is_number, load_yaml
from mixagent.errors import ActionError, ConfigError, UnknownDomainError, WeightsError, suggest

__all__ = [
    "Domain",
    "ClusterSpec",
    "DomainSpace",
    "DomainWeights",
    "action_to_weights",
    "check_action_mapping",
    "weights_to_action",
    "FIELDS",
]

FIELDS = ("source", "target")
WEIGHT_TOL = 1e-6
MIN_TEMPERATURE = 1e-6  # the action map divides actions in [-1, 1] by it; far smaller values overflow to inf


@dataclasses.dataclass(frozen=True)
class Domain:
    """One domain of a space.

    Args:
        name: unique name, used as the key of weights on disk.
        field: ``source`` (the field we must not forget) or ``target`` (the field we learn).
        corpora: corpus names (see ``mixagent data list``) whose documents form this domain.
        cluster: when set, only documents the field's labeller put in this cluster.
        match: when set, only passages whose id matches this regular expression (``re.search``), e.g.
            ``'^C_'`` for CHAMP's concepts or ``'-ref#'`` for its reference solutions: sub-domains of one
            corpus that keep its document-level train/validation/test split.
    """

    name: str
    field: str
    corpora: list[str]
    cluster: int | None = None
    match: str | None = None

    ADDED_FIELDS = ("match",)

    def check(self) -> list[str]:
        problems = []
        if self.match is not None:
            try:
                re.compile(self.match)
            except re.error as exc:
                problems.append(f"domain {self.name!r}: match {self.match!r} is not a regular expression ({exc})")
            if self.cluster is not None:
                problems.append(f"domain {self.name!r}: use either match or a clusters block, not both")
        if self.field not in FIELDS:
            problems.append(f"domain {self.name!r}: field must be one of {FIELDS}, got {self.field!r}")
        if not self.corpora:
            problems.append(f"domain {self.name!r}: corpora must list at least one corpus")
        if self.cluster is not None:
            problems.append(f"domain {self.name!r}: 'cluster' is set by a 'clusters' block, not by hand; "
                            f"remove it or describe the split under 'clusters'")
        return problems


@dataclasses.dataclass(frozen=True)
class ClusterSpec:
    """Split every document of ``corpora`` into ``k`` TF-IDF + k-means clusters, one domain each.

    Args:
        field: the field these domains belong to.
        corpora: corpora whose training documents are clustered.
        k: number of clusters (domains) to make.
        prefix: domain names are ``{prefix}{i:02d}``.
    """

    field: str
    corpora: list[str]
    k: int
    prefix: str

    def check(self) -> list[str]:
        problems = []
        if self.field not in FIELDS:
            problems.append(f"clusters {self.prefix!r}: field must be one of {FIELDS}, got {self.field!r}")
        if self.k < 1:
            problems.append(f"clusters {self.prefix!r}: k must be >= 1, got {self.k}")
        return problems


@dataclasses.dataclass(frozen=True)
class _SpaceFile:
    """YAML schema of a domain space: explicit ``domains`` and/or generated ``clusters``."""

    name: str
    domains: list[Domain] = dataclasses.field(default_factory=list)
    clusters: list[ClusterSpec] = dataclasses.field(default_factory=list)

    def check(self) -> list[str]:
        if not self.domains and not self.clusters:
            return ["a domain space needs 'domains' or 'clusters'"]
        groups = [tuple(c.corpora) for c in self.clusters]
        return [f"clusters: two blocks cluster the same corpora {list(g)}; merge them into one block with the "
                f"total k" for g in sorted(set(groups)) if groups.count(g) > 1]


def _unknown_corpora(raw: object, known: Collection[str]) -> list[str]:
    """Problems for corpus names in a space file's ``domains``/``clusters`` blocks that ``known`` lacks."""
    blocks = [b for key in ("domains", "clusters") for b in (raw.get(key) or [] if isinstance(raw, dict) else [])]
    names = [c for b in blocks if isinstance(b, dict) for c in (b.get("corpora") or []) if isinstance(c, str)]
    return [f"unknown corpus {n!r}{suggest(n, known)}; known corpora: {', '.join(known)}"
            for n in dict.fromkeys(names) if n not in known]


class DomainSpace:
    """Ordered domains with their fields and data selectors.

    Args:
        name: the space's name (e.g. ``math-natural``).
        domains: ordered domains; the order defines weight and action indices.
        fields: fields that must be present (a mixing space needs both; pre-training uses only source).
    """

    def __init__(self, name: str, domains: Sequence[Domain], fields: Sequence[str] = FIELDS) -> None:
        names = [d.name for d in domains]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"domain space {name!r}", [f"duplicate domain names: {dupes}"])
        present = {d.field for d in domains}
        if not set(fields) <= present:
            raise ConfigError(f"domain space {name!r}",
                              [f"needs at least one source and one target domain, has fields {sorted(present)}"])
        self.name = name
        self.domains = tuple(domains)
        self.names = tuple(names)
        self.fields = tuple(d.field for d in domains)
        self._index = {n: i for i, n in enumerate(names)}

    @property
    def k(self) -> int:
        """Number of domains."""
        return len(self.domains)

    def index(self, name: str) -> int:
        """Index of a domain name; an unknown name raises with the closest suggestion."""
        try:
            return self._index[name]
        except KeyError:
            raise UnknownDomainError(
                f"domain {name!r} is not in space {self.name!r}{suggest(name, self.names)}; "
                f"known domains: {', '.join(self.names[:12])}{' ...' if self.k > 12 else ''}") from None

    def field_mask(self, field: str) -> np.ndarray:
        """Boolean mask of the domains in ``field``."""
        return np.array([f == field for f in self.fields])

    @property
    def corpora(self) -> list[str]:
        """Every corpus the space reads, in first-use order."""
        seen: dict[str, None] = {}
        for d in self.domains:
            seen.update(dict.fromkeys(d.corpora))
        return list(seen)

    def describe(self) -> dict[str, object]:
        """JSON form, stored in trajectories and artifacts so readers can check compatibility."""
        return {"name": self.name, "domains": [dataclasses.asdict(d) for d in self.domains]}

    @classmethod
    def from_yaml(cls, path: str | Path, corpora: Collection[str] | None = None) -> DomainSpace:
        """Load a space; ``clusters`` blocks expand to ``k`` domains each (data resolved by the labeller).

        Args:
            path: the space's YAML file (``configs/spaces/*.yaml``).
            corpora: the corpus names that exist; when given, unknown corpora are reported with the other
                problems (``mixagent.data.load_space`` passes the data layer's registry).

        Raises:
            ConfigError: every problem of the file at once, with "did you mean" suggestions.
        """
        path = Path(path)
        if not path.is_file():
            raise ConfigError(str(path), [f"domain space file {str(path)!r} does not exist (see configs/spaces/)"])
        raw = load_yaml(path)
        unknown = _unknown_corpora(raw, corpora) if corpora is not None else []
        try:
            spec = from_dict(_SpaceFile, raw, str(path))
        except ConfigError as exc:
            raise ConfigError(exc.where, exc.problems + unknown) from None
        if unknown:
            raise ConfigError(str(path), unknown)
        domains = list(spec.domains)
        for c in spec.clusters:  # cluster domains are made here, past Domain.check's hand-set guard
            domains += [Domain(f"{c.prefix}{i:02d}", c.field, list(c.corpora), cluster=i) for i in range(c.k)]
        return cls(spec.name, domains)

    def __repr__(self) -> str:
        return f"DomainSpace({self.name!r}, k={self.k})"


class DomainWeights:
    """A validated mixture: float64, length K, every entry >= floor and finite, sum 1 (tol 1e-6).

    Args:
        space: the domain space the weights index.
        values: one weight per domain, in the space's order.
        floor: minimum allowed weight.
    """

    __slots__ = ("space", "values")

    def __init__(self, space: DomainSpace, values: Sequence[float] | np.ndarray, floor: float = 0.0) -> None:
        arr = np.asarray(values, dtype=np.float64).reshape(-1)
        if arr.shape != (space.k,):
            raise WeightsError(f"weights have {arr.size} entries but space {space.name!r} has {space.k} "
                               f"domains ({', '.join(space.names[:8])}{' ...' if space.k > 8 else ''}); "
                               f"give one weight per domain")
        if not np.all(np.isfinite(arr)):
            bad = [space.names[i] for i in np.flatnonzero(~np.isfinite(arr))]
            raise WeightsError(f"weights for {bad} are not finite (NaN/Inf); give finite numbers >= {floor}")
        if np.any(arr < floor - WEIGHT_TOL):
            bad = {space.names[i]: float(arr[i]) for i in np.flatnonzero(arr < floor - WEIGHT_TOL)}
            raise WeightsError(f"weights {bad} are below the floor {floor}; weights must be >= {floor}")
        if abs(arr.sum() - 1.0) > WEIGHT_TOL:
            raise WeightsError(f"weights sum to {arr.sum():.8f}, expected 1 (tolerance {WEIGHT_TOL}); "
                               f"normalise them or use DomainWeights.normalised(...)")
        # within tolerance is accepted; what is stored is exact (samplers reject even tiny deviations)
        arr = np.maximum(arr, max(floor, 0.0))
        arr = arr / arr.sum()
        arr.setflags(write=False)
        self.space = space
        self.values = arr

    @classmethod
    def normalised(cls, space: DomainSpace, values: Sequence[float] | np.ndarray) -> DomainWeights:
        """Validate non-negative finite values, then divide by their sum."""
        arr = np.asarray(values, dtype=np.float64).reshape(-1)
        if arr.shape == (space.k,) and np.all(np.isfinite(arr)) and np.all(arr >= 0) and arr.sum() > 0:
            arr = arr / arr.sum()
        return cls(space, arr)

    @classmethod
    def from_mapping(cls, space: DomainSpace, weights: Mapping[str, float], normalise: bool = True) -> DomainWeights:
        """Build from ``{name: weight}``; unnamed domains get 0, unknown names raise with a suggestion."""
        arr = np.zeros(space.k)
        for name, w in weights.items():
            arr[space.index(name)] = w
        return cls.normalised(space, arr) if normalise else cls(space, arr)

    def to_mapping(self) -> dict[str, float]:
        """``{name: weight}``, the on-disk form."""
        return {n: float(w) for n, w in zip(self.space.names, self.values)}

    def field_share(self, field: str) -> float:
        """Total weight of a field's domains."""
        return float(self.values[self.space.field_mask(field)].sum())

    def __repr__(self) -> str:
        shown = ", ".join(f"{n}={w:.3f}" for n, w in list(self.to_mapping().items())[:8])
        return f"DomainWeights({shown}{', ...' if self.space.k > 8 else ''})"


def weights_problem(w: Any, k: int, tol: float = WEIGHT_TOL) -> str | None:
    """What is wrong with a list of ``k`` weights read back from JSON (``None`` when it is a distribution
    within ``tol``); for readers that hold no :class:`DomainSpace` to build :class:`DomainWeights` in."""
    if not (isinstance(w, list) and len(w) == k and all(is_number(x) and x >= 0 for x in w)):
        return f"expected {k} finite weights >= 0, got {w!r}"
    return None if abs(sum(w) - 1.0) <= tol else f"weights sum to {sum(w)!r}, not 1"


def check_action_mapping(k: int, temperature: float, floor: float) -> None:
    """Raise ConfigError unless ``temperature`` is a finite number >= ``MIN_TEMPERATURE`` and
    ``0 <= floor * k < 1``."""
    if not (is_number(temperature) and temperature >= MIN_TEMPERATURE):
        raise ConfigError("action mapping", [f"temperature must be a finite number >= {MIN_TEMPERATURE} (below it "
                                             f"actions / temperature overflow), got {temperature}"])
    if not (is_number(floor) and 0 <= floor * k < 1):
        raise ConfigError("action mapping", [f"floor * K must be in [0, 1), got floor={floor}, K={k}; "
                                             f"use floor < {1 / k:.4g}"])


def action_to_weights(space: DomainSpace, action: np.ndarray | Sequence[float],
                      temperature: float = 0.25, floor: float = 0.0) -> DomainWeights:
    """The one action -> weights map: ``floor + (1 - K*floor) * softmax(action / temperature)``.

    Actions live in ``[-1, 1]^K`` (what d3rlpy's continuous policies emit); values outside are clipped.
    """
    check_action_mapping(space.k, temperature, floor)
    a = np.asarray(action, dtype=np.float64)
    if a.shape != (space.k,):
        raise ActionError(f"action has shape {a.shape}, expected ({space.k},) — one entry per domain of "
                          f"space {space.name!r}")
    if not np.all(np.isfinite(a)):
        raise ActionError(f"action has non-finite entries at indices {np.flatnonzero(~np.isfinite(a)).tolist()}; "
                          f"actions must be finite numbers in [-1, 1]")
    z = np.clip(a, -1.0, 1.0) / temperature
    p = np.exp(z - z.max())
    p /= p.sum()
    w = floor + (1.0 - space.k * floor) * p
    return DomainWeights(space, w / w.sum(), floor=floor)


def weights_to_action(weights: DomainWeights, temperature: float = 0.25, floor: float = 0.0) -> np.ndarray:
    """Inverse of :func:`action_to_weights`, exact when the weights' log-ratios fit in the action range."""
    k = weights.space.k
    check_action_mapping(k, temperature, floor)
    p = np.clip((weights.values - floor) / (1.0 - k * floor), 1e-12, None)
    logits = temperature * np.log(p)
    logits -= (logits.max() + logits.min()) / 2.0
    return np.clip(logits, -1.0, 1.0).astype(np.float32)


def replay_weights(space: DomainSpace, shares: np.ndarray | Sequence[float], rho: float) -> np.ndarray:
    """``(K,)`` weights with source-field share ``rho`` and target-field share ``1 - rho``, split within each
    field by ``shares`` (e.g. natural token shares): the replay family of mixtures (``rho=1``: source-only,
    ``rho=0``: target-only).

    Raises:
        WeightsError: ``rho`` outside [0, 1], or ``shares`` give a field with a positive share no weight.
    """
    if not 0.0 <= rho <= 1.0:
        raise WeightsError(f"rho must be in [0, 1], got {rho}")
    base = np.asarray(shares, dtype=np.float64)
    w = np.zeros(space.k)
    for field, share in (("source", rho), ("target", 1.0 - rho)):
        mask = space.field_mask(field)
        if share > 0:
            if base[mask].sum() <= 0:
                raise WeightsError(f"shares give no weight to any {field}-field domain "
                                   f"({', '.join(np.asarray(space.names)[mask])}); give them a positive share")
            w[mask] = share * base[mask] / base[mask].sum()
    return w
