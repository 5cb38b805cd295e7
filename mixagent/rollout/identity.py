"""Identities of what a rollout depends on: a policy spec's cache key and table identity, a policy
artifact's content digest, and the context the registered methods are built in.

* **Policy identity** (:func:`policy_key`): a constant baseline is its spec string (``uniform``,
  ``replay:0.5``); a registered method is ``<name>@<digest>`` of its :func:`~mixagent.policies.registry.
  policy_fingerprint` (its hyperparameters, the context it was built in and the rules version: a changed
  default or rule reruns it); a trained artifact is ``artifact@<digest>`` of its weights and the behaviour
  part of its ``meta.json`` (a retrained agent reruns; a resumed one does not).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

from mixagent.paths import REPO_ROOT
from mixagent.policies.baselines import parse_baseline
from mixagent.policies.locate import artifact_dir, artifact_id
from mixagent.policies.methods import ReferenceCurve
from mixagent.policies.registry import (
    FITTED_PARAMS,
    PolicyContext,
    build_policy,
    is_method,
    parse_method,
    policy_fingerprint,
    rules_version,
)

__all__ = ["artifact_dir", "artifact_id", "content_digest", "is_named", "policy_identity", "policy_key",
           "policy_context"]


def content_digest(obj: object) -> str:
    """12 hex digits of the SHA-256 of ``obj`` as canonical JSON."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]


def is_named(spec: str) -> bool:
    """A registered method or constant baseline (names win over a directory of the same name)."""
    return is_method(spec) or parse_baseline(spec) is not None


def policy_identity(policy: str, ctx: PolicyContext | None = None) -> str:
    """The identity a comparison's or a deploy case's table records per row: a constant baseline as written;
    a registered method with its rules version (``doremi:eta=0.1@rules2``), or its full cache key when the
    context it runs in is given (:func:`policy_key`); an artifact directory by its content (a retrained agent
    at the same path is another policy)."""
    if is_method(policy):
        if ctx is not None:
            return policy_key(policy, ctx)
        return f"{policy}@rules{rules_version(policy)}" + _fitted_digest(policy)
    path = None if is_named(policy) else artifact_dir(policy)
    return f"artifact@{artifact_id(path)}" if path is not None else policy


def _fitted_digest(spec: str) -> str:
    """``#<digest>`` of the fitted artifacts a method spec names (``probe_commit:model=<json>``), so a refit at
    the same path is another policy; empty when it names none (or a file that does not exist)."""
    parsed = parse_method(spec)
    files = [str(v) for k, v in (parsed[1] if parsed else {}).items() if k in FITTED_PARAMS]
    paths = [p if p.is_absolute() or p.exists() else REPO_ROOT / p for p in map(Path, files)]
    digests = [hashlib.sha256(p.read_bytes()).hexdigest()[:12] if p.is_file() else artifact_id(p)[:12]
               for p in paths if p.is_file() or p.is_dir()]  # a guarded artifact directory: by its content
    return "".join(f"#{d}" for d in digests)


def policy_key(spec: str, ctx: PolicyContext) -> str:
    """The cache identity of policy ``spec`` in context ``ctx`` (see the module docstring)."""
    if is_method(spec):  # the name, not the spec: the digest covers the hyperparameters, so "odm" and
        # "odm:gain=1" (its default) are one policy and share their episodes
        return f"{spec.partition(':')[0]}@{content_digest(policy_fingerprint(build_policy(spec, ctx)))}"
    path = None if is_named(spec) else artifact_dir(spec)
    if path is not None:
        return f"artifact@{artifact_id(path)}"
    return spec


def policy_context(context: Mapping, env) -> PolicyContext:
    """What the methods need in ``env``: its natural shares, the preparation runs' results (``context``,
    JSON: ``reference`` curve, ``regmix`` mixture) and the optimizer batches per segment (ODM counts its
    updates in batches) and what a user would state about the run (probe-then-commit reads it)."""
    from mixagent.env.setting import stated_from_spec

    reference = ReferenceCurve.from_json(context["reference"]) if context.get("reference") else None
    return PolicyContext(env.natural.to_mapping(), reference, context.get("regmix"),
                         getattr(env.backend, "steps_per_segment", 1), stated_from_spec(env.spec_))
