"""The comparison (``mixagent compare``): every mixing method rolled out the same way in one
environment on held-out seeds, beside the oracles, with a report a researcher would publish.

Stages (each resumable: every finished episode is one JSON file in a cache keyed by the env's spec hash and
the policy's identity, so a rerun or another comparison on the same env reuses it):

1. **Preparation on the tuning seeds** (never the evaluation seeds):
   * a natural-weights run, DoReMi's reference model and Velocitune's scaling-law targets (a
     :class:`~mixagent.policies.ReferenceCurve`; counted as one extra episode for each of them);
   * RegMix's proxy runs: ``regmix_runs`` static mixtures from its Dirichlet prior, then its LightGBM fit
     and the best predicted mixture (``regmix.json``: the mixture, the held-out Spearman);
   * the target-only reference family for *target data efficiency*: target-only runs over
     ``efficiency_steps`` budgets (the spec with fewer steps: its own LR schedule over the shorter run);
   * **the equal tuning budget** (``tuning``): every method named there runs each point of its grid (one
     or two key hyperparameters, the same number of points for every method) on the tuning seeds; the
     point with the best mean score is the one evaluated, and the table records the grid, each point's
     tuning score and the choice. A method with hyperparameters that is not tuned is marked ``defaults``.
2. **Every policy on every evaluation seed** (the env's own rollouts; baselines, methods and agent
   artifacts alike).
3. **Oracles**, labelled as such, from the env's headroom audit when one covers the evaluation seeds:
   the hindsight-best static mixture and the hindsight-best schedule (best mean on the evaluation seeds).

``mixagent.study.compare_report`` writes ``table.md``, ``table.json``, ``report.md`` and the plots.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mixagent.config import to_dict
from mixagent.domains import DomainSpace
from mixagent.env.evaluation import EvalResult
from mixagent.env.rewards import Reference, balanced_score, needs_reference, reward_measure
from mixagent.env.spec import EnvSpec, load_spec
from mixagent.errors import ConfigError, suggest
from mixagent.paths import REPO_ROOT, atomic_write_json
from mixagent.policies.methods import ReferenceCurve
from mixagent.policies.registry import (
    FITTED_PARAMS,
    METHODS,
    NEEDS_REFERENCE,
    is_method,
    method_problems,
    method_spec,
    parse_method,
    tunable,
)
from mixagent.rollout.cache import EpisodeCache, start_eval
from mixagent.rollout.engine import launch, roll_policies
from mixagent.rollout.episode import EPISODE_VERSION
from mixagent.rollout.identity import artifact_dir, content_digest
from mixagent.rollout.launchers import LAUNCHERS, Launcher
from mixagent.rollout.runner import (
    Episode,
    FamilyPoint,
    FixedEpisode,
    PolicyEpisode,
    RunnerSetup,
    TargetOnlyRun,
    Task,
)
from mixagent.rollout.seeds import collection_seeds, episode_seed_of, resolve_env, run_key

__all__ = ["CompareConfig", "CompareRun", "run_compare", "rescorer", "policy_kind", "audit_rows", "reference_curve",
           "DEFAULT_POLICIES", "tuning_candidates", "has_hyperparameters"]

log = logging.getLogger(__name__)
DEFAULT_POLICIES = ("uniform", "natural", "target_only", "replay:0.5", "decay_switch", "end_upsample", "doremi",
                    "odm", "ado", "velocitune", "aioli", "regmix")


def policy_kind(spec: str) -> str:
    """The family of a policy spec, for tables: baseline, heuristic, online, fitted or agent."""
    name = spec.partition(":")[0]
    if name in ("decay_switch", "end_upsample"):
        return "heuristic"
    if name in ("doremi", "odm", "ado", "velocitune", "aioli"):
        return "online"
    if name == "regmix":
        return "fitted"
    return "agent" if artifact_dir(spec) is not None else "baseline"


def _base_name(spec: str) -> str:
    """The name a tuning grid is given under: a method's name, ``replay`` for ``replay:<rho>``."""
    return spec.partition(":")[0]


