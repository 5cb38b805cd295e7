"""Trajectory runs -> transitions -> a d3rlpy dataset.

Observations are rebuilt from the stored raw evaluations by the same :class:`ObservationBuilder` the env
uses, and rewards are recomputed with a named reward function, so a different reward or a new
observation layout needs no new collection. Branched trajectories store their shared prefix as a copy of
the parent's steps; by default each shared step enters the dataset once (the child's episode starts at
its branch step), so a tree does not weigh its early steps ``factor ** depth`` times.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mixagent.config import is_number
from mixagent.domains import Domain, DomainSpace
from mixagent.env.observation import OBSERVATION_V2, OBSERVATION_VERSION, observation_builder
from mixagent.env.rewards import REWARDS, Reference, balanced_score, needs_reference, step_reward
from mixagent.errors import AgentDataError, ConfigError, WorldModelError, suggest
from mixagent.trajectories.store import Run, Trajectory

__all__ = ["TrajectorySet", "Transitions", "load_trajectories", "build_transitions", "relabelled_transitions",
           "stated_of", "top_trajectories", "check_reward",
           "to_d3rlpy", "space_from_meta", "concat_transitions"]


def space_from_meta(domains: dict) -> DomainSpace:
    """The domain space a run recorded (``meta.json`` ``domains``: names, fields and the space file); the
    domains' corpora are not needed to rebuild observations and rewards."""
    name = Path(str(domains.get("space", "recorded"))).stem
    return DomainSpace(name, [Domain(n, f, []) for n, f in zip(domains["names"], domains["fields"])])


@dataclasses.dataclass
class TrajectorySet:
    """Trajectories of one or more compatible runs (same env spec and domain space), flagged ones left out.

    Attributes:
        runs: run directories, in the order given.
        space: their domain space.
        env: the runs' env identity (``meta.json`` ``env``: id, spec, spec_hash, horizon, ...).
        trajectories: ``(run name, trajectory)`` pairs, flagged (NaN) trajectories excluded.
        flagged: how many flagged trajectories were left out.
        headers: every trajectory's header by run and id, flagged ones included (branch ancestry).
        reference: the reference extremes the runs recorded (``meta.json`` ``proxy.reference``; collected on
            a spec with a normalised reward), which normalised rewards are recomputed with.
        observed_lr: per segment, the learning rate over the peak that ``observe_lr`` specs put in the
            observation (``meta.json`` ``proxy.observed_lr``).
    """

    runs: list[Path]
    space: DomainSpace
    env: dict
    trajectories: list[tuple[str, Trajectory]]
    flagged: int
    headers: dict[str, dict[str, dict]]
    reference: Reference | None = None
    observed_lr: list[float] | None = None

    @property
    def horizon(self) -> int:
        return int(self.env["horizon"])

    def episode_seeds(self) -> set[int]:
        """Every episode seed used in collection (online evaluation must use others)."""
        return {int(t.header["episode_seed"]) for _, t in self.trajectories}


