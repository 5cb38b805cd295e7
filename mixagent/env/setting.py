"""Settings and suites: one policy for a distribution of settings (``../shared/SETTINGS.md``).

A :class:`Setting` is everything about a continual pre-training run that is fixed before it starts: the base
model (its size and how much target data it saw in pre-training, both read from its config), the unique
target tokens, the LR schedule, the steps and tokens per step, the domain space with its target field, and
the user's trade-off ``lam``. It maps onto one :class:`~mixagent.env.spec.EnvSpec` of a family
(:meth:`Setting.spec`), and has a stable hash that every trajectory, episode and oracle row records.

A :class:`Suite` (``configs/settings/<name>.yaml``) declares

* ``axes``: the universe of each setting axis: allowed values (``values``) or a closed interval (``range``);
  a setting outside them is refused;
* ``spaces``: the named domain spaces a setting may use, each a space YAML plus the env overrides its
  target field needs (the code field evaluates by cloze, not by CHAMP solutions);
* ``train``: the training distribution, a list of values per axis (inside ``axes``); episodes draw each axis
  uniformly and independently from it (:meth:`Suite.draw`, seeded);
* ``held_out``: named settings (axes not named take ``defaults``), none of them a point of the training
  product (refused otherwise). Values between training values interpolate, values outside the training
  range (or a space never trained on) extrapolate; :meth:`Suite.extrapolates` says on which axes.

``lam`` never changes a run: a run's episodes are shared by every ``lam`` and rewards are relabelled from
the raw evaluations, so :meth:`Setting.run_hash` leaves it out and :meth:`Setting.spec` keeps the family's
``reward.lam`` unless asked.

What a policy may observe of a setting is split explicitly: :meth:`Setting.stated` gives what a user can state
at deployment (lam, steps, tokens per step, peak LR, schedule, decay share, unique target tokens when known);
:meth:`Setting.hidden` what they cannot (the base's size and prior target share), which a policy must infer
from the evaluations and a table may only use for analysis.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mixagent.config import config_hash, load_config, load_yaml, parse_overrides, to_dict
from mixagent.errors import ConfigError, suggest
from mixagent.paths import REPO_ROOT

__all__ = ["AXES", "Setting", "SpaceChoice", "Suite", "load_suite", "stated_from_spec"]

# the setting axes, in a fixed order (a Setting's fields); lam is the user's trade-off, relabelled offline
AXES = ("base_model", "target_tokens", "lr", "schedule", "decay_fraction", "steps", "segment_tokens", "space",
        "lam")
_NUMERIC = {"target_tokens": int, "lr": float, "decay_fraction": float, "steps": int, "segment_tokens": int,
            "lam": float}
_CATEGORICAL = ("base_model", "schedule", "space")


@dataclasses.dataclass(frozen=True)
class Setting:
    """One continual pre-training setting (see the module docstring).

    Args:
        base_model: base-model config YAML, relative to the repository root (its ``size`` and ``target_share``
            are the base's size and prior target exposure).
        target_tokens: unique target-field training tokens per run (0 = no cap): the env's ``target_tokens``.
        lr: peak learning rate of the continual pre-training (``optim.lr``).
        schedule: ``wsd`` or ``cosine`` (``optim.schedule``).
        decay_fraction: ``wsd`` only: share of the run in the final decay (``optim.decay_fraction``); a
            suite gives a ``cosine`` setting its default, so runs that are the same have the same hash.
        steps: re-weighting steps per run; segment_tokens: training tokens per step.
        space: a name of the suite's ``spaces`` (a domain space and its target field).
        lam: the user's weight on the target field in ``[0, 1]`` (``reward.lam``).
    """

    base_model: str
    target_tokens: int
    lr: float
    schedule: str
    decay_fraction: float
    steps: int
    segment_tokens: int
    space: str
    lam: float

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def run_hash(self) -> str:
        """The run's identity: every axis but ``lam`` (runs are shared by every ``lam``)."""
        return config_hash({k: v for k, v in self.to_json().items() if k != "lam"})

    def setting_hash(self) -> str:
        """The setting's identity, ``lam`` included (recorded with every trajectory, episode and oracle row)."""
        return config_hash(self.to_json())

    def stated(self) -> dict[str, float]:
        """What a user can state at deployment, as plain numbers (``target_tokens`` 0 means unknown/uncapped)."""
        return {"lam": self.lam, "steps": float(self.steps), "segment_tokens": float(self.segment_tokens),
                "lr": self.lr, "wsd": float(self.schedule == "wsd"), "decay_fraction": self.decay_fraction,
                "target_tokens": float(self.target_tokens)}

    def hidden(self) -> dict[str, Any]:
        """What a user cannot state: the base's size and prior target share (from its config)."""
        from mixagent.env.base_model import BaseModelConfig

        base = load_config(BaseModelConfig, REPO_ROOT / self.base_model)
        return {"size": base.size, "prior_target_share": base.target_share}

    def overrides(self, suite: Suite, keep_lam: bool = True) -> list[str]:
        """The ``key=value`` overrides of ``suite.env`` that make this setting's spec (the suite's own
        ``env_overrides`` first): what an audit or comparison config takes as ``env_overrides``.

        Args:
            keep_lam: keep the family's ``reward.lam`` (the run; relabel for ``lam`` afterwards) or set it.

        Raises:
            ConfigError: the setting's space is not one of the suite's.
        """
        choice = suite.spaces.get(self.space)
        if choice is None:
            raise ConfigError("setting.space", [f"space {self.space!r} is not one of the suite's spaces "
                                                f"{sorted(suite.spaces)}{suggest(self.space, suite.spaces)}"])
        overrides = [*suite.env_overrides, f"base_model={self.base_model}", f"target_tokens={self.target_tokens}",
                     f"optim.lr={self.lr}", f"optim.schedule={self.schedule}",
                     f"optim.decay_fraction={self.decay_fraction}", f"steps={self.steps}",
                     f"segment_tokens={self.segment_tokens}", f"space={choice.space}", *choice.overrides]
        return overrides if keep_lam else [*overrides, f"reward.lam={self.lam}"]

    def spec(self, suite: Suite, keep_lam: bool = True):
        """The env spec of this setting in ``suite``'s family (:meth:`overrides` applied to ``suite.env``).

        Raises:
            ConfigError: the setting's space is not one of the suite's, or the spec is invalid.
        """
        from mixagent.env.spec import load_spec

        return load_spec(REPO_ROOT / suite.env, self.overrides(suite, keep_lam))


@dataclasses.dataclass(frozen=True)
class SpaceChoice:
    """A domain space a setting may use: ``space`` (a space YAML) and the env ``overrides`` its target field
    needs (e.g. the code field's ``eval.target.kind=cloze``)."""

    space: str
    overrides: tuple[str, ...] = ()

    def check(self) -> list[str]:
        problems = [] if (REPO_ROOT / self.space).is_file() else [f"space file {self.space!r} not found"]
        try:
            parse_overrides(list(self.overrides))
        except ConfigError as exc:
            problems += exc.problems
        return problems


@dataclasses.dataclass(frozen=True)
class Suite:
    """A distribution of settings with declared training and held-out lists (see the module docstring).

    Args:
        name: the suite's name (recorded with its oracle table; a table from another suite is refused).
        env: the family's env spec YAML; env_overrides: applied to it before a setting's.
        spaces: named domain spaces (:class:`SpaceChoice`).
        defaults: a value for every axis (what a held-out setting does not name).
        axes: per axis, ``{values: [...]}`` or ``{range: [lo, hi]}``: the declared universe.
        train: per axis, the training values (a list inside ``axes``; an axis not named trains on its default).
        held_out: ``{name: {axis: value}}``, each a setting that is not a training setting.
    """

    name: str
    env: str
    spaces: dict[str, SpaceChoice]
    defaults: dict[str, Any]
    axes: dict[str, dict[str, Any]]
    train: dict[str, list[Any]] = dataclasses.field(default_factory=dict)
    held_out: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    env_overrides: tuple[str, ...] = ()

    # ---- validation -------------------------------------------------------------------------------
    def check(self) -> list[str]:
        problems = [] if (REPO_ROOT / self.env).is_file() else [f"env: file {self.env!r} not found"]
        for name, choice in self.spaces.items():
            problems += [f"spaces.{name}: {p}" for p in choice.check()]
        unknown = sorted(set(self.axes) - set(AXES)) + sorted(set(self.train) - set(AXES))
        problems += [f"axis {a!r} is not a setting axis{suggest(a, AXES)}; axes: {', '.join(AXES)}" for a in unknown]
        missing = [a for a in AXES if a not in self.defaults]
        if missing:
            problems.append(f"defaults must give every axis; missing {missing}")
        for axis, decl in self.axes.items():
            if axis in AXES:
                problems += self._axis_problems(axis, decl)
        if problems:
            return problems
        problems += [f"defaults: {p}" for p in self.value_problems(self.defaults)]
        for axis, values in self.train.items():
            if not isinstance(values, list) or not values:
                problems.append(f"train.{axis} must be a non-empty list of values, got {values!r}")
                continue
            problems += [f"train: {p}" for v in values for p in self.value_problems({axis: v})]
            if len(set(map(str, values))) != len(values):
                problems.append(f"train.{axis} repeats a value: {values}")
        if problems:
            return problems
        for name, partial in self.held_out.items():
            where = f"held_out.{name}"
            if not isinstance(partial, dict):
                problems.append(f"{where} must be a mapping of axis values, got {partial!r}")
                continue
            bad = [a for a in partial if a not in AXES]
            problems += [f"{where}: {a!r} is not a setting axis{suggest(a, AXES)}" for a in bad]
            if bad:
                continue
            mine = [f"{where}: {p}" for p in self.value_problems(partial)]
            problems += mine
            if not mine and self.is_training(self.setting(partial)):
                problems.append(f"{where} is also a training setting (every axis value is in train): change at "
                                f"least one axis to a value not in train, or drop it from held_out")
        return problems

    def _axis_problems(self, axis: str, decl: Any) -> list[str]:
        if not isinstance(decl, dict) or len(decl) != 1 or next(iter(decl)) not in ("values", "range"):
            return [f"axes.{axis} must be {{values: [...]}} or {{range: [lo, hi]}}, got {decl!r}"]
        if "range" in decl:
            r = decl["range"]
            if axis in _CATEGORICAL:
                return [f"axes.{axis} is categorical: give values: [...], not a range"]
            numbers = isinstance(r, list) and len(r) == 2 and all(isinstance(x, (int, float)) for x in r)
            if not (numbers and r[0] <= r[1]):
                return [f"axes.{axis}.range must be [lo, hi] with lo <= hi, got {r!r}"]
            return []
        values = decl["values"]
        if not isinstance(values, list) or not values:
            return [f"axes.{axis}.values must be a non-empty list, got {values!r}"]
        if axis == "space":
            return [f"axes.space: {v!r} is not one of spaces {sorted(self.spaces)}{suggest(str(v), self.spaces)}"
                    for v in values if v not in self.spaces]
        if axis == "base_model":
            return [f"axes.base_model: file {v!r} not found" for v in values if not (REPO_ROOT / str(v)).is_file()]
        return []

    def value_problems(self, partial: dict[str, Any]) -> list[str]:
        """Why the axis values in ``partial`` are outside the declared axes (empty when they are inside)."""
        problems = []
        for axis, value in partial.items():
            kind = _NUMERIC.get(axis)
            if kind is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                     or (kind is int and float(value) != int(value))):
                problems.append(f"{axis} must be a{'n integer' if kind is int else ' number'}, got {value!r}")
                continue
            if axis == "lam" and not 0 <= value <= 1:
                problems.append(f"lam must be in [0, 1] (the target field's weight), got {value}")
                continue
            decl = self.axes.get(axis)
            if decl is None:
                if value != self.defaults.get(axis, value):
                    problems.append(f"{axis}={value!r} but the suite declares no {axis} axis: only its default "
                                    f"{self.defaults[axis]!r} is allowed; declare axes.{axis} to vary it")
            elif "values" in decl and value not in decl["values"]:
                problems.append(f"{axis}={value!r} is outside the declared axis (values {decl['values']}); declare "
                                f"it in axes.{axis}.values{suggest(str(value), [str(v) for v in decl['values']])}")
            elif "range" in decl and not decl["range"][0] <= value <= decl["range"][1]:
                problems.append(f"{axis}={value!r} is outside the declared axis (range {decl['range']}); widen "
                                f"axes.{axis}.range")
        return problems

    # ---- settings ---------------------------------------------------------------------------------
    def setting(self, partial: dict[str, Any] | None = None) -> Setting:
        """The setting with ``partial``'s axis values and the defaults elsewhere.

        Raises:
            ConfigError: a value outside the declared axes (or an unknown axis), naming the field and the fix.
        """
        partial = dict(partial or {})
        unknown = [a for a in partial if a not in AXES]
        problems = [f"{a!r} is not a setting axis{suggest(a, AXES)}" for a in unknown]
        problems += self.value_problems({a: v for a, v in partial.items() if a in AXES})
        if problems:
            raise ConfigError(f"suite {self.name} setting", problems)
        values = {**self.defaults, **partial}
        if values["schedule"] == "cosine":  # the decay share means nothing under cosine: equal runs, equal hashes
            values["decay_fraction"] = self.defaults["decay_fraction"]
        return Setting(**{a: (_NUMERIC[a](values[a]) if a in _NUMERIC else values[a]) for a in AXES})

    def training_values(self) -> dict[str, list[Any]]:
        """Per axis, the training values (the default alone for an axis ``train`` does not name)."""
        return {a: list(self.train.get(a, [self.defaults[a]])) for a in AXES}

    def is_training(self, setting: Setting) -> bool:
        """Whether ``setting`` is a point of the training distribution (every axis value is a training value)."""
        values = self.training_values()
        return all(_member(getattr(setting, a), values[a]) for a in AXES)

    def training_settings(self) -> list[Setting]:
        """Every point of the training product, in a fixed order."""
        values = self.training_values()
        settings = (self.setting(dict(zip(AXES, combo, strict=True))) for combo in itertools.product(*values.values()))
        return list(dict.fromkeys(settings))  # a cosine setting appears once, whatever the decay share

    def draw(self, seed: int) -> Setting:
        """A training setting drawn for episode ``seed``: each axis uniformly from its training values,
        independently (numpy ``default_rng([seed, 0x5e771])``: the same seed gives the same setting)."""
        rng = np.random.default_rng([int(seed), 0x5E771])
        values = self.training_values()
        return self.setting({a: vs[int(rng.integers(len(vs)))] for a, vs in values.items()})

    def distinct_runs(self, n: int, seed: int = 0) -> list[Setting]:
        """The first ``n`` draws (:meth:`draw`, seeds ``seed``, ``seed + 1``, ...) with distinct run hashes: the
        training runs a collection or the single best fixed rule uses (a fixed sequence, so asking for more
        keeps the first ones).

        Raises:
            ConfigError: the training distribution gives fewer than ``n`` distinct runs (naming the fix).
        """
        chosen: dict[str, Setting] = {}
        for i in range(100 * n + 1):
            if len(chosen) == n:
                break
            setting = self.draw(seed + i)
            chosen.setdefault(setting.run_hash(), setting)
        if len(chosen) < n:
            raise ConfigError(f"suite {self.name}", [f"the training distribution gave {len(chosen)} distinct runs "
                                                     f"in {100 * n + 1} draws, fewer than the {n} asked for; ask "
                                                     f"for fewer (sbf_settings, settings)"])
        return list(chosen.values())

    def axis_counts(self, runs: Sequence[Setting]) -> dict[str, list[int]]:
        """Per run axis (all but lam), how many of ``runs`` take each of its training values, in
        :meth:`training_values` order (the decay share counted over WSD runs only: cosine ignores it)."""
        values = self.training_values()
        return {axis: [sum(_member(getattr(s, axis), [v]) for s in runs
                           if axis != "decay_fraction" or s.schedule == "wsd") for v in values[axis]]
                for axis in AXES if axis != "lam"}

    def balanced_runs(self, start: Sequence[Setting], n: int, seed: int = 0) -> list[Setting]:
        """``start`` extended to ``n`` distinct training runs, each added run taking on every run axis (all but
        lam) its least-used training value so far (the decay share counted over WSD runs only; ties broken by
        numpy ``default_rng([seed, 0xBA1])``): a random draw of a few settings can miss an axis value
        altogether (8 draws of math-cpt-v1 held no run at 131,072 unique target tokens), and a rule chosen on
        it would be tuned to the values it over-samples.

        Raises:
            ConfigError: the training product has fewer than ``n`` distinct runs.
        """
        values = self.training_values()
        chosen = {s.run_hash(): s for s in start}
        rng = np.random.default_rng([int(seed), 0xBA1])
        for _ in range(100 * n + 1):
            if len(chosen) >= n:
                break
            partial: dict[str, Any] = {}
            for axis, counts in self.axis_counts(list(chosen.values())).items():
                least = [v for v, c in zip(values[axis], counts) if c == min(counts)]
                partial[axis] = least[int(rng.integers(len(least)))]
            setting = self.setting(partial | {"lam": self.defaults["lam"]})
            if setting.run_hash() in chosen:  # every least-used combination taken: any unused training run
                unused = [s for s in self.training_settings() if s.run_hash() not in chosen]
                if not unused:
                    break
                setting = unused[int(rng.integers(len(unused)))]
            chosen[setting.run_hash()] = setting
        if len(chosen) < n:
            raise ConfigError(f"suite {self.name}", [f"the training product has {len(chosen)} distinct runs, "
                                                     f"fewer than the {n} asked for; ask for fewer"])
        return list(chosen.values())

    def held_out_settings(self) -> dict[str, Setting]:
        return {name: self.setting(partial) for name, partial in self.held_out.items()}

    def extrapolates(self, setting: Setting) -> list[str]:
        """The axes on which ``setting`` lies outside the training values' range (numeric axes) or takes a
        value never trained on (categorical axes): empty for an interpolation."""
        values, out = self.training_values(), []
        for a in AXES:
            v = getattr(setting, a)
            if a in _NUMERIC:
                if not min(values[a]) - 1e-12 <= v <= max(values[a]) + 1e-12:
                    out.append(a)
            elif v not in values[a]:
                out.append(a)
        return out

    def suite_hash(self) -> str:
        """The suite's identity (its declaration, not its file's formatting)."""
        return config_hash(to_dict(self))

    def training_hash(self) -> str:
        """The identity of everything but the held-out list: the family, spaces, defaults, axes and training
        distribution. A collection, the single best fixed rule and probe-then-commit depend on these only, so
        adding a held-out setting (widening the held-out list) or changing one keeps them valid."""
        return config_hash({k: v for k, v in to_dict(self).items() if k != "held_out"})