def has_hyperparameters(spec: str) -> bool:
    """Whether policy ``spec`` has hyperparameters a tuning search could set (``replay``'s share counts)."""
    name = _base_name(spec)
    if name == "replay":
        return True
    return bool(set(tunable(name)) - set(FITTED_PARAMS))


def tuning_candidates(spec: str, grid: dict[str, list[Any]]) -> list[str]:
    """The specs of ``spec``'s tuning grid (the product of its hyperparameters' values, in order), keeping the
    hyperparameters ``spec`` itself sets: ``replay:0.5`` with ``{"rho": [0.3, 0.7]}`` -> ``replay:0.3``,
    ``replay:0.7``; ``doremi:reference_at=progress`` with ``{"eta": [0.1, 1]}`` ->
    ``doremi:eta=0.1,reference_at=progress``, ``doremi:eta=1,reference_at=progress``."""
    name = _base_name(spec)
    own = {} if name == "replay" else dict((parse_method(spec) or (name, {}))[1])
    keys = list(grid)
    out = []
    for values in itertools.product(*(grid[k] for k in keys)):
        point = {**own, **dict(zip(keys, values))}
        out.append(f"replay:{point['rho']}" if name == "replay" else method_spec(name, point))
    return out


@dataclasses.dataclass(frozen=True)
class CompareConfig:
    """What the comparison runs.

    Args:
        name: the comparison's directory under ``out``.
        env: an env spec file or id (``mixagent/math-cpt-v1``).
        env_overrides: ``key=value`` spec overrides (a design variant).
        policies: method specs (``mixagent.policies.registry``: ``uniform``, ``replay:0.5``, ``doremi``, ...)
            or trained policy artifact directories (``runs/agent/default/rl``).
        seeds: held-out evaluation seeds (>= 3 for a verdict; disjoint from collection's and the tuning seeds).
        tune_seeds: seeds of the preparation runs (the reference run is the first's).
        regmix_runs: RegMix's proxy runs (static mixtures, on the tuning seeds in turn).
        efficiency_steps: budgets (in steps of the env) of the target-only family for data efficiency;
            empty = no data-efficiency column.
        oracles: add the audit's hindsight-best static mixture and schedule when an audit covers ``seeds``.
        audit_root: where headroom audits live (``audits/``).
        workers: worker processes (0 = one per core); launcher: ``local``, ``inline`` or ``ray``.
        out: output root (``runs/compare`` by default; the shipped configs use ``audits/compare``, committed);
            episodes are cached under ``<out>/cache/``.
        reuse: further output roots whose cached episodes are reused, read only (the committed
            ``audits/compare``: a comparison under ``runs/compare`` then reruns only what is new).
        tuning: the equal tuning budget: ``{policy name: {hyperparameter: [values]}}`` (``doremi: {eta:
            [0.01, 0.1, 1, 10]}``, ``replay: {rho: [...]}``), one or two hyperparameters each, every grid with
            the same number of points; each point runs on ``tune_seeds`` and the best is evaluated. A grid of a
            method not in ``policies`` is not used (so ``--policies`` can pick a subset).
        scale: a reference file (:meth:`~mixagent.env.rewards.Reference.to_json` of the env's spec hash, e.g. its
            extremes widened by anchors: :func:`mixagent.env.references.widened`) every episode is scored on
            instead of the env's reference runs: each stored episode's balanced scores and return are rescored
            from its raw evaluations on read (:func:`rescorer`), so RegMix's fit, the tuning and the tables use
            it; episodes are shared with comparisons on the env's own scale. Empty: the env's.
    """

    name: str = "v1"
    env: str = "envs/math-cpt.yaml"
    env_overrides: tuple[str, ...] = ()
    policies: tuple[str, ...] = DEFAULT_POLICIES
    seeds: tuple[int, ...] = (0, 1, 2)
    tune_seeds: tuple[int, ...] = (100,)
    regmix_runs: int = 24
    efficiency_steps: tuple[int, ...] = (2, 4, 6)
    oracles: bool = True
    audit_root: str = "audits"
    workers: int = 0
    launcher: str = "local"
    out: str = "runs/compare"
    reuse: tuple[str, ...] = ("audits/compare",)
    scale: str = ""
    tuning: dict[str, dict[str, list[Any]]] = dataclasses.field(default_factory=dict)

    def check(self) -> list[str]:
        problems = []
        if not self.name or "/" in self.name:
            problems.append(f"name must be a plain directory name, got {self.name!r}")
        if not self.policies:
            problems.append("policies is empty: name at least one (e.g. uniform, doremi, runs/agent/default/rl)")
        for p in self.policies:
            if artifact_dir(p) is not None:
                continue
            if "/" in p and not is_method(p):  # a method's spec may carry a path (probe_commit:model=...)
                problems.append(f"policy {p!r}: no such artifact directory; train one with `make train-agent` "
                                f"(runs/agent/default/{{sft,rl}}) or give its path")
            else:
                problems += method_problems(p)
        if len(set(self.policies)) != len(self.policies):
            problems.append(f"policies repeat: {list(self.policies)}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            problems.append(f"seeds must list distinct held-out seeds (3 or more for a verdict), got "
                            f"{list(self.seeds)}")
        if set(self.seeds) & set(self.tune_seeds):
            problems.append(f"tune_seeds {sorted(set(self.seeds) & set(self.tune_seeds))} are also evaluation seeds: "
                            f"reference and proxy runs must not see the evaluation seeds (e.g. tune_seeds=[100])")
        needs_tuning = (any(_base_name(p) in (*NEEDS_REFERENCE, "regmix") for p in self.policies)
                        or self.efficiency_steps)
        if needs_tuning and not self.tune_seeds:
            problems.append("tune_seeds is empty but doremi, velocitune, regmix or the data-efficiency family need "
                            "preparation runs")
        if self.regmix_runs < 0 or self.workers < 0:
            problems.append("regmix_runs and workers must be >= 0")
        if self.launcher not in LAUNCHERS:
            problems.append(f"launcher must be one of {', '.join(LAUNCHERS)}, got {self.launcher!r}")
        return problems + self._tuning_problems()

    def _tuning_problems(self) -> list[str]:
        if not self.tuning:
            return []
        problems = []
        named = {_base_name(p): p for p in self.policies if artifact_dir(p) is None}
        twice = sorted({_base_name(p) for p in self.policies if artifact_dir(p) is None
                        and sum(_base_name(q) == _base_name(p) for q in self.policies) > 1} & set(self.tuning))
        if twice:
            problems.append(f"tuning: {twice} appear more than once in policies; a tuned method is one row (its "
                            f"grid picks the point), so list it once")
        sizes = {}
        for name, grid in self.tuning.items():
            if name != "replay" and parse_method(name) is None:
                problems.append(f"tuning.{name}: only registered methods and replay have hyperparameters"
                                f"{suggest(name, ('replay', *METHODS))}")
                continue
            if name not in named:  # a grid for a method this run does not compare (a --policies override)
                continue
            if not grid or len(grid) > 2 or any(not isinstance(v, list) or not v for v in grid.values()):
                problems.append(f"tuning.{name}: give one or two hyperparameters, each with a list of values")
                continue
            if name == "replay":
                if set(grid) != {"rho"}:
                    problems.append(f"tuning.replay: its one hyperparameter is rho, got {sorted(grid)}")
                    continue
            else:
                bad = [k for k in grid if k not in tunable(name)]
                if bad:
                    problems.append(f"tuning.{name}: {name} has no hyperparameters {bad}; it takes "
                                    f"{', '.join(tunable(name)) or 'none'}")
                    continue
            specs = tuning_candidates(named[name], grid)
            problems += [p for s in specs for p in method_problems(s)]  # every point builds (values checked)
            if any(len({float(v) if isinstance(v, int | float) and not isinstance(v, bool) else v for v in values})
                   < len(values) for values in grid.values()):  # 1 and 1.0 are one point
                problems.append(f"tuning.{name}: the grid repeats a point; every method gets the same number of "
                                f"distinct points")
            sizes[name] = len(specs)
        if len(set(sizes.values())) > 1:
            problems.append(f"tuning grids differ in size ({sizes}): every method gets the same tuning budget, "
                            f"give each grid the same number of points")
        if not self.tune_seeds:
            problems.append("tuning needs tune_seeds (never the evaluation seeds)")
        return problems