def load_trajectories(paths: Sequence[str | Path]) -> TrajectorySet:
    """Read runs and check they can form one dataset.

    Raises:
        AgentDataError: no runs, a run without usable trajectories overall, or runs that mix env specs,
            domain spaces or observation versions.
    """
    if not paths:
        raise AgentDataError("no trajectory runs given; set runs: [trajectories/<run>] (collect one with "
                             "`make collect-trajectories`)")
    runs, dirs = [], []
    for p in paths:
        path = Path(p)
        if not (path / "meta.json").is_file():
            raise AgentDataError(f"{path} is not a trajectory run (no meta.json); collect it with "
                                 f"`mixagent collect --config configs/collect/<name>.yaml`")
        runs.append(Run(path))
        dirs.append(path)
    first = runs[0]
    for run in runs[1:]:
        _check_compatible(first, run)
    version = first.meta["env"].get("observation_version")
    if version != OBSERVATION_VERSION:
        raise AgentDataError(f"{first.path} was collected with observation version {version}, this code builds "
                             f"version {OBSERVATION_VERSION}; observations are rebuilt from raw evaluations, so "
                             f"only the recorded version differs: re-collect or use a matching mixagent version")
    items, flagged, headers = [], 0, {}
    for run in runs:
        if run.name in headers:
            raise AgentDataError(f"two runs are named {run.name!r} ({[str(d) for d in dirs]}); list each run once")
        headers[run.name] = {}
        for traj in run.trajectories():
            headers[run.name][traj.id] = traj.header
            if traj.flagged:
                flagged += 1
            else:
                items.append((run.name, traj))
    if not items:
        raise AgentDataError(f"the runs {[str(d) for d in dirs]} hold no usable trajectories ({flagged} flagged as "
                             f"diverged); collect more with `mixagent collect ... --resume`")
    proxy = first.meta.get("proxy") or {}
    try:
        reference = Reference.from_json(proxy["reference"]) if proxy.get("reference") else None
    except (KeyError, TypeError, ConfigError) as exc:
        raise AgentDataError(f"{first.path}/meta.json proxy.reference is invalid ({type(exc).__name__}: {exc}); "
                             f"restore the file from git or re-collect") from None
    lrs = proxy.get("observed_lr")
    horizon = int(first.meta["env"]["horizon"])
    if lrs is not None and not (isinstance(lrs, list) and len(lrs) == horizon
                                and all(is_number(x) and 0 <= x <= 1 for x in lrs)):
        raise AgentDataError(f"{first.path}/meta.json proxy.observed_lr is {lrs!r}; expected {horizon} learning rates "
                             f"over the peak in [0, 1], one per segment: restore the file from git or re-collect")
    return TrajectorySet(dirs, space_from_meta(first.meta["domains"]), first.meta["env"], items, flagged,
                         headers, reference, lrs)


def _check_compatible(a: Run, b: Run) -> None:
    da, db = a.meta["domains"], b.meta["domains"]
    if da["names"] != db["names"] or da["fields"] != db["fields"]:
        only_a = [n for n in da["names"] if n not in db["names"]]
        only_b = [n for n in db["names"] if n not in da["names"]]
        detail = (f"only in {a.path}: {only_a}; only in {b.path}: {only_b}" if only_a or only_b
                  else "same names in a different order or with different fields")
        raise AgentDataError(f"runs {a.path} and {b.path} use different domain spaces ({detail}); train one agent "
                             f"per domain space: list only runs of the same space")
    if a.meta["env"]["spec_hash"] != b.meta["env"]["spec_hash"]:
        sa, sb = a.meta["env"]["spec"], b.meta["env"]["spec"]
        keys = sorted(k for k in set(sa) | set(sb) if sa.get(k) != sb.get(k)) or ["base model or data"]
        raise AgentDataError(f"runs {a.path} and {b.path} were collected in different env specs ({a.meta['env']['id']}"
                             f" vs {b.meta['env']['id']}; differing: {', '.join(keys)}); list only runs of one spec")
    pa, pb = a.meta.get("proxy") or {}, b.meta.get("proxy") or {}
    for key in ("reference", "observed_lr"):
        if json.dumps(pa.get(key), sort_keys=True) != json.dumps(pb.get(key), sort_keys=True):
            raise AgentDataError(f"runs {a.path} and {b.path} recorded different {key} (meta.json proxy.{key}: "
                                 f"{pa.get(key)} vs {pb.get(key)}), so their rewards or observations would not "
                                 f"agree; list only runs collected against the same reference runs and schedule")


