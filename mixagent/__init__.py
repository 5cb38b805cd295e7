"""mixagent: learned data mixing for continual pre-training.

``import mixagent`` reads no file and registers nothing. Environments are registered with Gymnasium by
``mixagent.register_envs()`` or on first use through Gymnasium's ``module:id`` form,
``gymnasium.make("mixagent.envs:mixagent/math-cpt-v1")`` (see :mod:`mixagent.envs`). The command line is
``mixagent <job> ...`` (:mod:`mixagent.cli`).
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["register_envs", "__version__"]


def register_envs() -> list[str]:
    """Register every ``envs/*.yaml`` spec and every committed world model with Gymnasium; returns the ids
    (:func:`mixagent.envs.register_envs`)."""
    from mixagent.envs import register_envs as register

    return register()