@dataclasses.dataclass
class CompareRun:
    """A finished comparison: what :func:`mixagent.study.compare_report.make_compare_report` reads."""

    cfg: CompareConfig
    spec: EnvSpec
    space: DomainSpace
    natural: np.ndarray
    reference: Reference | None
    dir: Path
    episodes: dict[str, list[dict]]  # label -> one record per evaluation seed
    labels: dict[str, str]  # label -> policy spec
    extra_episodes: dict[str, int]  # label -> preparation episodes it used beyond its own
    regmix: dict | None
    family: list[dict]  # target-only family: {"steps", "seed", "target_bpb"}
    audit: dict  # the headroom audit's rows on the evaluation seeds (oracles, static front); may be empty
    start: EvalResult | None = None
    tuning: dict = dataclasses.field(default_factory=dict)  # label -> {"grid", "scores", "chosen"}


def reference_curve(record: dict, space: DomainSpace, horizon: int, label: str) -> ReferenceCurve:
    """The reference curve (DoReMi's and Velocitune's reference run) of a cached episode ``record``."""
    start = EvalResult.from_json(record["start"])
    evals = [start] + [EvalResult.from_json(e) for e in record["evals"]]
    names = space.names
    loss = tuple(tuple(float(e.bpb[n] / start.bpb[n]) for n in names) for e in evals)
    progress = tuple(t / horizon for t in range(len(evals)))
    weights = tuple(float(x) for x in np.mean(record["weights"], axis=0))
    return ReferenceCurve(tuple(names), progress, loss, weights, label)