@dataclasses.dataclass
class Transitions:
    """Flat arrays in d3rlpy's episode layout (an episode ends at a terminal or a timeout).

    A trajectory cut short ends with one *final-observation* row (``final_obs``): the observation after its
    last completed step, with a zero action and reward and the timeout flag, which d3rlpy reads only as the
    next observation of the step before. So every completed step is a trainable transition.
    """

    observations: np.ndarray  # (N, 3K+5) float32; (N, 3K+6) with the learning rate (observe_lr specs)
    actions: np.ndarray  # (N, K) float32, in [-1, 1]
    rewards: np.ndarray  # (N,) float32, the recomputed reward (unscaled)
    terminals: np.ndarray  # (N,) float32
    timeouts: np.ndarray  # (N,) float32
    episodes: list[dict]  # per episode: run, id, first row, first step, steps, return of the whole trajectory
    final_obs: np.ndarray | None = None  # (N,) bool: the final-observation rows of trajectories cut short

    def __len__(self) -> int:
        """Rows (transitions plus final-observation rows)."""
        return len(self.rewards)

    @property
    def transition_count(self) -> int:
        """Trainable transitions: one per completed step (what d3rlpy's ``transition_count`` reports)."""
        return len(self) - (int(self.final_obs.sum()) if self.final_obs is not None else 0)

    def describe(self) -> dict[str, Any]:
        return {"transitions": self.transition_count, "rows": len(self), "episodes": len(self.episodes),
                "trajectories": len({(e["run"], e["id"]) for e in self.episodes}),
                "terminals": int(self.terminals.sum()), "timeouts": int(self.timeouts.sum())}


def trajectory_return(traj: Trajectory, space: DomainSpace, reward: str, lam: float,
                      reference: Reference | None = None) -> float:
    """``B_T - B_0`` under ``reward`` (the last completed evaluation for a truncated trajectory;
    ``reference`` for normalised rewards)."""
    evals = traj.evals
    if not evals:
        return 0.0
    return (balanced_score(reward, lam, traj.start, evals[-1], space, reference)
            - balanced_score(reward, lam, traj.start, traj.start, space, reference))


def top_trajectories(tset: TrajectorySet, fraction: float, reward: str, lam: float) -> list[tuple[str, Trajectory]]:
    """The best ``floor(fraction * N)`` complete trajectories by return under ``reward``.

    Raises:
        AgentDataError: when that selects none.
    """
    complete = [(r, t) for r, t in tset.trajectories if not t.truncated]
    n = math.floor(fraction * len(complete) + 1e-9)
    if not 0 < fraction <= 1 or n < 1:
        need = math.ceil(1 / fraction) if fraction > 0 else "more"
        raise AgentDataError(f"sft.top_fraction={fraction} of {len(complete)} complete trajectories selects none; "
                             f"collect at least {need} trajectories or raise sft.top_fraction (at most 1)")
    check_reward(tset, reward)
    ranked = sorted(complete, key=lambda rt: -trajectory_return(rt[1], tset.space, reward, lam, tset.reference))
    return ranked[:n]


def _owner(headers: dict[str, dict], tid: str, step: int) -> str:
    """The trajectory that first produced step ``step`` of ``tid`` (branched prefixes are copies)."""
    while step < headers[tid]["branch_step"] and headers[tid]["parent"] in headers:
        tid = headers[tid]["parent"]
    return tid


def check_reward(tset: TrajectorySet, reward: str) -> None:
    """Raise unless the runs carry what ``reward`` and their observation need.

    Raises:
        ConfigError: an unknown reward name.
        AgentDataError: a normalised reward on runs without recorded reference extremes, or an
            ``observe_lr`` spec whose runs did not record the learning rates.
    """
    if reward not in REWARDS:
        raise ConfigError("reward", [f"unknown reward {reward!r}{suggest(reward, REWARDS)}; known: "
                                     f"{', '.join(REWARDS)}"])
    if needs_reference(reward) and tset.reference is None:
        raise AgentDataError(f"reward {reward!r} is normalised by reference runs, and the runs "
                             f"{[str(r) for r in tset.runs]} recorded none (meta.json proxy.reference; only runs "
                             f"collected on a spec with a normalised reward do): train on a relative reward "
                             f"(reward=balanced_bpb) or collect on a v1 spec such as envs/math-cpt.yaml")
    if tset.env["spec"].get("observe_lr") and tset.observed_lr is None:
        raise AgentDataError(f"the runs were collected on {tset.env['id']}, whose observation carries the learning "
                             f"rate, but their meta.json has no proxy.observed_lr; re-collect them with this mixagent")


