"""Behaviour cloning of the per-domain policy (:mod:`mixagent.policies.per_domain`):
``mixagent per-domain [--data RUN ...] [--out DIR] [--steps N]``.

The same data as the SFT stage of ``make train-agent`` (the best ``top_fraction`` of trajectories under the
env's reward, each branched prefix once), the same loss as d3rlpy's deterministic BC (mean squared error
on the action in ``[-1, 1]``), plain torch: d3rlpy's actors end in a dense head over a fixed ``K``, which is
exactly what this policy must not have. Batches may mix spaces of different ``K``: domains are padded to
the largest ``K`` with a validity mask.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from mixagent.agent.dataset import build_transitions, load_trajectories, top_trajectories
from mixagent.errors import ConfigError
from mixagent.paths import REPO_ROOT
from mixagent.policies.per_domain import (
    PerDomainNet,
    feature_ranges,
    features,
    run_feature_names,
    write_per_domain_artifact,
)

__all__ = ["PerDomainBCConfig", "train_per_domain", "training_arrays", "ACTION_TARGETS"]

log = logging.getLogger(__name__)
ACTION_TARGETS = ("step", "rest_mean")


@dataclasses.dataclass(frozen=True)
class PerDomainBCConfig:
    """Behaviour cloning of the per-domain policy.

    Args:
        data: trajectory runs (any domain spaces; each run's own reward and reference); a suite collection
            (``trajectories/suite-v1``) stands for its finished settings' runs
            (:func:`mixagent.trajectories.suite.expand_runs`).
        top_fraction: the best share of each run's trajectories cloned (as ``sft.top_fraction``).
        steps: gradient steps; batch_size: transitions per step; lr: Adam's learning rate.
        hidden: width of the shared networks.
        seed: initialisation and batch order.
        exclude: domains left out of training (the generalization protocol's unseen source domains): their
            entries are removed from every observation and action and the remaining weights renormalised,
            as if the run had had only the other domains.
        observation: the observation layout: 1 (environment v1's) or 2 (one policy across settings: the stated
            setting observed, :class:`~mixagent.env.observation.SettingObservationBuilder`).
        lams: version 2 only: the trade-offs each run is relabelled at (its trajectories enter once per lam,
            the best ``top_fraction`` at that lam, with lam observed; :func:`mixagent.agent.dataset.
            relabelled_transitions`); empty: each run's own ``reward.lam``.
        unknown_budget: version 2 only: the share of rows (seeded) whose unique target tokens are shown as
            unknown (``repetition_log2`` 0, ``repetition_known`` 0), so the policy has seen a run whose user does
            not state them: every training setting states its budget, and a deployment without
            ``policy.stated.target_tokens`` would otherwise be out of range at every decision.
        action_target: what a row clones: ``step``, the action taken at that step (d3rlpy's BC), or
            ``rest_mean``, the mean action of the trajectory from that step to its end. The behaviour policies
            are random walks, Dirichlet draws and noisy replays, so a cloned step carries their step-to-step
            noise; where the headroom is a static choice (``../shared/SETTINGS.md``), the rest of the run's mean
            is the decision worth cloning (with ``guarded:...,commit_after=N`` it becomes a learned commit).
    """

    data: tuple[str, ...] = ("trajectories/reference/math-cpt-v1",)
    top_fraction: float = 0.25
    steps: int = 2000
    batch_size: int = 64
    lr: float = 1e-3
    hidden: int = 64
    seed: int = 0
    exclude: tuple[str, ...] = ()
    observation: int = 1
    lams: tuple[float, ...] = ()
    unknown_budget: float = 0.0
    action_target: str = "step"

    def check(self) -> list[str]:
        problems = [] if self.data else ["data is empty: name at least one trajectory run"]
        if self.action_target not in ACTION_TARGETS:
            problems.append(f"action_target must be one of {', '.join(ACTION_TARGETS)}, got {self.action_target!r}: "
                            f"step clones each step's action, rest_mean the mean action from that step to the end")
        if self.observation not in (1, 2):
            problems.append(f"observation must be 1 or 2, got {self.observation!r}")
        if self.lams and self.observation != 2:
            problems.append("lams relabel the runs for a lam-conditioned policy, which only observation 2 gives: "
                            "set observation: 2, or drop lams")
        if not 0 <= self.unknown_budget < 1 or (self.unknown_budget and self.observation != 2):
            problems.append(f"unknown_budget must be in [0, 1) and needs observation: 2 (the budget is a version-2 "
                            f"feature), got {self.unknown_budget} with observation {self.observation}")
        if any(not 0 <= x <= 1 for x in self.lams) or len(set(self.lams)) != len(self.lams):
            problems.append(f"lams must be distinct numbers in [0, 1], got {list(self.lams)}")
        if len(set(self.exclude)) != len(self.exclude):
            problems.append(f"exclude repeats domains: {list(self.exclude)}")
        if not 0 < self.top_fraction <= 1:
            problems.append(f"top_fraction must be in (0, 1], got {self.top_fraction}")
        if min(self.steps, self.batch_size, self.hidden) < 1 or not self.lr > 0:
            problems.append("steps, batch_size and hidden must be >= 1 and lr > 0")
        return problems


def _drop(obs: np.ndarray, initial: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The observation and initial weights of the space reduced to the ``keep`` domains (weights renormalised;
    relative losses and their changes kept; run-level entries unchanged)."""
    k = len(keep)
    w = obs[:k][keep]
    parts = [w / max(w.sum(), 1e-12), obs[k:2 * k][keep], obs[2 * k:3 * k][keep], obs[3 * k:]]
    return np.concatenate(parts), initial[keep] / max(initial[keep].sum(), 1e-12)


def _rows(run: str, fraction: float, exclude: tuple[str, ...] = (), observation: int = 1,
          lams: tuple[float, ...] = (), action_target: str = "step") -> tuple[list[tuple], dict]:
    """Per transition ``(domain features (K, D), target mask (K,), run features (R,))`` and the actions, of
    the best trajectories of ``run`` (without the ``exclude`` domains); with ``lams`` (observation 2), the best
    at each lam, once per lam."""
    tset = load_trajectories([REPO_ROOT / run])
    unknown = [d for d in exclude if d not in tset.space.names]
    keep = np.array([n not in exclude for n in tset.space.names])
    fields = {f for f, kept in zip(tset.space.fields, keep) if kept}
    if unknown or fields != {"source", "target"}:
        raise ConfigError("per_domain", [f"exclude {list(exclude)}: {run}'s domains are {list(tset.space.names)}; "
                                         f"name only those, and keep at least one domain of each field"])
    spec = tset.env["spec"]
    reward, lam = spec["reward"]["name"], float(spec["reward"]["lam"])
    target = tset.space.field_mask("target").astype(np.float32)
    rows: list[tuple] = []
    for at in lams or (lam,):
        tr = build_transitions(tset, reward, at, select=top_trajectories(tset, fraction, reward, at),
                               observation=observation)
        rows += _clone_rows(tr, tset, keep, target, exclude, observation, action_target)
    return rows, {"run": run, "space": tset.space.name, "k": int(keep.sum()), "excluded": list(exclude),
                  "transitions": len(rows), "lams": list(lams or (lam,)),
                  "action": dict(spec["action"]), "observe_lr": tset.observed_lr is not None}


def _clone_rows(tr, tset, keep: np.ndarray, target: np.ndarray, exclude: tuple[str, ...],
                observation: int, action_target: str = "step") -> list[tuple]:
    """The cloned rows of transitions ``tr`` of ``tset`` (see :func:`_rows`; ``action_target``: see
    :class:`PerDomainBCConfig`)."""
    rows, initial, actions, step = [], None, None, 0
    keep_row = ~tr.final_obs if tr.final_obs is not None else np.ones(len(tr), bool)
    trajs = {(r, t.id): t for r, t in tset.trajectories}
    starts = {e["row"]: e for e in tr.episodes}
    for i in range(len(tr)):
        obs = tr.observations[i].astype(np.float64)
        if i in starts:  # an episode's first row (a branch's is not step 0): its trajectory's initial weights
            traj = trajs[(starts[i]["run"], starts[i]["id"])]
            initial = np.asarray(traj.header["start_weights"], np.float64)
            actions = np.clip(np.array([s["action"] for s in traj.steps[:len(traj.evals)]], np.float64), -1, 1)
            step = starts[i]["first_step"]
        if keep_row[i]:
            o, init = _drop(obs, initial, keep) if exclude else (obs, initial)
            dom, run_f = features(o, target[keep], init, observation)
            act = tr.actions[i] if action_target == "step" else actions[step:].mean(0).astype(np.float32)
            rows.append((dom, target[keep], run_f, act[keep]))
        step += 1
    return rows


def training_arrays(cfg: PerDomainBCConfig) -> tuple[dict[str, np.ndarray], list[dict]]:
    """The observations and actions ``cfg`` trains on, padded to the largest ``K``: ``dom`` ``(N, K, D)``,
    ``target``, ``valid`` and ``action`` ``(N, K)``, ``run`` ``(N, R)``; and what each run gave (``runs``).

    Raises:
        ConfigError: bad config, or runs whose action maps (temperature, floor) or observation layouts differ.
    """
    problems = cfg.check()
    if problems:
        raise ConfigError("per_domain", problems)
    from mixagent.trajectories.suite import expand_runs

    rows, runs = [], []
    data, left = expand_runs(cfg.data)  # a suite collection stands for its finished settings' runs
    if left:
        log.warning("per-domain BC: %d suite settings not finished yet are left out (%s, ...)", len(left), left[0])
    for run in data:
        r, info = _rows(run, cfg.top_fraction, tuple(cfg.exclude), cfg.observation, tuple(cfg.lams),
                        cfg.action_target)
        rows += r
        runs.append(info)
    maps = {(i["action"]["temperature"], i["action"]["floor"]) for i in runs}
    if len(maps) > 1:
        raise ConfigError("per_domain", [f"the runs use different action maps {sorted(maps)}; clone runs of one map"])
    if len({r["observe_lr"] for r in runs}) > 1:
        raise ConfigError("per_domain", ["some runs observe the learning rate and some do not; clone runs of one "
                                         "observation layout"])
    kmax = max(d.shape[0] for d, *_ in rows)
    n = len(rows)
    dom = np.zeros((n, kmax, rows[0][0].shape[1]), np.float32)
    tgt = np.zeros((n, kmax), np.float32)
    valid = np.zeros((n, kmax), np.float32)
    act = np.zeros((n, kmax), np.float32)
    run_f = np.stack([r[2] for r in rows])
    if cfg.unknown_budget:  # some rows as a user who does not state the unique target tokens would be seen
        hide = np.random.default_rng(cfg.seed).random(len(run_f)) < cfg.unknown_budget
        names = run_feature_names(cfg.observation)
        run_f[hide, names.index("repetition_log2")] = 0.0
        run_f[hide, names.index("repetition_known")] = 0.0
    for i, (d, t, _, a) in enumerate(rows):
        k = d.shape[0]
        dom[i, :k], tgt[i, :k], valid[i, :k], act[i, :k] = d, t, 1.0, a
    return {"dom": dom, "target": tgt, "run": run_f, "valid": valid, "action": act}, runs


def train_per_domain(cfg: PerDomainBCConfig, out: str | Path, progress: bool = True) -> Path:
    """Clone the best trajectories of ``cfg.data`` into a per-domain policy artifact at ``out``; its meta records
    the training range of every feature (``training.feature_ranges``).

    Raises:
        ConfigError: bad config, or runs whose action maps (temperature, floor) differ.
    """
    from tqdm.auto import tqdm

    arrays, runs = training_arrays(cfg)
    dom, tgt, run_f, valid, act = (arrays[k] for k in ("dom", "target", "run", "valid", "action"))
    n = len(run_f)
    tensors = [torch.from_numpy(x) for x in (dom, tgt, run_f, valid, act)]
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    names = run_feature_names(cfg.observation)
    net = PerDomainNet(cfg.hidden, len(names))
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    with tqdm(total=cfg.steps, desc="per-domain BC", unit="step", disable=not progress) as bar:
        for step in range(cfg.steps):
            idx = torch.randint(0, n, (cfg.batch_size,), generator=gen)
            d, t, g, v, a = (x[idx] for x in tensors)
            loss = (((net(d, t, g, v) - a) ** 2) * v).sum() / v.sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step % 50 == 0 or step == cfg.steps - 1:
                bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
            bar.update()
    first = runs[0]["action"]
    return write_per_domain_artifact(Path(out), net, {
        "algo": "per_domain_bc", "action": {"temperature": first["temperature"], "floor": first["floor"]},
        "training": {"config": dataclasses.asdict(cfg), "runs": runs, "final_loss": float(loss.detach()),
                     "feature_ranges": feature_ranges(dom, tgt, valid, run_f, names)}},
        observe_lr=any(r["observe_lr"] for r in runs), observation=cfg.observation)


def main(argv: Sequence[str] | None = None) -> int:
    """``mixagent per-domain [--config configs/agent/<name>.yaml] [--data RUN ...] [key=value ...]``."""
    import argparse
    import json
    import sys

    from mixagent.config import load_config
    from mixagent.errors import MixagentError

    parser = argparse.ArgumentParser(prog="mixagent per-domain",
                                     description="Behaviour cloning of the per-domain policy (any domain space).")
    parser.add_argument("--config", default=None,
                        help="a PerDomainBCConfig YAML, e.g. configs/agent/per-domain-v2.yaml")
    parser.add_argument("--data", nargs="+", default=None, help="trajectory runs or suite collections")
    parser.add_argument("--out", default="runs/agent/per-domain/bc")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--exclude", nargs="*", default=None, metavar="DOMAIN",
                        help="domains left out of training (e.g. fiction foldoc wordnet: unseen source domains)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. lams=[0.2,0.5,0.8]")
    args = parser.parse_args(argv)
    overrides = list(args.overrides)
    for k in ("data", "exclude"):  # `--data RUN lams=[...]`: a list flag swallows the overrides after it
        if getattr(args, k) is not None:
            overrides += [v for v in getattr(args, k) if "=" in v]
            setattr(args, k, [v for v in getattr(args, k) if "=" not in v])
    flags = {k: getattr(args, k) for k in ("data", "steps", "seed", "exclude") if getattr(args, k) is not None}
    overrides += [f"{k}={json.dumps(v)}" for k, v in flags.items()]  # JSON is YAML: lists in flow style
    try:
        cfg = load_config(PerDomainBCConfig, REPO_ROOT / args.config if args.config else None, overrides)
        out = train_per_domain(cfg, REPO_ROOT / args.out)
    except MixagentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"per-domain policy: {out} (drives any domain space: policy_from_spec / compare --policies {args.out})")
    return 0
