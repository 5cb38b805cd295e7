"""Typed job configs: dataclasses loaded from YAML plus ``key=value`` overrides, validated all at once.

Every config class is a (possibly nested) dataclass. Loading collects *every* problem — unknown keys
(with "did you mean" suggestions), wrong types, values a ``check()`` method rejects — and raises one
:class:`~mixagent.errors.ConfigError` listing them all.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from mixagent.errors import ConfigError, suggest

__all__ = ["load_config", "load_yaml", "from_dict", "to_dict", "config_hash", "parse_overrides", "apply_overrides",
           "is_number", "is_int"]

T = TypeVar("T")


def is_number(x: Any) -> bool:
    """A finite real number (``bool`` is not a number here): what values read back from JSON must be."""
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def is_int(x: Any, minimum: int | None = None) -> bool:
    """An integer (not a ``bool``), at least ``minimum`` when given."""
    return isinstance(x, int) and not isinstance(x, bool) and (minimum is None or x >= minimum)


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """Turn ``["a.b=1", "c=[1, 2]"]`` into a nested dict; values are parsed as YAML scalars/lists."""
    out: dict[str, Any] = {}
    problems = []
    for item in overrides:
        if "=" not in item:
            problems.append(f"override {item!r} is not key=value (e.g. segment_tokens=4096)")
            continue
        key, raw = item.split("=", 1)
        node = out
        parts = key.strip().split(".")
        for i, part in enumerate(parts[:-1]):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                problems.append(f"override {item!r} sets a field of {'.'.join(parts[: i + 1])!r}, which another "
                                f"override set to a plain value")
                break
        else:
            try:
                node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else ""
            except yaml.YAMLError as exc:
                problems.append(f"override {item!r}: value is not valid YAML ({exc.problem})")
    if problems:
        raise ConfigError("overrides", problems)
    return out


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """``data`` (a nested dict) with ``key=value`` overrides merged in."""
    return _merge(dict(data), parse_overrides(overrides))


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _convert(tp: Any, value: Any, path: str, problems: list[str]) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path, problems)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value, path, problems)
    if origin in (list, Sequence, tuple):
        (inner, *_) = typing.get_args(tp) or (Any,)
        if not isinstance(value, (list, tuple)):
            problems.append(f"{path}: expected a list, got {value!r}")
            return None
        items = [_convert(inner, v, f"{path}[{i}]", problems) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping):
        key_tp, val_tp = typing.get_args(tp) or (str, Any)
        if not isinstance(value, Mapping):
            problems.append(f"{path}: expected a mapping, got {value!r}")
            return None
        return {str(k): _convert(val_tp, v, f"{path}.{k}", problems) for k, v in value.items()}
    if tp is Any:
        return value
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        problems.append(f"{path}: expected a number, got {value!r}")
        return None
    if tp is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if tp in (int, str, bool) and not (isinstance(value, tp) and not (tp is int and isinstance(value, bool))):
        problems.append(f"{path}: expected {_type_name(tp)}, got {value!r}")
        return None
    return value


def _build(cls: type[T], data: Any, path: str, problems: list[str]) -> T:
    if not isinstance(data, Mapping):
        problems.append(f"{path or 'config'}: expected a mapping of {cls.__name__} fields, got {data!r}")
        return None  # type: ignore[return-value]
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    for key in data:
        if key not in fields:
            where = f"{path}.{key}" if path else str(key)
            problems.append(f"unknown key {where!r}{suggest(str(key), fields)}; "
                            f"known keys of {cls.__name__}: {', '.join(fields)}")
    kwargs = {}
    for name, f in fields.items():
        where = f"{path}.{name}" if path else name
        has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        if name in data:
            value = _convert(hints[name], data[name], where, problems)
            if value is None and not _optional(hints[name]):
                if not has_default:
                    return None  # type: ignore[return-value]  # recorded above; nothing to check further
                continue  # recorded above; build with the default so the other checks still run
            kwargs[name] = value
        elif not has_default:
            problems.append(f"missing required key {where!r} ({_type_name(hints[name])})")
    try:
        obj = cls(**kwargs)
    except TypeError:
        return None  # type: ignore[return-value]
    check = getattr(obj, "check", None)
    if check is not None:
        problems.extend(f"{path + '.' if path else ''}{p}" for p in check())
    return obj


def _optional(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in typing.get_args(tp)


def from_dict(cls: type[T], data: Mapping[str, Any], where: str = "") -> T:
    """Build and validate ``cls`` from a mapping, raising one ConfigError with every problem."""
    problems: list[str] = []
    obj = _build(cls, data, "", problems)
    if problems:
        raise ConfigError(where or cls.__name__, problems)
    return obj


def load_config(cls: type[T], path: str | Path | None = None, overrides: Sequence[str] = ()) -> T:
    """Load ``cls`` from an optional YAML file, then apply ``key=value`` overrides, then validate."""
    data: dict[str, Any] = {}
    where = cls.__name__
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(str(path), [f"config file {str(path)!r} does not exist; pass an existing YAML "
                                          f"file (see configs/ and envs/)"])
        loaded = load_yaml(path)
        if not isinstance(loaded, Mapping):
            raise ConfigError(str(path), [f"top level must be a mapping, got {type(loaded).__name__}"])
        data, where = dict(loaded), str(path)
    data = _merge(data, parse_overrides(overrides))
    return from_dict(cls, data, where)


def load_yaml(path: Path) -> Any:
    """Parse a YAML file; a syntax error becomes a ConfigError naming the line."""
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(str(path), [f"not valid YAML{where}: {getattr(exc, 'problem', exc)}; fix the file's "
                                      f"syntax (indentation, colons, brackets)"]) from None


def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        added = getattr(type(obj), "ADDED_FIELDS", ())
        out = {}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if f.name in added and value == _default(f):
                continue  # a field added later, left at its default: older configs keep their hash
            out[f.name] = _plain(value)
        return out
    if isinstance(obj, Mapping):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else dataclasses.MISSING


def to_dict(obj: Any) -> dict[str, Any]:
    """Plain-JSON form of a config dataclass.

    Fields a class lists in its ``ADDED_FIELDS`` class attribute (knobs added after configs were hashed
    and cached) are left out while they hold their default, so every config written before them keeps
    its hash and cache key; loading fills the default back in.
    """
    return json.loads(json.dumps(_plain(obj), default=list))


def config_hash(*parts: Any) -> str:
    """Stable short hash of JSON-able parts (config dicts, file hashes) for cache keys."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
