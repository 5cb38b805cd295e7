"""mixagent: learned data mixing for continual pre-training.

Importing the package registers one Gymnasium id per ``envs/*.yaml`` (``mixagent/<name>-v<version>``);
registration only records names — nothing is built until ``gymnasium.make``.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["register_envs", "__version__"]


def register_envs() -> list[str]:
    """Register every spec in the envs directory with Gymnasium; returns the ids."""
    import re

    import gymnasium

    from mixagent.paths import ENVS_DIR

    ids = []
    for path in sorted(ENVS_DIR.glob("*.yaml")):
        m = re.search(r"^version:\s*(\d+)", path.read_text(), re.M)
        env_id = f"mixagent/{path.stem}-v{m.group(1) if m else 0}"
        if env_id not in gymnasium.registry:
            gymnasium.register(id=env_id, entry_point="mixagent.env:MixingEnv", kwargs={"spec": str(path)},
                               disable_env_checker=False)
        ids.append(env_id)
    return ids


register_envs()
