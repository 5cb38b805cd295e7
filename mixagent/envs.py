"""Gymnasium ids for mixagent's environments: one per ``envs/*.yaml`` (``mixagent/<name>-v<version>``) and
one surrogate per committed world model (``mixagent/<name>-surrogate-v<version>``, from
``checkpoints/world_models/<name>-v<version>/``). Registration only records names; nothing is built until
``gymnasium.make``.

Importing this module registers them, so Gymnasium's ``module:id`` form registers on first use::

    env = gymnasium.make("mixagent.envs:mixagent/math-cpt-v1")

``import mixagent`` reads no file; ``mixagent.register_envs()`` registers explicitly.
"""

from __future__ import annotations

__all__ = ["register_envs", "ENV_IDS"]


def register_envs() -> list[str]:
    """Register every spec in the envs directory and every committed world model with Gymnasium (again:
    a no-op for ids already registered); returns the ids."""
    import gymnasium
    import yaml

    from mixagent.paths import ENVS_DIR

    ids = []
    for path in sorted(ENVS_DIR.glob("*.yaml")):
        try:  # the id comes from the spec's own name and version; the full spec is validated by make()
            head = yaml.safe_load(path.read_text()) or {}
            env_id = f"mixagent/{head.get('name', path.stem)}-v{int(head.get('version', 0))}"
        except (yaml.YAMLError, AttributeError, TypeError, ValueError):
            env_id = f"mixagent/{path.stem}-v0"
        if env_id not in gymnasium.registry:
            gymnasium.register(id=env_id, entry_point="mixagent.env.environment:MixingEnv", kwargs={"spec": str(path)},
                               disable_env_checker=False)
        ids.append(env_id)
    # surrogates: one per committed world model (checkpoints/world_models/<name>-v<version>/)
    for meta in sorted((ENVS_DIR.parent / "checkpoints" / "world_models").glob("*-v*/meta.json")):
        name, version = meta.parent.name.rsplit("-v", 1)
        env_id = f"mixagent/{name}-surrogate-v{version}"
        if env_id not in gymnasium.registry:
            gymnasium.register(id=env_id, entry_point="mixagent.model_based.surrogate:make_surrogate_env",
                               kwargs={"world_model": str(meta.parent)}, disable_env_checker=False)
        ids.append(env_id)
    return ids


ENV_IDS: list[str] = register_envs()
