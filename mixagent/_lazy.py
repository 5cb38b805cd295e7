"""Lazy package faces: ``from mixagent.agent import train_agent`` imports ``mixagent.agent.train`` only
when the name is first used, so importing a package stays cheap (no torch, d3rlpy or transformers)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(package: str, where: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` whose public names live in submodules.

    Args:
        package: the package's ``__name__``.
        where: ``{public name: submodule}`` (relative to ``package``).
    """

    def __getattr__(name: str) -> Any:
        if name not in where:
            from mixagent.errors import suggest

            raise AttributeError(f"module {package!r} has no attribute {name!r}{suggest(name, where)}")
        return getattr(importlib.import_module(f"{package}.{where[name]}"), name)

    def __dir__() -> list[str]:
        return sorted(set(where) | set(vars(sys.modules[package])))

    return __getattr__, __dir__