def stated_of(tset: TrajectorySet, lam: float) -> dict[str, float]:
    """The stated setting (:meth:`mixagent.env.setting.Setting.stated`) of the runs' env spec, at ``lam``.

    Raises:
        AgentDataError: the recorded spec no longer loads (a moved space or base-model file).
    """
    from mixagent.config import from_dict
    from mixagent.env.setting import stated_from_spec
    from mixagent.env.spec import EnvSpec

    try:
        spec = from_dict(EnvSpec, tset.env["spec"])
    except ConfigError as exc:
        raise AgentDataError(f"the runs' recorded env spec ({tset.env.get('id')}) does not load, so their stated "
                             f"setting is unknown: {'; '.join(exc.problems)}") from None
    return {**stated_from_spec(spec), "lam": float(lam)}


def build_transitions(tset: TrajectorySet, reward: str, lam: float,
                      select: list[tuple[str, Trajectory]] | None = None, dedupe: bool = True,
                      observation: int = OBSERVATION_VERSION) -> Transitions:
    """Transitions of ``select`` (default: every usable trajectory) with rewards recomputed under ``reward``.

    Args:
        tset: the trajectory set.
        reward: a registered reward name (``mixagent.env.rewards.REWARDS``).
        lam: target-field weight of the balanced score (and, in observation version 2, an observed feature:
            build one set per ``lam`` and concatenate them to relabel, :func:`relabelled_transitions`).
        select: the trajectories to use.
        dedupe: enter each branched prefix step once.
        observation: the layout: 1 (:class:`~mixagent.env.observation.ObservationBuilder`) or 2
            (:class:`~mixagent.env.observation.SettingObservationBuilder`: the stated setting observed; needs
            runs that recorded the learning rates, ``observe_lr`` specs).

    Raises:
        ConfigError: an unknown reward or observation version.
        AgentDataError: see :func:`check_reward`; version 2 on runs without recorded learning rates.
    """
    check_reward(tset, reward)
    space, horizon, ref, lrs = tset.space, tset.horizon, tset.reference, tset.observed_lr
    if observation not in (OBSERVATION_VERSION, OBSERVATION_V2):
        raise ConfigError("observation", [f"observation version must be {OBSERVATION_VERSION} or {OBSERVATION_V2}, "
                                          f"got {observation!r}"])
    if observation == OBSERVATION_V2 and lrs is None:
        raise AgentDataError(f"observation version 2 observes the learning rate, and the runs collected on "
                             f"{tset.env.get('id')} recorded none (meta.json proxy.observed_lr): collect on a "
                             f"spec with observe_lr: true (the settings suites' family envs/math-cpt.yaml has it)")
    builder = observation_builder(space, observation, lrs is not None,
                                  stated_of(tset, lam) if observation == OBSERVATION_V2 else None)
    lr = (lambda t: lrs[min(t, horizon - 1)]) if lrs is not None else (lambda t: None)  # noqa: E731
    items = sorted(select if select is not None else tset.trajectories, key=lambda rt: (rt[0], rt[1].id))
    seen: set[tuple[str, str, int]] = set()
    obs, acts, rews, terms, outs, boots, episodes = [], [], [], [], [], [], []
    for run, traj in items:
        evals = traj.evals
        n = len(evals)  # a truncated trajectory's failed last step has no evaluation and no reward
        if n == 0:
            continue
        run_headers = tset.headers[run]
        first = 0
        if dedupe:
            while first < n and (run, _owner(run_headers, traj.id, first), first) in seen:
                first += 1
            seen.update((run, _owner(run_headers, traj.id, s), s) for s in range(first, n))
        if first == n:
            continue
        start, row = traj.start, len(obs)
        weights = [np.asarray(traj.header["start_weights"])] + [np.asarray(s["weights"]) for s in traj.steps[:n]]
        before = [start] + evals  # before[t] is the evaluation the action at step t saw
        for t in range(first, n):
            prev = before[t - 1] if t >= 1 else start
            obs.append(builder(weights[t], start, prev, before[t], t / horizon, lr(t)))
            acts.append(traj.steps[t]["action"])
            rews.append(step_reward(reward, lam, start, before[t], before[t + 1], space, ref))
            last = t == n - 1
            terms.append(float(last and not traj.truncated and n == horizon))
            outs.append(float(last and not terms[-1]))
            boots.append(False)
        if not terms[-1]:
            # cut short (diverged, or stored before the horizon): the last completed step has its evaluation,
            # so the observation after it is known. It goes in as a final row that d3rlpy uses only as that
            # transition's next observation (an episode ending in a timeout yields rows - 1 transitions).
            outs[-1] = 0.0
            obs.append(builder(weights[n], start, before[n - 1], before[n], n / horizon, lr(n)))
            acts.append(np.zeros(space.k))
            rews.append(0.0)
            terms.append(0.0)
            outs.append(1.0)
            boots.append(True)
        episodes.append({"run": run, "id": traj.id, "row": row, "first_step": first, "steps": n - first,
                         "return": trajectory_return(traj, space, reward, lam, ref)})
    if not obs:
        raise AgentDataError("the selected trajectories hold no completed steps; collect more trajectories")
    return Transitions(np.asarray(obs, np.float32), np.clip(np.asarray(acts, np.float32), -1, 1),
                       np.asarray(rews, np.float32), np.asarray(terms, np.float32), np.asarray(outs, np.float32),
                       episodes, np.asarray(boots, bool))