def run_compare(cfg: CompareConfig, launcher: Launcher | None = None, root: Path | None = None) -> CompareRun:
    """Run (or resume) the comparison; ``make_compare_report(run_compare(cfg))`` writes the report.

    Raises:
        ConfigError: bad config (every problem at once), evaluation seeds that collection used, workers that
            built another spec.
    """
    from mixagent.env.environment import MixingEnv
    from mixagent.policies.regmix import fit_regmix, min_runs, sample_mixtures

    problems = cfg.check()
    if problems:
        raise ConfigError("compare", problems)
    spec_path = resolve_env(cfg.env, "compare")
    spec = load_spec(spec_path, cfg.env_overrides)
    collected = collection_seeds(spec.spec_hash(), runs=run_key(spec.mdp_dict()))  # under any reward or lam too
    used = collected & (set(cfg.seeds) | set(cfg.tune_seeds))
    problems = [f"seeds {sorted(used)} were used by trajectory collection on {spec.env_id}; evaluation and "
                f"tuning seeds must be held out"] if used else []
    clash = [s for s in (*cfg.seeds, *cfg.tune_seeds) if episode_seed_of(s) in spec.reference_seeds]
    if clash:
        problems.append(f"seeds {clash} train on the data order of the spec's reference runs (reference_seeds "
                        f"{list(spec.reference_seeds)}); pick other seeds")
    bad = [s for s in cfg.efficiency_steps if not 1 <= s < spec.steps]
    if bad:
        problems.append(f"efficiency_steps {bad}: budgets of the target-only family must be in 1..{spec.steps - 1} "
                        f"steps (the full {spec.steps}-step run is always added)")
    elif cfg.efficiency_steps and len(set(cfg.efficiency_steps)) < 2:
        problems.append(f"efficiency_steps {list(cfg.efficiency_steps)}: the 3-parameter fit L(D) = A/D^B + C needs "
                        f"at least 2 budgets below {spec.steps} steps (plus the full run); [] for no data "
                        f"efficiency")
    if problems:
        raise ConfigError("compare", problems)
    out_root = Path(root or REPO_ROOT / cfg.out)
    out = out_root / cfg.name
    env = MixingEnv(spec)  # the driver's: natural shares and reference extremes (computed once per spec hash)
    reference = _scale(cfg, spec) if cfg.scale else env.reference
    # a normalised reward's episodes are always read on this comparison's scale: one stored on another machine
    # (or before its reference was adopted) is rescored from its raw evaluations instead of trusted
    cache = EpisodeCache(out_root, (spec.name, spec.version, spec.spec_hash()),
                         tuple(REPO_ROOT / r for r in cfg.reuse), space=env.space, start=start_eval(env),
                         rescore=rescorer(spec, env.space, reference) if reference is not None else None)
    space, T = env.space, env.horizon
    _check_artifacts(cfg, env)
    natural = env.natural.values.copy()
    if "regmix" in cfg.policies and cfg.regmix_runs < min_runs(space.k):
        raise ConfigError("compare", [f"regmix_runs={cfg.regmix_runs}: RegMix needs at least {min_runs(space.k)} proxy "
                                      f"runs in the {space.k}-domain space {space.name!r}; raise regmix_runs"])
    out.mkdir(parents=True, exist_ok=True)  # every check passed: now the run may write
    siblings = cache.share_lam(spec, rescorer(spec, env.space, reference))  # open-loop episodes at another lam
    recorded = to_dict(cfg)
    for added in ("tuning", "scale"):  # comparisons from before these keep their recorded config as it was
        if not getattr(cfg, added):
            recorded.pop(added, None)
    atomic_write_json(out / "compare.json", {"config": recorded, "env_id": spec.env_id, "spec_hash": spec.spec_hash(),
                                             **({"lam_siblings": [d.name for d in siblings]} if siblings else {})})
    context: dict = {}
    extra: dict[str, int] = {}
    how = {"launcher": launcher or cfg.launcher, "workers": cfg.workers}

    def setup() -> RunnerSetup:
        return RunnerSetup(to_dict(spec), spec.optim.threads, context=dict(context))

    def run_tasks(tasks: list[Task], desc: str) -> None:
        for ev in launch(setup(), tasks, T, desc, spec.spec_hash(), **how):
            if isinstance(ev, Episode):
                cache.put(ev.record)

    # 1. preparation on the tuning seeds
    needs_ref = [p for p in cfg.policies if _base_name(p) in NEEDS_REFERENCE]
    if needs_ref:
        seed = cfg.tune_seeds[0]
        if cache.summary("natural", seed) is None:
            run_tasks([PolicyEpisode("natural", seed, "natural")], "reference run (natural, tuning seed)")
        record = cache.summary("natural", seed)
        if record is None or len(record["evals"]) < 2:
            raise ConfigError("compare", [f"the natural reference run on tuning seed {seed} did not finish (or "
                                          f"diverged); DoReMi and Velocitune need it: rerun to resume"])
        curve = reference_curve(record, space, T, f"natural, seed {seed}")
        context["reference"] = curve.to_json()
        extra.update({p: 1 for p in needs_ref})
    regmix_info = None
    if "regmix" in cfg.policies:
        mixtures = sample_mixtures(natural, cfg.regmix_runs, seed=0)
        probes = [(f"fixed@{content_digest(np.round(m, 6).tolist())}", cfg.tune_seeds[i % len(cfg.tune_seeds)], m)
                  for i, m in enumerate(mixtures)]
        run_tasks([FixedEpisode(key, seed, tuple(np.round(m, 6).tolist())) for key, seed, m in probes
                   if cache.summary(key, seed) is None], f"RegMix proxy runs ({cfg.regmix_runs} static mixtures)")
        records = [cache.summary(key, seed) for key, seed, _ in probes]
        lost = [key for (key, _, _), r in zip(probes, records) if r is None]
        if lost:
            raise ConfigError("compare", [f"{len(lost)} RegMix proxy runs are missing from the cache (an interrupted "
                                          f"run): rerun to resume"])
        fit = fit_regmix(np.array([np.round(m, 6) for _, _, m in probes]),
                         np.array([r["balanced"] if r else np.nan for r in records]), natural, seed=0)
        best = fit.best_mixture(seed=0)
        context["regmix"] = dict(zip(space.names, best.round(6).tolist()))
        regmix_info = {"mixture": context["regmix"], "spearman_heldout": fit.spearman, "runs": fit.n_runs,
                       "published_spearman": [0.975, 0.997], "tune_seeds": list(cfg.tune_seeds)}
        atomic_write_json(out / "regmix.json", regmix_info)
        extra["regmix"] = cfg.regmix_runs
    family: list[dict] = []
    fam_path = cache.dir / f"target_only_family.v{EPISODE_VERSION}.json"
    if cfg.efficiency_steps:
        found = cache.find(fam_path.name)
        stored = json.loads(found.read_text()) if found is not None else []
        have = {(p["steps"], p["seed"]) for p in stored}
        want = [(s, cfg.tune_seeds[0]) for s in sorted(set(cfg.efficiency_steps)) if s < T]
        todo = [TargetOnlyRun(s, seed) for s, seed in want if (s, seed) not in have]
        for ev in launch(setup(), todo, T, "target-only family", spec.spec_hash(), **how):
            if isinstance(ev, FamilyPoint):
                stored.append({"steps": ev.steps, "seed": ev.seed, "target_bpb": ev.target_bpb})
                fam_path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_json(fam_path, stored)
        family = [p for p in stored if (p["steps"], p["seed"]) in set(want)]
        full = cache.summary("target_only", cfg.tune_seeds[0])
        if full is None:
            run_tasks([PolicyEpisode("target_only", cfg.tune_seeds[0], "target_only")], "target-only family (full run)")
            full = cache.summary("target_only", cfg.tune_seeds[0])
        family.append({"steps": T, "seed": cfg.tune_seeds[0], "target_bpb": full["target_bpb"] if full else np.nan})

    # 1b. the equal tuning budget: every grid point on the tuning seeds, the best one evaluated
    labels = {(p.rstrip("/") if artifact_dir(p) else p): p for p in cfg.policies}
    tuning: dict[str, dict] = {}
    if cfg.tuning:
        grids = {label: tuning_candidates(spec, cfg.tuning[_base_name(spec)]) for label, spec in labels.items()
                 if _base_name(spec) in cfg.tuning}
        points = {c: c for cands in grids.values() for c in cands}
        tuned = roll_policies(env, points, list(cfg.tune_seeds), cache, setup(),
                              desc=f"tuning: {len(points)} grid points x {len(cfg.tune_seeds)} tuning seeds", **how)
        for label, cands in grids.items():
            scores = {c: float(np.mean([e["balanced"] for e in tuned[c]])) for c in cands}
            chosen = max(cands, key=lambda c: scores[c])  # ties: the first in grid order
            tuning[label] = {"grid": cfg.tuning[_base_name(labels[label])], "scores": scores, "chosen": chosen,
                             "tune_seeds": list(cfg.tune_seeds)}
            labels[label] = chosen
            extra[label] = extra.get(label, 0) + len(cands) * len(cfg.tune_seeds)
        atomic_write_json(out / "tuning.json", tuning)

    # 2. every policy on every evaluation seed (artifacts checked against the env's space first)
    episodes = roll_policies(env, labels, list(cfg.seeds), cache, setup(), desc=f"policies x {len(cfg.seeds)} seeds",
                             **how)

    first = episodes[next(iter(episodes))][0]
    return CompareRun(cfg, spec, space, natural, reference, out, episodes, labels, extra, regmix_info, family,
                      audit_rows(cfg, spec) if cfg.oracles else {}, EvalResult.from_json(first["start"]), tuning)


