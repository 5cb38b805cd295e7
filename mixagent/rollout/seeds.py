"""Seeds and env resolution shared by every job that rolls episodes out: the backend seed an env seed
trains with, the env seeds a collected dataset used (held-out seeds must avoid them), and env spec paths
from a file name or a Gymnasium id."""

from __future__ import annotations

import json
from pathlib import Path

from mixagent.env.spec import load_spec
from mixagent.errors import ConfigError
from mixagent.paths import REPO_ROOT

__all__ = ["episode_seed_of", "collection_seeds", "run_key", "resolve_env"]


def run_key(mdp: dict) -> str:
    """A spec's runs without its reward and observation layout (:meth:`~mixagent.env.spec.EnvSpec.mdp_dict`
    less ``reward`` and ``observation``, which change no run): the
    training runs, and so their noise, are the same under every reward and lam (rewards are relabelled from
    the raw evaluations), so a held-out seed must avoid the seeds collected on any of them."""
    from mixagent.config import config_hash

    return config_hash({k: v for k, v in mdp.items() if k not in ("reward", "observation")})


def episode_seed_of(seed: int) -> int:
    """The backend seed ``MixingEnv.reset(seed=seed)`` trains with, so audit rows and env rollouts on the
    same seed see the same data order."""
    from gymnasium.utils import seeding

    return int(seeding.np_random(seed)[0].integers(2**31 - 1))


def collection_seeds(spec_hash: str, root: Path | None = None, runs: str | None = None) -> set[int]:
    """Env seeds (``reset(seed=...)``) of every trajectory collected on this spec under ``trajectories/``:
    each run's ``meta.json`` names its spec hash, each trajectory's first line (its header) its seed. Read
    directly, so every room above rollout/ (collection, study, agent) can refuse seeds a dataset used.
    ``runs`` (a :func:`run_key`) also matches runs collected under another reward or lam of the same runs."""
    seeds: set[int] = set()
    for meta in (root or REPO_ROOT / "trajectories").glob("**/meta.json"):
        try:
            d = json.loads(meta.read_text())
            env = d.get("env", {})
            same_runs = runs is not None and isinstance(env.get("spec"), dict) and run_key(env["spec"]) == runs
            if env.get("spec_hash") != spec_hash and not same_runs:
                continue
            if "packed" in d:  # a packed run: every header line of its archive
                import gzip

                lines = gzip.decompress((meta.parent / d["packed"]["archive"]).read_bytes()).splitlines()
                records = (json.loads(x) for x in lines if b'"header"' in x)
                headers = [r for r in records if r.get("kind") == "header"]
            else:
                headers = []
                for f in meta.parent.glob("*.jsonl"):
                    with f.open() as handle:
                        headers.append(json.loads(handle.readline()))
            seeds.update(int(h["episode_seed"]) for h in headers)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue  # unreadable runs are the trajectories verifier's business
    return seeds


def resolve_env(env: str, who: str = "env") -> Path:
    """An env spec path from a path or an id ``mixagent/<name>-v<version>``.

    Raises:
        ConfigError: no such file, or no spec under ``envs/`` has that id (with the known ids).
    """
    path = Path(env)
    if path.suffix in (".yaml", ".yml"):
        full = path if path.is_absolute() else REPO_ROOT / path
        if not full.is_file():
            raise ConfigError(who, [f"env spec file {env!r} not found; give an envs/*.yaml file or an id"])
        return full
    known = {}
    for f in sorted((REPO_ROOT / "envs").glob("*.yaml")):
        try:
            known[load_spec(f).env_id] = f
        except ConfigError:
            continue
    if env not in known:
        from mixagent.errors import suggest

        raise ConfigError(who, [f"unknown env {env!r}{suggest(env, known)}; known: {', '.join(known)}"])
    return known[env]