def stated_from_spec(spec) -> dict[str, float]:
    """What a user can state about a run, read off an env spec (:class:`~mixagent.env.spec.EnvSpec`): the same
    numbers as :meth:`Setting.stated` of the setting the spec was built from (``target_tokens`` 0 = uncapped)."""
    return {"lam": float(spec.reward.lam), "steps": float(spec.steps), "segment_tokens": float(spec.segment_tokens),
            "lr": float(spec.optim.lr), "wsd": float(spec.optim.schedule == "wsd"),
            "decay_fraction": float(spec.optim.decay_fraction), "target_tokens": float(spec.target_tokens)}


def _member(value: Any, values: list[Any]) -> bool:
    if isinstance(value, float):
        return any(isinstance(v, (int, float)) and math.isclose(value, v, rel_tol=1e-12) for v in values)
    return value in values


def load_suite(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Suite:
    """Load and validate a suite YAML (``configs/settings/<name>.yaml``).

    Raises:
        ConfigError: every problem at once (unknown axes, values outside the axes, held-out settings that are
            training settings, lam outside [0, 1], missing files), each naming the field and the fix.
    """
    raw = load_yaml(Path(path))
    if overrides:
        from mixagent.config import apply_overrides

        raw = apply_overrides(raw, list(overrides))
    if not isinstance(raw, dict):
        raise ConfigError(str(path), ["a suite is a mapping (name, env, spaces, defaults, axes, train, held_out)"])
    known = {f.name for f in dataclasses.fields(Suite)}
    problems = [f"unknown key {k!r}{suggest(k, known)}" for k in raw if k not in known]
    problems += [f"missing key {k!r}" for k in ("name", "env", "spaces", "defaults", "axes") if k not in raw]
    if problems:
        raise ConfigError(str(path), problems)
    spaces_raw = raw.get("spaces") or {}
    if not isinstance(spaces_raw, dict):
        raise ConfigError(str(path), [f"spaces must map names to {{space: <yaml>, overrides: [...]}}, got "
                                      f"{spaces_raw!r}"])
    spaces = {}
    for name, choice in spaces_raw.items():
        if isinstance(choice, str):
            choice = {"space": choice}
        if not isinstance(choice, dict) or "space" not in choice or set(choice) - {"space", "overrides"}:
            raise ConfigError(str(path), [f"spaces.{name} must be {{space: <yaml>, overrides: [...]}}, got {choice!r}"])
        spaces[name] = SpaceChoice(str(choice["space"]), tuple(choice.get("overrides") or ()))
    suite = Suite(name=str(raw["name"]), env=str(raw["env"]), spaces=spaces, defaults=dict(raw["defaults"] or {}),
                  axes=dict(raw["axes"] or {}), train=dict(raw.get("train") or {}),
                  held_out=dict(raw.get("held_out") or {}), env_overrides=tuple(raw.get("env_overrides") or ()))
    if problems := suite.check():
        raise ConfigError(str(path), problems)
    return suite