def _scale(cfg: CompareConfig, spec: EnvSpec) -> Reference:
    """``cfg.scale``'s reference, checked to belong to ``spec``.

    Raises:
        ConfigError: an unreadable file or one of another spec hash.
    """
    path = REPO_ROOT / cfg.scale
    try:
        ref = Reference.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError("compare", [f"scale: {path} is not a reference file ({type(exc).__name__}: {exc}); give "
                                      f"one written by Reference.to_json, or drop scale"]) from None
    if ref.spec_hash != spec.spec_hash():
        raise ConfigError("compare", [f"scale: {path} holds the extremes of spec hash {ref.spec_hash!r}, this "
                                      f"comparison's env is {spec.spec_hash()!r}; give that spec's"])
    if not needs_reference(spec.reward.name):
        raise ConfigError("compare", [f"scale: reward {spec.reward.name!r} is not normalised by reference runs, so "
                                      f"a scale changes nothing; drop scale"])
    if problems := ref.problems(reward_measure(spec.reward.name)):
        raise ConfigError("compare", [f"scale: {path}: {p}" for p in problems])
    return ref


def rescorer(spec: EnvSpec, space: DomainSpace, reference: Reference) -> Callable[[dict], dict]:
    """A stored episode summary (:func:`~mixagent.rollout.episode.episode_record`) with its balanced scores
    (per evaluated step and final) and its return (``B_T - B_0``) recomputed from its raw evaluations on
    ``reference``'s scale, under ``spec``'s reward and lam."""
    name, lam = spec.reward.name, spec.reward.lam

    def rescore(ep: dict) -> dict:
        start = EvalResult.from_json(ep["start"])

        def b(ev: EvalResult) -> float:
            return float(balanced_score(name, lam, start, ev, space, reference))

        scores = [b(EvalResult.from_json(e)) for e in ep.get("evals", [])]
        if not scores:  # diverged before its first evaluation: the env records 0 for both
            return {**ep, "balanced": 0.0, "return": 0.0, "scores": []}
        return {**ep, "balanced": scores[-1], "return": scores[-1] - b(start), "scores": scores}  # final = last

    return rescore