def to_d3rlpy(tr: Transitions, action_size: int) -> Any:
    """A d3rlpy ``MDPDataset`` with the action space forced continuous (d3rlpy guesses discrete when the
    actions look integral, e.g. one-hot mixtures mapped to ±1)."""
    from mixagent.agent.algos import import_d3rlpy

    d3rlpy = import_d3rlpy()
    return d3rlpy.dataset.MDPDataset(tr.observations, tr.actions, tr.rewards, tr.terminals, tr.timeouts,
                      action_space=d3rlpy.constants.ActionSpace.CONTINUOUS, action_size=action_size)


def relabelled_transitions(tset: TrajectorySet, reward: str, lams: Sequence[float],
                           select: list[tuple[str, Trajectory]] | None = None, dedupe: bool = True) -> Transitions:
    """One policy for every trade-off: the same trajectories once per ``lam`` of ``lams``, each with the rewards
    at that ``lam`` and ``lam`` in its observation (version 2), concatenated in the order given. Rewards are
    recomputed from the raw evaluations, so no run is collected twice.

    Raises:
        ConfigError: no lams, or one outside [0, 1]; see :func:`build_transitions`.
    """
    bad = [x for x in lams if not (is_number(x) and 0.0 <= float(x) <= 1.0)]
    if not lams or bad:
        raise ConfigError("lams", [f"lams must be a non-empty list of numbers in [0, 1], got {list(lams)}"])
    out = None
    for lam in lams:
        part = build_transitions(tset, reward, float(lam), select, dedupe, observation=OBSERVATION_V2)
        for e in part.episodes:
            e["lam"] = float(lam)
        out = part if out is None else concat_transitions(out, part)
    return out


def concat_transitions(real: Transitions, synthetic: Transitions) -> Transitions:
    """Real rows then synthetic rows (episode row indices shifted)."""
    if real.observations.shape[1] != synthetic.observations.shape[1]:
        raise WorldModelError(f"synthetic observations have {synthetic.observations.shape[1]} features, the real "
                              f"ones {real.observations.shape[1]}: the world model's observation layout differs")
    n = len(real)
    real_final = real.final_obs if real.final_obs is not None else np.zeros(n, bool)
    return Transitions(*(np.concatenate([getattr(real, f), getattr(synthetic, f)])
                         for f in ("observations", "actions", "rewards", "terminals", "timeouts")),
                       real.episodes + [e | {"row": e["row"] + n} for e in synthetic.episodes],
                       np.concatenate([real_final, synthetic.final_obs]))
