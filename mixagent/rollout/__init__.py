"""Rolling episodes out: everything collection (``trajectories/``), research (``study/``) and the agent's
online evaluation (``agent/``) share. Names load lazily.

* ``record``: the one episode record (:class:`EpisodeRecord`) and the store API (:class:`EpisodeStore`) the
  trajectory store, the episode cache and the audit implement;
* ``episode``: a policy rolled out in an env (:func:`rollout`) and the record's summaries;
* ``runner``: the one runner every worker builds (:class:`RunnerSetup`, :class:`Runner`) and its typed tasks
  (a policy's episode, a constant mixture, a collection tree, the audit's schedule tree...);
* ``launchers``: the launchers that run it (inline, local process pool, Ray);
* ``tree``: the one prefix-tree forker (:func:`fork`), walking collection trees and the audit's schedule trees;
* ``engine``: the driver loop (:func:`launch`) and episodes of any policy on given seeds, cached
  (:func:`roll_policies`); ``cache``: the episode cache; ``identity``: policy keys and artifact digests;
* ``seeds``: backend seeds, seeds a dataset used, env resolution; ``schedules``: replay-share schedules.
* ``siblings``: runs shared across lam (the specs that differ in ``reward.lam`` alone, open-loop policies).
"""

from __future__ import annotations

from mixagent._lazy import lazy_exports

__all__ = ["EpisodeRecord", "EpisodeStore", "rollout", "iter_rollout", "summarize", "episode_record",
           "EPISODE_VERSION", "EpisodeCache", "RunnerSetup", "Runner", "roll_policies", "launch", "policy_identity",
           "policy_key", "Schedule", "episode_seed_of", "collection_seeds", "resolve_env", "LAUNCHERS", "TreeConfig",
           "fork"]

__getattr__, __dir__ = lazy_exports(__name__, {
    "EpisodeRecord": "record", "EpisodeStore": "record",
    **{n: "episode" for n in ("rollout", "iter_rollout", "summarize", "episode_record", "EPISODE_VERSION")},
    "EpisodeCache": "cache", "RunnerSetup": "runner", "Runner": "runner", "roll_policies": "engine",
    "launch": "engine", "policy_identity": "identity", "policy_key": "identity", "Schedule": "schedules",
    "episode_seed_of": "seeds", "collection_seeds": "seeds", "resolve_env": "seeds", "LAUNCHERS": "launchers",
    "TreeConfig": "tree", "fork": "tree"})