def _check_artifacts(cfg: CompareConfig, env) -> None:
    """Load every artifact policy (the agent of a ``guarded:agent=...`` spec too), start it in the env's space
    and feed it one observation of the env's size, so one trained for another space or observation fails
    here, before any episode (``ArtifactMismatchError`` names both domain lists)."""
    from mixagent.policies.artifact import load_policy
    from mixagent.policies.registry import parse_method

    for p in cfg.policies:
        method = parse_method(p)
        if method and method[0] == "guarded":  # its agent (GuardedPolicy names a missing one)
            path = artifact_dir(str(method[1]["agent"])) if method[1].get("agent") else None
        else:
            path = artifact_dir(p)
        if path is not None:
            policy = load_policy(path)
            policy.reset(env.space)
            policy.act(np.zeros(env.observation_space.shape, dtype=np.float32))  # the observation's size


def audit_rows(cfg: CompareConfig, spec: EnvSpec) -> dict:
    """The env's headroom audit rows that cover the evaluation seeds: ``{"dir", "natural", "rows": {key:
    [eval JSON per evaluation seed]}}``; empty (logged) when no audit of this spec covers them."""
    where = REPO_ROOT / cfg.audit_root / f"{spec.name}-v{spec.version}" / spec.spec_hash()
    if not (where / "results.jsonl").exists():
        log.info("no headroom audit of %s under %s: the table has no oracle rows", spec.env_id, where)
        return {}
    by_key: dict[str, dict[int, dict]] = {}
    for line in (where / "results.jsonl").read_text().splitlines():
        if line.strip():
            leaf = json.loads(line)
            if leaf.get("trial") is None and leaf["seed"] in cfg.seeds:
                by_key.setdefault(leaf["key"], {})[leaf["seed"]] = leaf["eval"]
    rows = {k: [v[s] for s in cfg.seeds] for k, v in by_key.items() if set(v) >= set(cfg.seeds)}
    if not rows:
        log.info("the audit under %s does not cover seeds %s: no oracle rows", where, list(cfg.seeds))
        return {}
    head = json.loads((where / "start.json").read_text())
    shown = where.relative_to(REPO_ROOT) if where.is_relative_to(REPO_ROOT) else where
    return {"dir": str(shown), "natural": head["natural"], "rows": rows}
