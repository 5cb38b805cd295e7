"""Typed errors a user can cause. Each message says what was wrong, what was expected and how to fix it."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "MixagentError",
    "WorldModelError",
    "ConfigError",
    "UsageError",
    "WeightsError",
    "ActionError",
    "UnknownDomainError",
    "DataMissingError",
    "SourceUnavailableError",
    "CorruptArtifactError",
    "TrajectoryFormatError",
    "SchemaVersionError",
    "ResumeMismatchError",
    "StoreWriteError",
    "WorkerError",
    "CollectWorkerError",
    "AgentDataError",
    "suggest",
]


class MixagentError(Exception):
    """Base class of every error mixagent raises on purpose."""


class ConfigError(MixagentError, ValueError):
    """A config file or override has unknown keys or bad values (all problems are listed at once)."""

    def __init__(self, where: str, problems: list[str]) -> None:
        self.where = where
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid config {where}: {len(self.problems)} problem(s)\n{lines}")


class UsageError(MixagentError, RuntimeError):
    """An object was used out of order or against its contract at run time (e.g. ``Mixer.update`` before
    ``begin()``, a schedule change that moves backwards, ``act`` before ``reset``), as opposed to a bad
    config value (:class:`ConfigError`). The message says which call to make first or what to pass."""


class WeightsError(MixagentError, ValueError):
    """Domain weights are negative, non-finite, do not sum to one or do not match the domain count."""


class ActionError(MixagentError, ValueError):
    """An environment action has the wrong shape or non-finite entries."""


class UnknownDomainError(MixagentError, KeyError):
    """A domain name that the domain space does not contain."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


class DataMissingError(MixagentError, FileNotFoundError):
    """A data directory or built artifact is missing; the message names the command that builds it."""


class SourceUnavailableError(MixagentError, RuntimeError):
    """A registry package a corpus is built from could not be fetched or read."""


class CorruptArtifactError(MixagentError, RuntimeError):
    """A cached file does not match the hash recorded when it was written."""


class TrajectoryFormatError(CorruptArtifactError):
    """A trajectory file or run manifest is corrupt, cut off or does not match its recorded checksum."""


class SchemaVersionError(MixagentError, ValueError):
    """A trajectory run or policy artifact was written with a schema version this code does not read."""


class ResumeMismatchError(MixagentError, ValueError):
    """``--resume`` was asked for a run whose recorded config or environment differs from the current one."""


class StoreWriteError(MixagentError, OSError):
    """Writing to a trajectory or agent run failed (disk full, permissions); finished work is left intact."""


class WorkerError(MixagentError, RuntimeError):
    """A worker (collection or online evaluation) raised or died; the message carries its traceback or exit
    code. Results the driver stored before are kept; ``--resume`` continues."""


CollectWorkerError = WorkerError  # the name before workers served online evaluation too


class AgentDataError(MixagentError, ValueError):
    """Trajectories cannot form an agent's dataset: none given, none usable, too few for the requested
    selection, or runs of different env specs or domain spaces mixed."""


class WorldModelError(MixagentError, ValueError):
    """A world model cannot serve the request: applied to another spec, observation layout or domain space,
    or fitted on too little data."""


def suggest(name: str, choices: Iterable[str]) -> str:
    """Return ' (did you mean 'x'?)' for the closest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
