"""The generalization protocol: one agent, cases its training data never contained, each
against the baselines on held-out seeds, one table.

``mixagent generalize --config configs/generalize/v1.yaml [--cases a,b] [key=value ...]``

Every case is a comparison (:func:`mixagent.study.compare.run_compare`: the same episode engine, cache and
report) of the agent and the baselines in an env built from a spec plus overrides: held-out seeds,
held-out benchmark items (the test split), an unseen domain space (2 or 52 domains), an unseen target field
(code), unseen source domains (an agent trained without them), a larger base model. The table reads, per
case, the agent's score against the best baseline's in pooled seed standard deviations, and whether the
agent is at least as good as every baseline (nominally, and within 2 pooled std), and the agent's per-seed
difference to the best baseline (paired: the same seed gives every policy the same data order). Cases run in the
config's order and each resumes from the episode cache, so an interrupted protocol continues where it
stopped, and ``--report-only`` rebuilds the table from what has finished. A finished comparison that is not
of the case as it is now (other seeds or env, an agent row without the agent's current artifact identity, an
agent that observes the learning rate in an env that does not) is listed as stale, with why, and not scored.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from mixagent.errors import ConfigError
from mixagent.paths import REPO_ROOT, atomic_write, atomic_write_json
from mixagent.rollout.identity import policy_identity
from mixagent.study.deploy_case import run_identity

__all__ = ["Case", "GeneralizeConfig", "run_generalize", "generalize_table"]

NOISE = 2.0  # a gap within NOISE pooled seed standard deviations is "within noise"


@dataclasses.dataclass(frozen=True)
class Case:
    """One held-out case.

    Args:
        name: plain name (its comparison is ``<out>/<config name>-<case name>``).
        held_out: what the agent's training data never contained (the table's column).
        env: env spec file or id.
        env_overrides: ``key=value`` spec overrides (``space=configs/spaces/math-2d.yaml``, ...).
        agent: the policy artifact of this case (default: the config's ``agent``); a per-domain policy
            trained without some domains, for instance.
        in_distribution: the case the agent was trained for (reported, not counted among the held-out cases).
        deploy: a deploy config (``configs/deploy/cpt-2m.yaml``): the case is then real Trainer runs of it,
            one per policy and seed (:mod:`mixagent.study.deploy_case`), scored by the deploy report's
            ``balanced``; ``env`` and ``env_overrides`` are not used.
        deploy_overrides: ``key=value`` overrides of the deploy config.
    """

    name: str
    held_out: str
    env: str = "envs/math-cpt.yaml"
    env_overrides: tuple[str, ...] = ()
    agent: str = ""
    in_distribution: bool = False
    deploy: str = ""
    deploy_overrides: tuple[str, ...] = ()

    def check(self) -> list[str]:
        problems = [] if self.name and "/" not in self.name else [f"name must be a plain name, got {self.name!r}"]
        if not self.held_out:
            problems.append(f"case {self.name!r}: held_out must say what the training data never contained")
        if self.deploy and self.env_overrides:
            problems.append(f"case {self.name!r}: env_overrides do not apply to a deploy case; put them in "
                            f"deploy_overrides (e.g. eval.env=...) or drop deploy")
        if self.deploy_overrides and not self.deploy:
            problems.append(f"case {self.name!r}: deploy_overrides need deploy (a configs/deploy/ file)")
        from mixagent.study.deploy_case import reserved_overrides

        problems += [f"case {self.name!r}: {p}" for p in reserved_overrides(self.deploy_overrides)]
        return problems


@dataclasses.dataclass(frozen=True)
class GeneralizeConfig:
    """The protocol.

    Args:
        name: the protocol's name (its table is ``<out>/<name>-generalize/``).
        agent: the policy artifact evaluated in every case (a per-domain policy drives any domain space).
        baselines: method specs it is compared with in every case (those that need no preparation runs).
        seeds: held-out evaluation seeds (>= 3).
        cases: the held-out cases, in the order they run.
        out: output root (``audits/compare``, committed); reuse: roots whose cached episodes are reused.
        workers: worker processes (0 = one per core); launcher: ``local`` or ``inline``.
    """

    name: str = "v1"
    agent: str = "checkpoints/agents/math-cpt-v1"
    baselines: tuple[str, ...] = ("uniform", "natural", "replay:0.5")
    seeds: tuple[int, ...] = (0, 1, 2)
    cases: tuple[Case, ...] = ()
    out: str = "audits/compare"
    reuse: tuple[str, ...] = ("audits/compare",)
    workers: int = 0
    launcher: str = "local"

    def check(self) -> list[str]:
        problems = [] if self.cases else ["cases is empty: list at least one held-out case"]
        names = [c.name for c in self.cases]
        if len(set(names)) != len(names):
            problems.append(f"case names repeat: {names}")
        if len(self.seeds) < 3:
            problems.append(f"seeds: a verdict needs >= 3 held-out seeds, got {list(self.seeds)}")
        if not self.baselines:
            problems.append("baselines is empty: name the methods the agent must match (e.g. uniform, replay:0.5)")
        return problems

    def case_agent(self, case: Case) -> str:
        return case.agent or self.agent


def _compare_config(cfg: GeneralizeConfig, case: Case):
    from mixagent.study.compare import CompareConfig

    return CompareConfig(name=f"{cfg.name}-{case.name}", env=case.env, env_overrides=tuple(case.env_overrides),
                         policies=(*cfg.baselines, cfg.case_agent(case)), seeds=tuple(cfg.seeds), tune_seeds=(),
                         efficiency_steps=(), oracles=False, workers=cfg.workers, launcher=cfg.launcher,
                         out=cfg.out, reuse=tuple(cfg.reuse))


def run_generalize(cfg: GeneralizeConfig, cases: list[str] | None = None, report_only: bool = False) -> dict:
    """Run (or resume) the cases named in ``cases`` (default all), then write the table over every case with a
    finished comparison. Returns the table (``generalize_table``'s).

    Raises:
        ConfigError: a bad config, an unknown case name, an empty ``cases`` list, or a case to run whose env does
            not observe the learning rate its agent observes (before anything runs).
    """
    from mixagent.study.compare import run_compare
    from mixagent.study.compare_report import make_compare_report
    from mixagent.study.deploy_case import check_deploy_config, run_deploy_case

    names = [c.name for c in cfg.cases]
    if cases is not None and not cases:  # `--cases ""` must not mean every case (hours of runs)
        raise ConfigError("generalize --cases", [f"no case named; pass a comma-separated subset of: "
                                                 f"{', '.join(names)} (or leave --cases out for all)"])
    unknown = [c for c in cases or [] if c not in names]
    if unknown:
        raise ConfigError("generalize --cases", [f"{', '.join(unknown)}: not a case of protocol {cfg.name!r}; pass a "
                                                 f"comma-separated subset of: {', '.join(names)}"])
    problems = [p for c in cfg.cases for p in _compare_config(cfg, c).check()]  # deploy cases: the policies
    for case in cfg.cases:  # every case's env must build before the first runs
        try:
            _spec_hash(case)
        except ConfigError as exc:  # one line per problem, naming the case, its env and its overrides
            where = (f"deploy {case.deploy} {list(case.deploy_overrides)}" if case.deploy else
                     f"env {case.env} with env_overrides {list(case.env_overrides)}")
            problems += [f"case {case.name!r} ({where}): {p}" for p in exc.problems]
        else:  # a case to run whose env cannot score the agent (cached episodes would hide it)
            lr = "" if report_only or (cases and case.name not in cases) else _lr_problem(cfg, case)
            problems += [f"case {case.name!r}: {lr}"] if lr else []
    if problems:
        raise ConfigError("generalize", sorted(set(problems)))
    if not report_only:  # the deploy job's own check of each Trainer case to run, before hours of earlier cases
        for case in cfg.cases:
            if case.deploy and (not cases or case.name in cases):
                check_deploy_config(f"{cfg.name}-{case.name}", case.deploy, tuple(case.deploy_overrides),
                                    (cfg.case_agent(case), cfg.seeds[0]))
        for case in cfg.cases:
            if cases and case.name not in cases:
                continue
            print(f"\n== case {case.name}: held out {case.held_out}", flush=True)
            if case.deploy:
                agent = cfg.case_agent(case)
                run_deploy_case(f"{cfg.name}-{case.name}", case.deploy, tuple(case.deploy_overrides),
                                (*cfg.baselines, agent), (agent,), tuple(cfg.seeds), REPO_ROOT / cfg.out,
                                check=False)  # checked above, before the first case
            else:
                make_compare_report(run_compare(_compare_config(cfg, case)))
    return generalize_table(cfg)


def _spec(case: Case):
    """The env spec a comparison case runs in (``None`` for a deploy case)."""
    from mixagent.env.spec import load_spec
    from mixagent.rollout.seeds import resolve_env

    return None if case.deploy else load_spec(resolve_env(case.env, "generalize"), case.env_overrides)


def _spec_hash(case: Case) -> str:
    from mixagent.study.deploy_case import deploy_case_hash

    if case.deploy:
        return deploy_case_hash(case.deploy, tuple(case.deploy_overrides))
    return _spec(case).spec_hash()


def _lr_problem(cfg: GeneralizeConfig, case: Case) -> str:
    """Why the case's env cannot score its agent: an agent that observes the learning rate in an env that does
    not (it would read LR 1.0, the peak, at every step; its cached episodes did), else ``""``. A deploy case's
    scheduler passes the LR to a policy that observes it."""
    import json

    from mixagent.rollout.identity import artifact_dir

    path = None if case.deploy else artifact_dir(cfg.case_agent(case))
    if path is None or not (path / "meta.json").is_file():
        return ""
    try:
        observes = bool(json.loads((path / "meta.json").read_text()).get("observation", {}).get("lr", False))
    except (OSError, ValueError, AttributeError):
        return ""  # unreadable: loading the policy raises the typed error
    if not observes or _spec(case).observe_lr:
        return ""
    return (f"the agent {cfg.case_agent(case)} observes the learning rate and the env {case.env} does not "
            f"(observe_lr false), so its episodes fed it LR 1.0 at every step; add observe_lr=true to the case's "
            f"env_overrides and run the case")


def _case_result(cfg: GeneralizeConfig, case: Case) -> tuple[dict | None, str]:
    """The case's row from its comparison, or ``None`` and why not: ``""`` when no comparison has finished,
    else why the finished one is stale and not read as this case (other seeds, another env, an agent row
    without the agent's current identity, a missing row or seed, an agent that observes the LR in an env
    that does not)."""
    import json

    path = REPO_ROOT / cfg.out / f"{cfg.name}-{case.name}" / "table.json"
    if not path.is_file():
        return None, ""
    table = json.loads(path.read_text())
    if list(table["seeds"]) != list(cfg.seeds):
        return None, f"ran on seeds {list(table['seeds'])}, the protocol's are {list(cfg.seeds)}"
    if table["spec_hash"] != _spec_hash(case):
        return None, f"ran in env spec {table['spec_hash']}, the case's is now {_spec_hash(case)}"
    rows = {r["policy"]: r for r in table["rows"]}
    agent = rows.get(cfg.case_agent(case))
    if agent is None:
        return None, f"has no row of the agent {cfg.case_agent(case)}"
    current = (run_identity if case.deploy else policy_identity)(cfg.case_agent(case))
    if agent.get("identity") is None:  # a table from before rows had identities cannot show which artifact ran
        return None, f"records no agent identity, so it may be of another artifact than {current}"
    if agent["identity"] != current:
        if agent["identity"].partition("+")[0] == current.partition("+")[0]:
            return None, (f"ran the agent {agent['identity']} without the deploy job's out-of-range guard, or "
                          f"under other guard rules (now {current})")
        return None, f"ran {agent['identity']}; the agent at that path changed since, it is now {current}"
    base = [rows[b] for b in cfg.baselines if b in rows]
    missing = [b for b in cfg.baselines if b not in rows]
    short = [r["policy"] for r in (agent, *base) if len(r["scores"]) < len(cfg.seeds)]
    if missing or short:
        return None, f"lacks rows of {missing} or seeds of {short}"
    lr = _lr_problem(cfg, case)
    if lr:
        return None, lr
    pooled = table["pooled_seed_std"]  # the comparison's: every policy it ran (the agent and the baselines)
    best = max(base, key=lambda r: r["mean"])
    gaps = {r["policy"]: (agent["mean"] - r["mean"]) / pooled if pooled > 0 else 0.0 for r in base}
    # Paired by seed: every policy starts from the same base model and a seed fixes each domain's window order
    # and the uniform draws that pick domains (common random numbers), so the per-seed difference cancels
    # the noise the policies share; the pooled-std gap does not.
    paired = np.asarray(_by_seed(agent, cfg.seeds)) - np.asarray(_by_seed(best, cfg.seeds))
    return {"case": case.name, "held_out": case.held_out, "in_distribution": case.in_distribution,
            "env_id": table["env_id"], "spec_hash": table["spec_hash"],
            "reward": table["reward"], "k": len(table["domains"]), "agent": cfg.case_agent(case),
            "agent_mean": agent["mean"], "agent_std": agent["std"], "agent_scores": agent["scores"],
            "baselines": {r["policy"]: {"mean": r["mean"], "std": r["std"], "scores": r["scores"]}
                          for r in base},
            "best_baseline": best["policy"], "best_mean": best["mean"], "pooled_std": pooled,
            "gap_std": gaps[best["policy"]], "gaps_std": gaps,
            "paired_diff": paired.tolist(), "paired_mean": float(paired.mean()),
            "paired_std": float(paired.std(ddof=1)),  # the config holds >= 3 seeds
            "as_good_nominal": all(agent["mean"] >= r["mean"] for r in base),
            "as_good_within_noise": all(g >= -NOISE for g in gaps.values())}, ""


def _by_seed(row: dict, seeds: list[int]) -> list[float]:
    """The row's scores in the order of ``seeds``."""
    score = dict(zip(row["seeds"], row["scores"]))
    return [score[s] for s in seeds]


def generalize_table(cfg: GeneralizeConfig) -> dict:
    """``<out>/<name>-generalize/`` ``table.md``, ``table.json`` and ``gaps.png`` over the finished cases;
    ``pending`` lists every case not scored, ``stale`` those whose finished comparison is not of this case as
    it is now, with why (rerun them)."""
    status = {c.name: _case_result(cfg, c) for c in cfg.cases}
    results = [r for r, _ in status.values() if r is not None]
    pending = [c.name for c in cfg.cases if status[c.name][0] is None]
    stale = {name: why for name, (r, why) in status.items() if r is None and why}
    unfinished = [name for name in pending if name not in stale]
    lines = ["| case | held out | K | agent (mean ± std) | best baseline | gap [pooled std] | paired by seed "
             "(mean ± std) | >= every baseline (nominal) | within 2 std of every baseline |",
             "|---|---|---:|---:|---|---:|---:|:---:|:---:|"]
    for r in results:
        lines.append(f"| {r['case']} | {r['held_out']} | {r['k']} | {r['agent_mean']:+.4f} ± {r['agent_std']:.4f} | "
                     f"{r['best_baseline']} {r['best_mean']:+.4f} | {r['agent_mean'] - r['best_mean']:+.4f} "
                     f"[{r['gap_std']:+.1f}] | {r['paired_mean']:+.4f} ± {r['paired_std']:.4f} | "
                     f"{'yes' if r['as_good_nominal'] else 'no'} | "
                     f"{'yes' if r['as_good_within_noise'] else 'no'} |")
    held = [r for r in results if not r["in_distribution"]]
    share = float(np.mean([r["as_good_nominal"] for r in held])) if held else None
    verdict = ("no held-out case has finished" if share is None else
               f"at least as good as every baseline (nominally) in {sum(r['as_good_nominal'] for r in held)} of "
               f"{len(held)} held-out cases ({100 * share:.0f}%; the bar is >= 75%); within 2 pooled std of every "
               f"baseline in {sum(r['as_good_within_noise'] for r in held)} of {len(held)}")
    md = ("\n".join(lines) + f"\n\n{verdict}." + (f"\nNot finished: {', '.join(unfinished)}." if unfinished else "")
          + (f"\nStale (rerun the case): {'; '.join(f'{n} ({why})' for n, why in stale.items())}." if stale else "")
          + "\n")
    out = REPO_ROOT / cfg.out / f"{cfg.name}-generalize"
    out.mkdir(parents=True, exist_ok=True)
    table = {"version": 1, "name": cfg.name, "seeds": list(cfg.seeds), "baselines": list(cfg.baselines),
             "noise_std": NOISE, "cases": results, "pending": pending, "stale": stale, "held_out_share_as_good": share,
             "verdict": verdict}
    atomic_write(out / "table.md", lambda tmp: tmp.write_text(md))
    atomic_write_json(out / "table.json", table)
    if results:
        _plot(results, cfg, out / "gaps.png")
    return table


def _plot(results: list[dict], cfg: GeneralizeConfig, path: Path) -> None:
    """Per case, the agent's gap to each baseline in pooled seed standard deviations."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 0.45 * len(results) + 2.2), layout="constrained")
    marks = ["o", "s", "^", "D", "v", "P"]
    ax.axvspan(-NOISE, NOISE, color="0.92", zorder=0, label=f"within {NOISE:g} pooled std")
    for j, b in enumerate(cfg.baselines):
        ax.scatter([r["gaps_std"][b] for r in results], range(len(results)), marker=marks[j % len(marks)],
                   label=f"agent minus {b}", zorder=3, alpha=0.85)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(range(len(results)), [r["case"] + (" (in distribution)" if r["in_distribution"] else "")
                                        for r in results], fontsize=8)
    ax.set_ylim(len(results) - 0.5, -0.5)
    lim = max(3.0, *(abs(g) * 1.1 for r in results for g in r["gaps_std"].values()))
    ax.set_xlim(-lim, lim)
    ax.set_xlabel("agent's score minus the baseline's, in pooled seed std (right: the agent is better)", fontsize=9)
    ax.set_title(f"Generalization of {cfg.agent}, seeds {list(cfg.seeds)}", fontsize=10)
    fig.legend(fontsize=7, loc="outside lower center", ncol=4, frameon=False)
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png", bbox_inches="tight"))
    plt.close(fig)
