"""``python -m mixagent.train_agent --config configs/agent/<name>.yaml [key=value ...] [--resume]``: the
mission's entry point, the same command as ``python -m mixagent.agent train`` (see
:mod:`mixagent.agent.__main__`)."""

from __future__ import annotations

import sys

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    from mixagent.agent.__main__ import main as train_main

    return train_main(argv, prog="python -m mixagent.train_agent")


if __name__ == "__main__":
    sys.exit(main())
