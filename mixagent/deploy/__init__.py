"""Deployment: a mixing policy drives the data mixture of a real training run (Hugging Face Trainer
callback or plain loop). Names are imported lazily, so ``import mixagent.deploy`` stays cheap and
transformers is loaded only with :class:`MixAgentCallback`."""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["MixingScheduler", "SchedulerConfig", "MixtureDataset", "TokenArraySource", "HFDatasetSource",
           "WeightSchedule", "default_lag", "HeldOutLoss", "Mixer", "MixAgentCallback"]

_WHERE = {"MixingScheduler": "scheduler", "SchedulerConfig": "scheduler", "MixtureDataset": "mixture",
          "TokenArraySource": "mixture", "HFDatasetSource": "mixture", "WeightSchedule": "mixture",
          "default_lag": "mixture", "HeldOutLoss": "heldout", "Mixer": "loop", "MixAgentCallback": "callback"}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'mixagent.deploy' has no attribute {name!r}")
    return getattr(importlib.import_module(f"mixagent.deploy.{_WHERE[name]}"), name)
