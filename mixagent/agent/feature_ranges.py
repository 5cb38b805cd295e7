"""``mixagent feature-ranges --artifact DIR [DIR ...]``: record the training range of every feature
(``meta.json`` ``training.feature_ranges``, :mod:`mixagent.policies.ranges`) in a per-domain policy artifact trained
before artifacts recorded them, so the deploy job's out-of-distribution guard (``policy.ood``) can check it.

The ranges are recomputed from the training data the artifact's meta names, through the training's own data path
(:func:`mixagent.agent.train_per_domain.training_arrays`: the same runs, top fraction and left-out domains, so the
same observations), and refused when that data no longer gives what the artifact recorded (transition counts,
domain counts, the learning-rate layout). Only ``training`` changes in ``meta.json`` (written atomically), which
is outside the policy's cache identity: cached episodes of the policy stay valid.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mixagent.errors import AgentDataError, CorruptArtifactError, SchemaVersionError
from mixagent.paths import REPO_ROOT, atomic_write_json

__all__ = ["backfill_feature_ranges", "main"]


def backfill_feature_ranges(path: str | Path) -> dict[str, Any]:
    """Recompute a per-domain artifact's feature ranges from its training data and write them into its
    ``meta.json``; returns them.

    Raises:
        CorruptArtifactError: no readable ``meta.json``, or one without its training config.
        SchemaVersionError: not a per-domain policy artifact (a dense one records its ranges when
            ``mixagent train-agent`` writes it: retrain it).
        AgentDataError: the training data no longer gives the observations the artifact was trained on.
        ConfigError: the recorded training config is invalid.
    """
    from mixagent.agent.train_per_domain import PerDomainBCConfig, training_arrays
    from mixagent.config import from_dict
    from mixagent.policies.per_domain import PER_DOMAIN_KIND, feature_ranges, run_feature_names

    path = Path(path)
    try:
        meta = json.loads((path / "meta.json").read_text())
    except (OSError, ValueError) as exc:
        raise CorruptArtifactError(f"{path / 'meta.json'}: {type(exc).__name__}: {exc}; give a policy artifact "
                                   f"directory") from None
    if meta.get("kind") != PER_DOMAIN_KIND:
        raise SchemaVersionError(f"{path}: kind {meta.get('kind')!r}; `mixagent feature-ranges` recomputes the ranges "
                                 f"of per-domain policies ({PER_DOMAIN_KIND!r}); a dense policy records them when "
                                 f"`mixagent train-agent` writes it: retrain it (or deploy it with policy.ood: warn)")
    recorded = meta.get("training", {})
    if not isinstance(recorded.get("config"), dict) or not isinstance(recorded.get("runs"), list):
        raise CorruptArtifactError(f"{path / 'meta.json'} has no training.config / training.runs: the data it was "
                                   f"trained on is unknown; retrain it with `mixagent per-domain`")
    cfg = from_dict(PerDomainBCConfig, recorded["config"])
    arrays, runs = training_arrays(cfg)
    got = [(r["run"], r["k"], r["transitions"]) for r in runs]
    want = [(r.get("run"), r.get("k"), r.get("transitions")) for r in recorded["runs"]]
    lr = bool(meta.get("observation", {}).get("lr", False))
    if got != want or any(r["observe_lr"] != lr for r in runs):
        raise AgentDataError(f"{path}: its training data now gives (run, domains, transitions) {got} with "
                             f"observe_lr {[r['observe_lr'] for r in runs]}, the artifact recorded {want} with "
                             f"observation.lr {lr}; the data changed since training, so its ranges cannot be "
                             f"recovered: retrain it with `mixagent per-domain`")
    ranges = feature_ranges(arrays["dom"], arrays["target"], arrays["valid"], arrays["run"],
                            run_feature_names(cfg.observation))
    meta["training"]["feature_ranges"] = ranges
    atomic_write_json(path / "meta.json", meta)
    return ranges


def main(argv: Sequence[str] | None = None) -> int:
    """``mixagent feature-ranges``; returns the exit status (2 with the typed error on stderr)."""
    import argparse
    import sys

    from mixagent.errors import MixagentError

    parser = argparse.ArgumentParser(prog="mixagent feature-ranges", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifact", nargs="+", required=True, metavar="DIR",
                        help="per-domain policy artifact directories (checkpoints/agents/math-cpt-v1)")
    args = parser.parse_args(argv)
    for given in args.artifact:
        path = Path(given) if Path(given).is_dir() else REPO_ROOT / given
        try:
            ranges = backfill_feature_ranges(path)
        except MixagentError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        run = ranges["run"]
        print(f"{given}: feature ranges of {ranges['rows']} training observations recorded in meta.json "
              f"(target_score {run['target_score'][0]:+.3f} .. {run['target_score'][1]:+.3f}, "
              f"progress {run['progress'][0]:.3f} .. {run['progress'][1]:.3f})")
    return 0
