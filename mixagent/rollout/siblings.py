"""Runs shared across the user's trade-off lam.

Two env specs that differ only in ``reward.lam`` are *lam siblings*: they train the same runs (the reward is
computed from raw evaluations and never feeds back into training), so an open-loop policy (its mixture
depends on the step alone, never on the observation's lam or scores) gives the same episode under both, bit
for bit; only the balanced score and the return differ, and they are recomputed from the stored raw
evaluations (the comparison's rescorer). The audit's grid rows (raw final evaluations) and the reference and
anchor runs (lam-free extremes) are shared the same way, from a sibling that started from the same base
model. This is what makes a held-out setting that only moves lam cost a few episodes instead of a full
setting (the oracle table's attempts 2 and 3).

A sibling is recognised by content, not by name: its stored ``spec.json`` (``spec_hash`` and the spec's
:meth:`~mixagent.env.spec.EnvSpec.mdp_dict`) must hash to this spec with the sibling's lam put in, so the
base model, the domain space, the anchors and everything else are the same.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from mixagent.env.spec import EnvSpec

__all__ = ["OPEN_LOOP", "is_lam_sibling", "lam_siblings", "open_loop", "spec_head"]

# Policy names whose mixture depends on the step alone: the constant baselines, a fixed mixture (RegMix's
# proxy runs: ``fixed@<digest>``), the scheduled heuristics and RegMix's fitted mixture (its key's digest
# covers the mixture). Never probe-then-commit (it reads the stated lam) nor an artifact (it observes lam).
OPEN_LOOP = frozenset({"uniform", "natural", "target_only", "replay", "fixed", "two_phase", "decay_switch",
                       "end_upsample", "regmix"})


def open_loop(key: str) -> bool:
    """Whether the episodes of policy cache key ``key`` (:func:`~mixagent.rollout.identity.policy_key`) are the
    same under every reward and lam: ``uniform``, ``replay:0.5``, ``two_phase@<digest>``... (see
    :data:`OPEN_LOOP`)."""
    return key.partition("@")[0].partition(":")[0] in OPEN_LOOP


def spec_head(spec: EnvSpec) -> dict:
    """What a store writes as its ``spec.json`` so that siblings can recognise it (plus its own fields)."""
    return {"env_id": spec.env_id, "spec_hash": spec.spec_hash(), "spec": spec.mdp_dict()}


def is_lam_sibling(spec: EnvSpec, head: dict) -> bool:
    """Whether the store whose ``spec.json`` is ``head`` (:func:`spec_head`) holds runs of ``spec`` at another
    lam: its hash equals ``spec``'s with its lam put in (so nothing else differs) and its lam is another."""
    try:
        lam = float(head["spec"]["reward"]["lam"])
        stored = str(head["spec_hash"])
    except (KeyError, TypeError, ValueError):
        return False
    if lam == spec.reward.lam or not 0.0 <= lam <= 1.0:
        return False
    other = dataclasses.replace(spec, reward=dataclasses.replace(spec.reward, lam=lam))
    return other.spec_hash() == stored


def lam_siblings(parent: Path, spec: EnvSpec) -> list[Path]:
    """The directories under ``parent`` (``<root>/<env name>-v<version>/``, one per spec hash) that hold runs of
    ``spec`` at another lam (:func:`is_lam_sibling` on their ``spec.json``), in name order; unreadable heads are
    skipped."""
    out = []
    for head in sorted(Path(parent).glob("*/spec.json")):
        if head.parent.name == spec.spec_hash():
            continue
        try:
            if is_lam_sibling(spec, json.loads(head.read_text())):
                out.append(head.parent)
        except (OSError, ValueError):
            continue
    return out
