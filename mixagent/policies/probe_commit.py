"""Probe-then-commit: the strongest simple learned rival of a policy for many settings
(``../shared/SETTINGS.md``).

Run the first re-weighting segment at a default rule (the *probe*, e.g. the single best fixed rule), then read
the setting from what a user states (lam, unique target tokens, LR schedule) and from how the first segment
moved each field's held-out bits per byte, and commit to the rule a regression predicts best for the rest of
the run. The regression is fitted on the training settings of a suite only (:func:`fit_probe_commit`, from
the oracle table's grid runs, :mod:`mixagent.study.oracle_table`): per candidate rule, a ridge regression
(scikit-learn, standardised features) from the features to the rule's score on its setting's static-grid
scale (``(score - worst static) / (best static - worst static)``, comparable across settings); the policy
plays the argmax. If a learned mixer cannot beat this lookup, its sequential decisions add nothing.
Two simplifications in the fit: each rule is scored as played from the first segment, while the policy plays
the probe there (a systematic difference: the regression credits a rule with a first segment the policy does
not play); and the fit averages the probe features over the tuning seeds, while a run reads its own. The
policy itself is always scored as it plays, on held-out seeds.

Features (:data:`FEATURES`, all scale-free): ``lam``; ``log2`` of the unique target tokens over 131,072 (an
uncapped run: the tokens it trains in all) and whether they are capped at all (0 / 1: a user who does not
know leaves them uncapped); ``log2`` of the peak LR
over 2e-3; WSD (1) or cosine (0); the decay share; after the probe segment, the mean relative change of the
source and of the target field's held-out bits per byte (``b_1 / b_0 - 1``, the observation's ``loss_rel``
block; bits per byte never approach zero, unlike benchmark scores).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from mixagent.domains import DomainSpace, DomainWeights
from mixagent.errors import ConfigError, UsageError
from mixagent.policies.protocol import RunningState

__all__ = ["FEATURES", "STATED", "ProbeCommitModel", "ProbeCommitPolicy", "fit_probe_commit", "stated_features",
           "probe_features", "build_rule", "MODEL_VERSION"]

MODEL_VERSION = 1
STATED = ("lam", "target_tokens", "lr", "wsd", "decay_fraction", "steps", "segment_tokens")  # what the user states
FEATURES = ("lam", "log2_target_tokens", "target_capped", "log2_lr", "wsd", "decay_fraction", "source_bpb_rel",
            "target_bpb_rel")


def stated_features(stated: Mapping[str, float]) -> np.ndarray:
    """``(6,)`` the stated part of :data:`FEATURES` from ``{lam, target_tokens (0 = uncapped), lr, wsd,
    decay_fraction, steps, segment_tokens}`` (:meth:`mixagent.env.setting.Setting.stated`,
    :func:`mixagent.env.setting.stated_from_spec`). An uncapped run counts as many unique target tokens as it
    trains in all (``steps x segment_tokens``): it never repeats.

    Raises:
        ConfigError: a missing entry (naming it), a value that is not a finite number, a lam outside [0, 1], a
            peak LR, steps or segment tokens that are not positive, or negative target tokens.
    """
    missing = [k for k in STATED if k not in stated]
    if missing:
        raise ConfigError("probe_commit", [f"the run's stated setting lacks {missing}; give {list(STATED)} "
                                           f"(mixagent.env.setting.stated_from_spec(spec) for an env spec)"])
    try:
        v = {k: float(stated[k]) for k in STATED}
    except (TypeError, ValueError):
        raise ConfigError("probe_commit", [f"the stated setting must hold numbers, got {dict(stated)}"]) from None
    problems = [f"{k} must be a finite number, got {x}" for k, x in v.items() if not math.isfinite(x)]
    if not problems:
        if not 0.0 <= v["lam"] <= 1.0:
            problems.append(f"lam must be in [0, 1], got {v['lam']}")
        problems += [f"{k} must be > 0, got {v[k]}" for k in ("lr", "steps", "segment_tokens") if v[k] <= 0]
        if v["target_tokens"] < 0:
            problems.append(f"target_tokens must be >= 0 (0 = uncapped), got {v['target_tokens']}")
    if problems:
        raise ConfigError("probe_commit", problems)
    tokens = v["target_tokens"] if v["target_tokens"] > 0 else v["steps"] * v["segment_tokens"]
    return np.array([v["lam"], math.log2(tokens / 131072), float(v["target_tokens"] > 0), math.log2(v["lr"] / 2e-3),
                     v["wsd"], v["decay_fraction"]])


def probe_features(observation: np.ndarray, space: DomainSpace) -> np.ndarray:
    """``(2,)`` the mean ``loss_rel`` (``b_t / b_0 - 1``) of the source and of the target field's domains, from
    an observation (``mixagent.env.observation`` layout) after the probe segment."""
    rel = np.asarray(observation, dtype=np.float64)[space.k:2 * space.k]
    return np.array([rel[space.field_mask("source")].mean(), rel[space.field_mask("target")].mean()])


@dataclasses.dataclass(frozen=True)
class ProbeCommitModel:
    """A fitted probe-then-commit regression (JSON; no pickle).

    Attributes:
        probe: the rule spec played in the first segment (``replay:0.5``).
        rules: candidate rule specs (``replay:<rho>``, ``natural``, ``uniform``, ``two_phase:...``), ``(R,)``.
        mean, scale: ``(F,)`` feature standardisation (:data:`FEATURES` order).
        coef: ``(R, F)`` ridge coefficients on standardised features; intercept: ``(R,)``.
        alpha: the ridge penalty; rows: the training rows it was fitted on (settings x lams); fit: provenance.
    """

    probe: str
    rules: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[tuple[float, ...], ...]
    intercept: tuple[float, ...]
    alpha: float
    rows: int
    fit: dict = dataclasses.field(default_factory=dict)

    def predict(self, features: np.ndarray) -> np.ndarray:
        """``(R,)`` predicted grid-normalised score of every rule for ``(F,)`` features (``(N, R)`` for
        ``(N, F)``)."""
        z = (np.asarray(features, dtype=np.float64) - np.asarray(self.mean)) / np.asarray(self.scale)
        return z @ np.asarray(self.coef).T + np.asarray(self.intercept)

    def choose(self, features: np.ndarray) -> str:
        """The rule with the best predicted score (the first on ties)."""
        return self.rules[int(np.argmax(self.predict(features)))]

    def to_json(self) -> dict:
        return {"version": MODEL_VERSION, "features": list(FEATURES), **dataclasses.asdict(self)}

    @classmethod
    def from_json(cls, data: Mapping) -> ProbeCommitModel:
        """Raises: ConfigError: another version or feature layout (refit it)."""
        if data.get("version") != MODEL_VERSION or tuple(data.get("features", ())) != FEATURES:
            raise ConfigError("probe_commit", [f"a probe-then-commit model of version {data.get('version')} with "
                                               f"features {data.get('features')}; expected version {MODEL_VERSION} "
                                               f"with {list(FEATURES)}: refit it (mixagent oracle-table)"])
        try:
            model = cls(probe=str(data["probe"]), rules=tuple(map(str, data["rules"])),
                        mean=tuple(map(float, data["mean"])), scale=tuple(map(float, data["scale"])),
                        coef=tuple(tuple(map(float, r)) for r in data["coef"]),
                        intercept=tuple(map(float, data["intercept"])), alpha=float(data["alpha"]),
                        rows=int(data["rows"]), fit=dict(data.get("fit", {})))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError("probe_commit", [f"a malformed probe-then-commit model ({exc!r}); refit it"]) from None
        r, f = len(model.rules), len(FEATURES)
        numbers = np.array([*model.mean, *model.scale, *model.intercept, *(x for row in model.coef for x in row)])
        if (len(model.mean), len(model.scale), len(model.intercept)) != (f, f, r) or \
                any(len(row) != f for row in model.coef) or len(model.coef) != r or not np.isfinite(numbers).all() \
                or min(model.scale) <= 0:
            raise ConfigError("probe_commit", [f"a probe-then-commit model whose arrays do not fit {r} rules x {f} "
                                               f"features (or hold non-finite values); refit it"])
        return model

    @classmethod
    def load(cls, path: str | Path) -> ProbeCommitModel:
        """Raises: ConfigError: a missing file (with how to make it) or a model of another layout."""
        p = Path(path)
        if not p.is_absolute() and not p.is_file():  # a repository-relative path, from any working directory
            from mixagent.paths import REPO_ROOT

            p = REPO_ROOT / p
        if not p.is_file():
            raise ConfigError("probe_commit", [f"model {str(path)!r} not found; fit one with mixagent oracle-table "
                                               f"(written as <out>/<suite>/probe_commit.json)"])
        return cls.from_json(json.loads(p.read_text()))


def fit_probe_commit(features: np.ndarray, scores: np.ndarray, rules: Sequence[str], probe: str,
                     alpha: float = 1.0, fit: Mapping | None = None) -> ProbeCommitModel:
    """Fit the regression (ridge, scikit-learn) on training rows.

    Args:
        features: ``(N, F)`` rows of :data:`FEATURES` (stated + probe), one per training setting and lam.
        scores: ``(N, R)`` each rule's grid-normalised score in that row.
        rules: the ``R`` rule specs (columns of ``scores``); probe: the first segment's rule.
        alpha: ridge penalty on standardised features.

    Raises:
        ConfigError: shapes that disagree, fewer than 2 rows, or non-finite values.
    """
    from sklearn.linear_model import Ridge

    x, y = np.asarray(features, dtype=np.float64), np.asarray(scores, dtype=np.float64)
    problems = []
    if x.ndim != 2 or x.shape[1] != len(FEATURES):
        problems.append(f"features must be (N, {len(FEATURES)}), got {x.shape}")
    if y.ndim != 2 or y.shape != (x.shape[0], len(rules)):
        problems.append(f"scores must be (N, R) = ({x.shape[0]}, {len(rules)}), got {y.shape}")
    if not problems and x.shape[0] < 2:
        problems.append(f"need >= 2 training rows, got {x.shape[0]}")
    if not problems and not (np.isfinite(x).all() and np.isfinite(y).all()):
        problems.append("features and scores must be finite")
    if problems:
        raise ConfigError("probe_commit fit", problems)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale = np.where(scale > 1e-12, scale, 1.0)  # a constant feature contributes nothing
    reg = Ridge(alpha=alpha).fit((x - mean) / scale, y)
    return ProbeCommitModel(probe=probe, rules=tuple(rules), mean=tuple(map(float, mean)),
                            scale=tuple(map(float, scale)), coef=tuple(tuple(map(float, r)) for r in reg.coef_),
                            intercept=tuple(map(float, reg.intercept_)), alpha=float(alpha), rows=int(x.shape[0]),
                            fit=dict(fit or {}))


def build_rule(spec: str, natural: Mapping[str, float] | None):
    """The policy of a rule the oracle table's grid holds (:func:`mixagent.study.oracle_table.rule_spec`): a
    constant baseline (``natural``, ``uniform``, ``replay:<rho>``) or ``two_phase:rho1=,rho2=,switch=``.

    Raises:
        ConfigError: any other spec, or bad values.
    """
    from mixagent.policies.baselines import parse_baseline
    from mixagent.policies.heuristics import TwoPhasePolicy

    baseline = parse_baseline(spec)
    if baseline is not None:
        return baseline.build(natural)
    name, _, rest = spec.partition(":")
    if name == "two_phase":
        try:
            params = {k: float(v) for k, v in (pair.split("=") for pair in rest.split(","))}
            return TwoPhasePolicy(natural, rho1=params["rho1"], rho2=params["rho2"], switch=int(params["switch"]))
        except (ValueError, KeyError):
            pass
    raise ConfigError("probe_commit", [f"rule {spec!r}: a probe-then-commit rule must be natural, uniform, "
                                       f"replay:<rho> or two_phase:rho1=<r>,rho2=<r>,switch=<n>"])


class ProbeCommitPolicy(RunningState):
    """Plays ``model.probe`` in the first segment, then the rule ``model`` chooses from the stated setting and
    the probe's effect (see the module docstring), to the end of the run.

    Args:
        natural: ``{domain: natural token share}`` (the rules' within-field split).
        stated: what the user states about the run (:data:`STATED`).
        model: a fitted :class:`ProbeCommitModel`, or the path of its JSON (``<out>/<suite>/probe_commit.json``).

    Raises:
        ConfigError: no model, no stated setting, or a model whose rules do not build.
    """

    STATE = ("chosen", "rule_state")
    name = "probe_commit"

    def __init__(self, natural: Mapping[str, float] | None, stated: Mapping[str, float] | None,
                 model: ProbeCommitModel | str = "") -> None:
        if not model:
            raise ConfigError("probe_commit", ["needs a fitted model: probe_commit:model=<path of probe_commit.json> "
                                               "(mixagent oracle-table writes it)"])
        if stated is None:
            raise ConfigError("probe_commit", [f"needs the run's stated setting {list(STATED)} "
                                               f"(PolicyContext.stated): a comparison and the oracle table pass it "
                                               f"from the env spec; the deploy job does not yet, so deploy the rule "
                                               f"it chose instead"])
        loaded = model if isinstance(model, ProbeCommitModel) else ProbeCommitModel.load(model)
        # the behaviour is the coefficients, not the fit's provenance (suite, LOSO score): left out, so cached
        # episodes (keyed by the policy's public state) survive a refit that only records more
        self.model = dataclasses.replace(loaded, fit={})
        self._stated = stated_features(stated)
        self.stated = {k: float(stated[k]) for k in STATED}
        for rule in (self.model.probe, *self.model.rules):  # a model whose rules do not build is refused here
            build_rule(rule, natural or {"stand-in": 1.0})
        self.natural = dict(natural) if natural else None

    def _build(self, spec: str):
        policy = build_rule(spec, self.natural)
        policy.reset(self.space)
        return policy

    def reset(self, space: DomainSpace) -> None:
        self.space = space
        self._probe = self._build(self.model.probe)
        self._rule = None
        self.chosen: str | None = None
        self.rule_state: dict | None = None  # the committed rule's own running state (a two-phase horizon)

    def state_dict(self) -> dict:
        self.rule_state = self._rule.state_dict() if self._rule is not None and hasattr(self._rule, "state_dict") \
            else None
        return super().state_dict()

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self._rule = None
        if self.chosen is not None:
            self._rule = self._build(self.chosen)
            if self.rule_state is not None:
                self._rule.load_state_dict(self.rule_state)

    def act(self, observation: np.ndarray) -> DomainWeights:
        if not hasattr(self, "space"):
            raise UsageError("ProbeCommitPolicy: call reset(space) before act()")
        obs = np.asarray(observation, dtype=np.float64)
        if obs.shape[0] < 3 * self.space.k + 5:
            raise UsageError(f"observation of shape {obs.shape} for a {self.space.k}-domain space: expected "
                             f"({3 * self.space.k + 5},) or longer (mixagent.env.observation)")
        if self.chosen is None and obs[3 * self.space.k + 4] <= 0.0:  # progress 0: the probe segment
            return self._probe.act(obs)
        if self.chosen is None:
            self.chosen = self.model.choose(np.concatenate([self._stated, probe_features(obs, self.space)]))
        if self._rule is None:
            self._rule = self._build(self.chosen)
        return self._rule.act(obs)
