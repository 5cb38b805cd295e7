"""The oracle table of a settings suite (``../shared/SETTINGS.md``):
``mixagent oracle-table --config configs/oracle/math-cpt-v1.yaml``.

For every held-out setting of the suite (:mod:`mixagent.env.setting`) it asks how far the **per-setting
oracle** lies above the **single best fixed rule** (SBF), in the setting's pooled seed std, so that a learned
policy's closed gap (:mod:`mixagent.study.closed_gap`) is only ever measured where there is a gap to close.

1. **Tuning** (the headroom audit, :mod:`mixagent.study.audit`, per setting, on the *tuning* seeds only): a
   static grid (``static_rhos``: at least 9 replay shares, plus natural and uniform) and the two-phase family
   (``two_phase_switches`` x ordered pairs of ``two_phase_rhos``), prefix-shared, resumable.
2. **The single best fixed rule**: the same grid on ``sbf_settings`` training settings (drawn from the suite's
   training distribution, distinct runs) and ``sbf_balanced`` more that fill the axis values the draws used
   least (:meth:`~mixagent.env.setting.Suite.balanced_runs`; the table records each value's count), each
   row scored at every training ``lam`` (relabelled from the raw evaluations) and put on the setting's own
   scale, ``(score - worst static) / (best static - worst static)``
   (a setting's extremes from its static grid, so scarce budgets, where target-only overfits and normalised
   scores reach 2-3, do not outweigh the rest); SBF is the row with the best mean over them.
3. **The oracle** of a held-out setting is the row with the best mean on its tuning seeds, at its ``lam``.
   A setting whose source-only and target-only reference runs cannot normalise the reward (with very scarce
   unique target data target-only can end above source-only on the target field) is tuned and scored with the
   :data:`SCARCE_ANCHORS` widening its extremes (:func:`tuned_run`; the row records ``extra_overrides``).
4. **Probe-then-commit** (:mod:`mixagent.policies.probe_commit`), fitted on the training settings of step 2
   only: one probe segment at SBF's rule per training setting and tuning seed gives the first-segment
   features; with each row's stated setting (its lam included) they are regressed onto every rule's
   grid-normalised score. Written to ``<out>/<suite>/probe_commit.json`` with its leave-one-setting-out
   score on the training settings.
5. **Scoring** on fresh held-out ``seeds`` (a comparison, :mod:`mixagent.study.compare`, cached): the oracle's
   rule, SBF, probe-then-commit and the ``baselines``, as policies (``replay:<rho>``, ``natural``,
   ``uniform``, ``two_phase:rho1=,rho2=,switch=``, ``probe_commit:model=...``). Selecting and scoring on the
   same seeds would inflate the oracle.

Stages 2 and 4 run first (every row needs them); then each held-out setting is tuned (1, 3) and scored (5)
before the next, and the table is rewritten after each (``pending`` lists the held-out settings still without a
row, and :func:`load_oracle_table` refuses an unfinished table unless asked), so a stopped run leaves its
finished rows. A run over some settings (``--settings``) keeps the valid rows of earlier runs (same suite,
config, SBF and probe-then-commit fit).

The table (``<out>/<suite>/table.md``, ``table.json``, ``gaps.png``) gives per setting: the axes it
extrapolates on, the oracle and SBF rules, their held-out means ± std, the pooled seed std over its **noise
rows** (the fixed rules it scores: the oracle, SBF and the ``baselines`` that are fixed mixtures, never a
fitted or learned policy, so a policy scored later cannot move its own gate), their gap in pooled std, and
whether it passes the **gate** (3 std). It records the suite's name and hash: a closed-gap table refuses an oracle
table of another suite. If fewer than half of the settings pass, the verdict says the axes are too narrow.

**The reward scale.** Every score is a balanced normalised score at the setting's lam, on the scale of its
reference pair (source-only, target-only). With ``anchors`` (the scale agent v2 trains on, ``reward.anchors``)
the same tuning rows and held-out episodes are rescored: each setting's extremes are widened by the anchors run
on its reference seeds (:func:`setting_scale`; ``anchors.json`` beside the tuning audit), the held-out
comparisons (``heldout-<setting>-anchored``) read the shared episodes on that scale (``CompareConfig.scale``),
and SBF, each oracle, probe-then-commit and RegMix are chosen again; the table goes to ``<out>/<suite>/anchored/``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mixagent.env.rewards import ANCHORS_VERSION, STANDARD_ANCHORS, Reference
from mixagent.errors import ConfigError, CorruptArtifactError
from mixagent.paths import REPO_ROOT, atomic_write, atomic_write_json

if TYPE_CHECKING:
    from mixagent.study.audit import AuditRun

__all__ = ["OracleConfig", "rule_spec", "run_oracle_table", "load_oracle_table", "heldout_episodes", "tuned_run",
           "setting_scale", "recorded_config", "reward_scale", "score_rules", "config_differences"]

TABLE_VERSION = 2  # 2: the pooled std over the noise rows only; SBF coverage recorded
MIN_STATIC_RHOS = 9  # the static grid's least number of replay shares (natural and uniform come on top)


@dataclasses.dataclass(frozen=True)
class OracleConfig:
    """The oracle table's run.

    Args:
        suite: the settings suite YAML (``configs/settings/*.yaml``).
        settings: held-out settings to run (names; empty = every one), in order.
        tune_seeds: the tuning seeds every grid row runs on (selection only).
        seeds: the held-out seeds the selected rules are scored on (>= 3; disjoint from ``tune_seeds``).
        static_rhos: the static grid's replay shares (>= 9; natural and uniform are added).
        two_phase_switches, two_phase_rhos: the two-phase family (switch steps x ordered pairs, rho1 != rho2).
        sbf_settings: training settings (distinct runs) the single best fixed rule is chosen on.
        sbf_seed: the first draw seed of those settings (``Suite.draw(sbf_seed + i)``).
        sbf_balanced: further training settings, each taking every axis's least-used training value so far
            (:meth:`~mixagent.env.setting.Suite.balanced_runs`): a few random draws can miss a value.
        baselines: further rules scored on the held-out seeds beside the oracle and SBF; ``regmix`` is fitted per
            held-out setting on ``regmix_runs`` extra proxy runs (on the tuning seeds), counted in the table.
        regmix_runs: RegMix's proxy runs per held-out setting (>= max(10, 2K) with ``regmix`` among baselines).
        probe_commit: fit probe-then-commit on the training settings and score it (``probe_commit_alpha``: its
            ridge penalty on standardised features).
        gate: the oracle's margin over SBF, in pooled seed std, for a setting to count.
        anchors: the reward scale (``reward.anchors``, :func:`mixagent.env.references.widened`): empty, every
            setting's scores are on its reference pair's scale; else each setting's extremes are widened by these
            static mixtures, run on its reference seeds (cached beside its tuning audit, ``anchors.json``), and
            every row is rescored from its raw evaluations: the scale a policy trained with those anchors
            optimises. The runs are shared; the table goes to ``<out>/<suite>/anchored/``.
        out: results root: tuning audits in ``<out>/<suite>/tuning/``, scoring comparisons (cached episodes)
            in ``<out>/<suite>/``, the table in ``<out>/<suite>/`` (``anchored/`` with ``anchors``).
        workers: worker processes (0 = one per core); launcher: ``local``, ``inline`` or ``ray``.
    """

    suite: str = "configs/settings/math-cpt-v1.yaml"
    settings: tuple[str, ...] = ()
    tune_seeds: tuple[int, ...] = (100,)
    seeds: tuple[int, ...] = (0, 1, 2)
    static_rhos: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    two_phase_switches: tuple[int, ...] = (2, 4, 6)
    two_phase_rhos: tuple[float, ...] = (0.2, 0.5, 0.8)
    sbf_settings: int = 8
    sbf_seed: int = 0
    sbf_balanced: int = 0
    baselines: tuple[str, ...] = ("uniform", "natural", "replay:0.5")
    regmix_runs: int = 0
    probe_commit: bool = True
    probe_commit_alpha: float = 1.0
    gate: float = 3.0
    anchors: tuple[str, ...] = ()
    out: str = "audits/settings"
    workers: int = 0
    launcher: str = "local"

    def check(self) -> list[str]:
        problems = []
        if len(self.seeds) < 3 or len(set(self.seeds)) != len(self.seeds):
            problems.append(f"seeds must list >= 3 distinct held-out seeds, got {list(self.seeds)}")
        if not self.tune_seeds:
            problems.append("tune_seeds must list at least one tuning seed (the oracle is selected on them)")
        if set(self.seeds) & set(self.tune_seeds):
            problems.append(f"tune_seeds {sorted(set(self.seeds) & set(self.tune_seeds))} are also held-out seeds: "
                            f"an oracle selected and scored on the same seeds is inflated; use others (e.g. 100)")
        if len(set(self.static_rhos)) < MIN_STATIC_RHOS:
            problems.append(f"static_rhos must hold >= {MIN_STATIC_RHOS} distinct replay shares, got "
                            f"{list(self.static_rhos)}")
        if any(not 0 <= r <= 1 for r in (*self.static_rhos, *self.two_phase_rhos)):
            problems.append("replay shares must be in [0, 1]")
        if self.sbf_settings < 1:
            problems.append(f"sbf_settings must be >= 1, got {self.sbf_settings}")
        if self.sbf_balanced < 0:
            problems.append(f"sbf_balanced must be >= 0 (extra settings that fill unused axis values), got "
                            f"{self.sbf_balanced}")
        if any(int(k) != k or k < 1 for k in self.two_phase_switches):
            problems.append(f"two_phase_switches must be whole numbers of segments >= 1, got "
                            f"{list(self.two_phase_switches)}")
        from mixagent.policies.registry import method_problems

        for spec in self.baselines:  # checked before anything trains
            problems += [f"baselines: {p}" for p in method_problems(spec)]
        if "regmix" in self.baselines and self.regmix_runs < 10:
            problems.append(f"regmix_runs={self.regmix_runs} with regmix among baselines: RegMix fits each held-out "
                            f"setting on its own proxy runs, at least max(10, 2K) of them; set regmix_runs (e.g. 20)")
        if self.regmix_runs and "regmix" not in self.baselines:
            problems.append(f"regmix_runs={self.regmix_runs} but regmix is not among baselines: add it or set 0")
        if not self.probe_commit_alpha > 0:
            problems.append(f"probe_commit_alpha must be > 0, got {self.probe_commit_alpha}")
        if not self.gate > 0:
            problems.append(f"gate must be > 0 pooled seed std, got {self.gate}")
        from mixagent.env.rewards import anchor_problems

        for a in self.anchors:
            problems += [f"anchors: {p}" for p in anchor_problems(a)]
        return problems

    def table_dir(self, suite_name: str) -> Path:
        """Where the table goes (the caches it reads are in ``<out>/<suite>`` either way)."""
        return REPO_ROOT / self.out / suite_name / ("anchored" if self.anchors else "")


def rule_spec(schedule) -> str | None:
    """The policy spec of an audit row (:class:`~mixagent.rollout.schedules.Schedule`): ``natural``,
    ``uniform``, ``replay:<rho>`` or ``two_phase:rho1=,rho2=,switch=``; ``None`` for other shapes."""
    if schedule.mixture:
        return schedule.mixture
    rhos = schedule.rhos
    if len(set(rhos)) == 1:
        return f"replay:{rhos[0]:g}"
    switch = next(i for i, r in enumerate(rhos) if r != rhos[0])
    if len(set(rhos[switch:])) == 1:
        return f"two_phase:rho1={rhos[0]:g},rho2={rhos[switch]:g},switch={switch}"
    return None


SCARCE_ANCHORS = (f"reward.anchors={list(STANDARD_ANCHORS)}",)  # where the reference pair cannot scale


def setting_scale(cfg: OracleConfig, run: AuditRun) -> Reference:
    """The :class:`~mixagent.env.rewards.Reference` a setting's rows are scored with: its tuning audit's own
    (``run.reference``) without ``cfg.anchors`` or where its spec already has them; else the audit's extremes
    widened by the anchors run on its reference seeds (:func:`mixagent.env.references.widened`), cached in
    ``<audit dir>/anchors.json`` and run where missing.

    Raises:
        ConfigError: the audit's spec has anchors other than ``cfg.anchors``.
    """
    from mixagent.env.evaluation import EvalResult
    from mixagent.env.references import run_static, widened
    from mixagent.env.spec import RewardSpec

    anchors = RewardSpec(anchors=tuple(cfg.anchors)).anchors  # the canonical spelling and order
    have = run.spec.reward.anchors
    if not anchors or have == anchors:
        return run.reference
    if have:
        raise ConfigError("anchors", [f"{run.store.dir} was scored with reward.anchors {list(have)}, the table asks "
                                      f"for {list(anchors)}; use the same anchors"])
    path = run.store.dir / "anchors.json"
    try:
        stored = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError) as exc:
        raise CorruptArtifactError(f"anchor runs {path} are unreadable ({exc}); delete the file to rerun them") \
            from None
    seeds = [int(s) for s in run.spec.reference_seeds]
    if stored and (stored.get("version"), stored.get("spec_hash"), stored.get("seeds")) != (
            ANCHORS_VERSION, run.spec.spec_hash(), seeds):
        raise ConfigError(str(path), [f"anchor runs of format {stored.get('version')!r}, spec hash "
                                      f"{stored.get('spec_hash')!r} on reference seeds {stored.get('seeds')}; this "
                                      f"audit's are {ANCHORS_VERSION}, {run.spec.spec_hash()!r}, {seeds}: delete the "
                                      f"file to rerun them"])
    runs = stored.get("runs", {})
    missing = [a for a in anchors if len(runs.get(a, [])) != len(seeds)]
    if missing:
        from mixagent.env.backends import make_backend
        from mixagent.env.rewards import anchor_weights

        backend = make_backend(run.spec, run.space)
        for a in missing:
            runs[a] = [run_static(backend, anchor_weights(a, run.space, run.natural), run.spec.steps, seed).to_json()
                       for seed in seeds]
            atomic_write_json(path, {"version": ANCHORS_VERSION, "spec_hash": run.spec.spec_hash(), "seeds": seeds,
                                     "runs": runs})
    return widened(run.reference, {a: [EvalResult.from_json(e) for e in runs[a]] for a in anchors}, run.space)


def _audit_cfg(cfg: OracleConfig, suite, setting, keep_lam: bool, extra: tuple[str, ...] = ()):
    from mixagent.study.audit import AuditConfig

    return AuditConfig(env=suite.env, env_overrides=(*setting.overrides(suite, keep_lam), *extra), seeds=cfg.tune_seeds,
                       tune_seeds=(), static_rhos=cfg.static_rhos, two_phase_switches=cfg.two_phase_switches,
                       two_phase_rhos=cfg.two_phase_rhos, decay_stable_rhos=(), decay_rhos=(),
                       replay_first_steps=(), replay_first_rhos=(), oracle_trials=0, workers=cfg.workers,
                       launcher=cfg.launcher, out=f"{cfg.out}/{suite.name}/tuning")


def _row_scores(run, lam: float, reference) -> dict[str, dict[str, Any]]:
    """Per rule spec: its label, family and the scores at ``lam`` on the run's seeds (from raw evaluations, on
    ``reference``'s scale: :func:`setting_scale`)."""
    from mixagent.env.evaluation import EvalResult
    from mixagent.env.rewards import balanced_score

    rows: dict[str, dict[str, Any]] = {}
    for schedule in run.schedules:
        spec = rule_spec(schedule)
        records = [run.store.get(schedule.key, s) for s in run.cfg.seeds]
        if spec is None or any(r is None for r in records):
            continue
        scores = [balanced_score(run.spec.reward.name, lam, run.start, EvalResult.from_json(r.final), run.space,
                                 reference) for r in records]
        rows[spec] = {"label": schedule.label, "family": schedule.family, "scores": [float(x) for x in scores],
                      "mean": float(np.mean(scores))}
    return rows


def _grid_normalised(rows: dict[str, dict[str, Any]]) -> dict[str, float]:
    statics = [r["mean"] for r in rows.values() if r["family"] == "static"]
    lo, hi = min(statics), max(statics)
    return {spec: (r["mean"] - lo) / (hi - lo) if hi > lo else 0.0 for spec, r in rows.items()}


def reward_scale(run, lam: float, anchors: tuple[str, ...] = STANDARD_ANCHORS) -> dict[str, list[float]]:
    """The range ``[lo, hi]`` of the static rows' mean ``normalised_bpb`` at ``lam`` in one audited setting, on
    the reference runs' scale (``reference``) and with the extremes widened by the ``anchors``' grid rows
    (``anchored``, :func:`mixagent.env.references.widened`; the rows are on the tuning seeds, not the reference
    seeds, so this measures what ``reward.anchors`` would do, it is not that reward). A diagnostic of whether one
    reward scale holds across settings: where target-only overfits, ``reference`` reaches 2-4."""
    from mixagent.domains import FIELDS
    from mixagent.env.evaluation import EvalResult
    from mixagent.env.references import widened

    evals: dict[str, list[EvalResult]] = {}
    for schedule in run.schedules:
        spec = rule_spec(schedule)
        records = [run.store.get(schedule.key, s) for s in run.cfg.seeds]
        if schedule.family == "static" and spec is not None and all(r is not None for r in records):
            evals[spec] = [EvalResult.from_json(r.final) for r in records]
    bpb = {spec: {f: float(np.mean([e.field_bpb(run.space, f) for e in es])) for f in FIELDS}
           for spec, es in evals.items()}
    present = {a: evals[a] for a in anchors if a in evals}  # a grid without one of them goes without
    out = {}
    for name, scale in (("reference", run.reference), ("anchored", widened(run.reference, present, run.space))):
        scores = [lam * scale.normalise("bpb", "target", v["target"])
                  + (1 - lam) * scale.normalise("bpb", "source", v["source"]) for v in bpb.values()]
        out[name] = [float(min(scores)), float(max(scores))]
    return out


def _sbf(cfg: OracleConfig, suite, progress: bool) -> dict[str, Any]:
    """Choose the single best fixed rule on training settings (see the module docstring)."""
    from mixagent.study.audit import run_audit

    chosen = suite.distinct_runs(cfg.sbf_settings, cfg.sbf_seed)
    if cfg.sbf_balanced:
        chosen = suite.balanced_runs(chosen, len(chosen) + cfg.sbf_balanced, cfg.sbf_seed)
    lams = sorted(set(suite.training_values()["lam"]))
    per_rule: dict[str, dict[str, float]] = {}
    settings = []
    for k, setting in enumerate(chosen):
        if progress:
            print(f"\n== single best fixed rule: training setting {k + 1}/{len(chosen)} ({setting.run_hash()})",
                  flush=True)
        run = run_audit(_audit_cfg(cfg, suite, setting, keep_lam=True))
        scale = setting_scale(cfg, run)
        for lam in lams:
            normalised = _grid_normalised(_row_scores(run, lam, scale))
            for spec, value in normalised.items():
                per_rule.setdefault(spec, {})[f"{setting.run_hash()}@{lam:g}"] = value
        settings.append({"setting": setting.to_json(), "run_hash": setting.run_hash(),
                         "spec_hash": run.spec.spec_hash(), "reward_scale": reward_scale(run, 0.5)})
    from mixagent.study.closed_gap import single_best_fixed

    complete = {rule: v for rule, v in per_rule.items() if len(v) == len(chosen) * len(lams)}
    best = single_best_fixed(complete)
    means = sorted(((float(np.mean(list(v.values()))), rule) for rule, v in complete.items()), reverse=True)
    values = suite.training_values()
    coverage = {a: dict(zip(map(str, values[a]), counts)) for a, counts in suite.axis_counts(chosen).items()
                if len(values[a]) > 1}
    return {"rule": best, "settings": settings, "lams": lams, "coverage": coverage,
            "ranking": [{"rule": rule, "grid_normalised_mean": m} for m, rule in means[:10]],
            "normalised": {rule: per_rule[rule] for rule in sorted(complete)}}


def _probe(cfg: OracleConfig, suite, setting, rule: str, cache: dict) -> list[float]:
    """The probe features (:func:`~mixagent.policies.probe_commit.probe_features`) of one segment of ``rule`` in
    ``setting``, averaged over the tuning seeds; cached in ``cache`` by the spec's hash, the seeds and the rule."""
    from mixagent.env.environment import MixingEnv
    from mixagent.policies.probe_commit import build_rule, probe_features

    spec = setting.spec(suite, keep_lam=True)
    key = f"{spec.spec_hash()}|{rule}|{','.join(map(str, cfg.tune_seeds))}"
    if key not in cache:
        env = MixingEnv(spec)
        features = []
        for seed in cfg.tune_seeds:
            obs, _ = env.reset(seed=seed)
            policy = build_rule(rule, env.natural.to_mapping())  # as ProbeCommitPolicy plays its probe
            policy.reset(env.space)
            obs, *_ = env.step_weights(policy.act(obs))
            features.append(probe_features(obs, env.space))
        cache[key] = [float(x) for x in np.mean(features, axis=0)]
    return cache[key]


def _fit_probe_commit(cfg: OracleConfig, suite, sbf: dict, out: Path, progress: bool) -> dict:
    """Fit probe-then-commit on the training settings (module docstring, step 4); write it and its
    leave-one-setting-out score; returns ``{spec, path, loso}``."""
    from mixagent.env.setting import Setting
    from mixagent.policies.probe_commit import fit_probe_commit, stated_features

    probes_path = REPO_ROOT / cfg.out / suite.name / "probe_commit_probes.json"  # features: any scale's fit reads them
    cache = json.loads(probes_path.read_text()) if probes_path.is_file() else {}
    rules = sorted(sbf["normalised"])
    xs, ys, groups = [], [], []
    for k, entry in enumerate(sbf["settings"]):
        setting = Setting(**entry["setting"])
        if progress:
            print(f"\n== probe-then-commit: probe segment {k + 1}/{len(sbf['settings'])} ({entry['run_hash']})",
                  flush=True)
        probe = _probe(cfg, suite, setting, sbf["rule"], cache)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(probes_path, cache)
        for lam in sbf["lams"]:
            stated = dataclasses.replace(setting, lam=lam).stated()
            xs.append(np.concatenate([stated_features(stated), probe]))
            ys.append([sbf["normalised"][r][f"{entry['run_hash']}@{lam:g}"] for r in rules])
            groups.append(entry["run_hash"])
    x, y, groups_a = np.asarray(xs), np.asarray(ys), np.asarray(groups)
    chosen, fixed, best = [], [], []
    for g in dict.fromkeys(groups):  # leave one training setting out: how the fit generalises across settings
        held = groups_a == g
        if held.all():
            break
        model = fit_probe_commit(x[~held], y[~held], rules, sbf["rule"], cfg.probe_commit_alpha)
        fold_sbf = int(np.argmax(y[~held].mean(axis=0)))  # the fixed rule, also chosen without this setting
        for xi, yi in zip(x[held], y[held]):
            chosen.append(yi[rules.index(model.choose(xi))])
            fixed.append(yi[fold_sbf])
            best.append(yi.max())
    loso = {"probe_commit": float(np.mean(chosen)) if chosen else None,  # None: one training setting only
            "sbf": float(np.mean(fixed)) if fixed else None,
            "row_best": float(np.mean(best)) if best else None, "rows": len(chosen),
            "scale": "grid-normalised score on the training settings, each held out in turn (probe-then-commit "
                     "and the fixed rule both chosen without it)"}
    model = fit_probe_commit(x, y, rules, sbf["rule"], cfg.probe_commit_alpha,
                             fit={"suite": suite.name, "training_hash": suite.training_hash(), "loso": loso,
                                  "settings": [e["run_hash"] for e in sbf["settings"]], "lams": sbf["lams"]})
    path = out / "probe_commit.json"
    atomic_write_json(path, model.to_json())
    rel = path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path
    return {"spec": f"probe_commit:model={rel}", "path": str(rel), "loso": loso}


def heldout_episodes(cfg: OracleConfig, suite, name: str, setting, rules: list[str],
                     report: bool = True, extra: tuple[str, ...] = (), scale: str = "") -> dict[str, list[dict]]:
    """Per rule spec: its episodes (the comparison's summaries, one per held-out seed) in held-out ``setting``:
    the oracle table's cached scoring comparison ``<out>/<suite>/heldout-<name>`` (``-anchored`` with
    ``cfg.anchors``; the episodes are shared), run where missing (``extra``: the row's ``extra_overrides``;
    ``scale``: a reference file the episodes are scored on, :func:`setting_scale`)."""
    from mixagent.study.compare import CompareConfig, run_compare
    from mixagent.study.compare_report import make_compare_report

    out: dict[str, list[dict]] = {}
    for version, group in _by_observation(rules).items():  # a policy reads its own layout; the runs are shared
        compare = CompareConfig(name=f"heldout-{name}" + ("-anchored" if cfg.anchors else "")
                                + (f"-obs{version}" if version != 1 else ""), env=suite.env,  # its own record;
                                env_overrides=(*setting.overrides(suite, keep_lam=False), *extra,
                                               *([f"observation={version}"] if version != 1 else [])),  # one cache
                                policies=tuple(group), seeds=cfg.seeds, tune_seeds=cfg.tune_seeds,
                                regmix_runs=cfg.regmix_runs if "regmix" in group else 0, efficiency_steps=(),
                                oracles=False, workers=cfg.workers, launcher=cfg.launcher,
                                out=f"{cfg.out}/{suite.name}", reuse=(), scale=scale)
        run = run_compare(compare)
        if report:
            make_compare_report(run)
        by_spec = {spec: label for label, spec in run.labels.items()}
        out.update({rule: run.episodes[by_spec[rule]] for rule in group})
    return {rule: out[rule] for rule in rules}


def _by_observation(rules: list[str]) -> dict[int, list[str]]:
    """``rules`` grouped by the observation layout each reads: a policy artifact (bare or ``guarded``) its recorded
    version (a per-domain policy across settings reads version 2,
    :class:`~mixagent.env.observation.SettingObservationBuilder`), every other rule version 1 (the spec's default).
    The layout changes no run (it is not in the spec hash)."""
    from mixagent.policies.registry import parse_method
    from mixagent.rollout.identity import artifact_dir

    groups: dict[int, list[str]] = {}
    for rule in rules:
        parsed = parse_method(rule)  # a guarded artifact (guarded:agent=DIR,...) reads its artifact's layout
        guarded = parsed is not None and parsed[0] == "guarded"
        path = artifact_dir(str(parsed[1].get("agent", ""))) if guarded else artifact_dir(rule)
        meta = json.loads((path / "meta.json").read_text()) if path and (path / "meta.json").is_file() else {}
        groups.setdefault(int(meta.get("observation", {}).get("version", 1)), []).append(rule)
    return groups


def tuned_run(cfg: OracleConfig, suite, name: str, setting, progress: bool = False,
              extra: tuple[str, ...] | None = None) -> tuple[Any, tuple[str, ...]]:
    """The tuning audit of held-out ``setting`` and the overrides it needed beyond the setting's own: where the
    reference pair (source-only, target-only) cannot normalise the suite's reward (with very scarce unique target
    data target-only can end above source-only on the target field), the setting is scored with the
    :data:`SCARCE_ANCHORS` (:func:`mixagent.env.references.extremes`), and its row records them
    (``extra_overrides``); ``()`` otherwise. A known ``extra`` (a table row's) is used as it is, nothing tried first.

    Raises:
        ConfigError: any other problem, or one the anchors do not fix.
    """
    from mixagent.env.rewards import reward_measure
    from mixagent.study.audit import run_audit

    if extra is not None:
        return run_audit(_audit_cfg(cfg, suite, setting, keep_lam=False, extra=extra)), extra
    try:
        run = run_audit(_audit_cfg(cfg, suite, setting, keep_lam=False))
        if problems := run.reference.problems(reward_measure(run.spec.reward.name)):
            raise ConfigError("reference runs", problems)
        return run, ()
    except ConfigError as exc:
        if exc.where != "reference runs":
            raise
        if progress:
            print(f"\n== held-out setting {name}: its reference runs cannot normalise the reward "
                  f"({exc.problems[0]}); scored with {SCARCE_ANCHORS[0]}", flush=True)
    return run_audit(_audit_cfg(cfg, suite, setting, keep_lam=False, extra=SCARCE_ANCHORS)), SCARCE_ANCHORS


def _score(cfg: OracleConfig, suite, name: str, setting, rules: list[str], run: AuditRun, scale: Reference,
           extra: tuple[str, ...] = (), report: bool = True) -> dict[str, list[float]]:
    """Per rule spec: its final scores on the held-out seeds (at the setting's lam), on ``scale``
    (:func:`setting_scale`): where it is not the tuning audit's own, it is written beside the audit
    (``reference-anchored.json``) and the comparison rescores every episode on it (RegMix fits on it too)."""
    path = ""
    if scale != run.reference:
        written = run.store.dir / "reference-anchored.json"
        atomic_write_json(written, scale.to_json())
        path = str(written.relative_to(REPO_ROOT) if written.is_relative_to(REPO_ROOT) else written)
    episodes = heldout_episodes(cfg, suite, name, setting, rules, report=report, extra=extra, scale=path)
    return {rule: [float(e["balanced"]) for e in episodes[rule]] for rule in rules}


def score_rules(cfg: OracleConfig, suite, name: str, setting, rules: list[str],
                extra: tuple[str, ...] = (), report: bool = True) -> dict[str, list[float]]:
    """Per rule spec: its final scores on the held-out seeds of held-out ``setting`` (``name``), on the table's
    scale for it, exactly as the table scores its own rows (``extra``: the row's ``extra_overrides``); cached
    episodes are read, missing ones run. What :mod:`mixagent.study.closed_gap_run` scores a policy with."""
    run, extra = tuned_run(cfg, suite, name, setting, extra=extra)
    return _score(cfg, suite, name, setting, rules, run, setting_scale(cfg, run), extra, report)


def run_oracle_table(cfg: OracleConfig, progress: bool = True) -> dict:
    """Run (or resume) every stage and write the table (see the module docstring); returns it.

    Raises:
        ConfigError: a bad config or suite, or a setting name that is not a held-out setting of the suite.
    """
    from mixagent.env.setting import load_suite
    from mixagent.study.closed_gap import pooled_seed_std

    problems = cfg.check()
    suite = load_suite(REPO_ROOT / cfg.suite)
    held = suite.held_out_settings()
    unknown = [n for n in cfg.settings if n not in held]
    problems += [f"settings: {n!r} is not a held-out setting of suite {suite.name} ({sorted(held)})" for n in unknown]
    if problems:
        raise ConfigError("oracle table", problems)
    names = list(cfg.settings or held)
    out = cfg.table_dir(suite.name)
    # SBF (and probe-then-commit) first: every row needs them. Then each setting is tuned and scored before the
    # next, and the table is rewritten after each, so a run stopped midway leaves its finished rows on disk.
    sbf = _sbf(cfg, suite, progress)
    ptc = _fit_probe_commit(cfg, suite, sbf, out, progress) if cfg.probe_commit else None
    earlier = _earlier_rows(out, suite, cfg, sbf, ptc, skip=names)
    table_rows: list[dict] = []
    table: dict = {}
    for k, name in enumerate(names):
        setting = held[name]
        if progress:
            print(f"\n== held-out setting {name} ({k + 1}/{len(names)}): the grid on tuning seeds "
                  f"{list(cfg.tune_seeds)}", flush=True)
        run, extra = tuned_run(cfg, suite, name, setting, progress)
        scale = setting_scale(cfg, run)
        tuned = _row_scores(run, setting.lam, scale)
        oracle = max(tuned, key=lambda spec: tuned[spec]["mean"])
        best_static = max((s for s in tuned if tuned[s]["family"] == "static"), key=lambda s: tuned[s]["mean"])
        rules = list(dict.fromkeys([oracle, sbf["rule"], *([ptc["spec"]] if ptc else []), *cfg.baselines]))
        if progress:
            print(f"\n== held-out setting {name}: {rules} on held-out seeds {list(cfg.seeds)}", flush=True)
        scores = _score(cfg, suite, name, setting, rules, run, scale, extra)
        noise = noise_rows(rules, oracle, sbf["rule"])
        pooled = pooled_seed_std({r: scores[r] for r in noise})
        margin = float(np.mean(scores[oracle]) - np.mean(scores[sbf["rule"]]))
        table_rows.append({
            "setting": name, "setting_hash": setting.setting_hash(), "values": setting.to_json(),
            "hidden": setting.hidden(), "extrapolates": suite.extrapolates(setting),
            "spec_hash": run.spec.spec_hash(), "oracle": oracle, "oracle_label": tuned[oracle]["label"],
            "oracle_tuning_mean": tuned[oracle]["mean"], "best_static": best_static,
            "best_static_tuning_mean": tuned[best_static]["mean"], "sbf": sbf["rule"],
            "scores": scores, "means": {r: float(np.mean(v)) for r, v in scores.items()},
            "stds": {r: float(np.std(v, ddof=1)) for r, v in scores.items()}, "pooled_std": pooled,
            "noise_rows": noise,
            "gap": margin, "gap_std": margin / pooled if pooled > 0 else float("nan"),
            "gated": bool(pooled > 0 and margin > cfg.gate * pooled),
            "tuning": {s: r["mean"] for s, r in tuned.items()}, "probe_commit": ptc["spec"] if ptc else None,
            "extra_runs": {"regmix": cfg.regmix_runs} if "regmix" in rules else {},
            **({"extra_overrides": list(extra)} if extra else {})})
        rows = sorted([*earlier, *table_rows], key=lambda r: list(held).index(r["setting"]))
        table = _write(cfg, suite, sbf, ptc, rows, [n for n in held if n not in {r["setting"] for r in rows}], out)
    return table


def recorded_config(cfg: OracleConfig) -> dict:
    """The config a table records (and :func:`_earlier_rows` matches): empty ``anchors`` left out, so tables
    written before the field keep their rows."""
    d = dataclasses.asdict(cfg)
    if not d["anchors"]:
        d.pop("anchors")
    return d


def noise_rows(rules: list[str], oracle: str, sbf: str) -> list[str]:
    """The rows a setting's pooled seed std is taken over: the oracle, SBF and the other fixed rules among
    ``rules`` (static mixtures and fixed schedules); never a fitted or learned policy (probe-then-commit,
    RegMix, an agent), so the gate does not depend on the policy being judged."""
    from mixagent.policies.baselines import parse_baseline

    fixed = [r for r in rules if parse_baseline(r) is not None or r.startswith("two_phase:")]
    return list(dict.fromkeys([oracle, sbf, *fixed]))


def _earlier_rows(out: Path, suite, cfg: OracleConfig, sbf: dict, ptc: dict | None, skip: list[str]) -> list[dict]:
    """The finished rows of an earlier run of this table (a run over other ``--settings``) that are still valid:
    the same suite, the same config but for the settings run and how, the same SBF and the same probe-then-commit
    fit (its leave-one-setting-out record included); none of ``skip``."""
    path = out / "table.json"
    if not path.is_file():
        return []
    old = json.loads(path.read_text())
    same = (old.get("version") == TABLE_VERSION and _same_suite(old, suite)
            and not config_differences(cfg, old.get("config", {})) and old.get("probe_commit") == ptc)
    return [r for r in _current_rows(old, suite) if same and r["setting"] not in skip and r["sbf"] == sbf["rule"]]


def config_differences(cfg: OracleConfig, recorded: dict) -> list[str]:
    """The keys in which ``cfg`` differs from a table's ``recorded`` config, sorted; which settings ran and how
    (``settings``, ``workers``, ``launcher``) is not what a row means and is left out."""
    now = json.loads(json.dumps(recorded_config(cfg)))
    free = ("settings", "workers", "launcher")
    return sorted(k for k in {*now, *recorded} if k not in free and now.get(k) != recorded.get(k))


def _same_suite(table: dict, suite) -> bool:
    """Whether ``table`` was made for ``suite``: its name and training distribution (the held-out list may have
    changed since: :func:`_current_rows` keeps the rows still valid). A table written before ``training_hash``
    was recorded matches where the suite, cut down to the table's held-out settings, hashes to its
    ``suite_hash``."""
    if table.get("suite") != suite.name:
        return False
    if "training_hash" in table:
        return table["training_hash"] == suite.training_hash()
    names = {r["setting"] for r in table.get("rows", [])} | set(table.get("pending", []))
    if not names <= set(suite.held_out):
        return table.get("suite_hash") == suite.suite_hash()
    then = dataclasses.replace(suite, held_out={n: v for n, v in suite.held_out.items() if n in names})
    return table.get("suite_hash") == then.suite_hash()


def _current_rows(table: dict, suite) -> list[dict]:
    """The rows of ``table`` whose setting is still a held-out setting of ``suite``, declared as it was."""
    held = suite.held_out_settings()
    return [r for r in table.get("rows", [])
            if r["setting"] in held and r.get("setting_hash") == held[r["setting"]].setting_hash()]


def _write(cfg: OracleConfig, suite, sbf: dict, ptc: dict | None, rows: list[dict], pending: list[str],
           out: Path) -> dict:
    passing = sum(r["gated"] for r in rows)
    verdict = _verdict(passing, len(rows), pending, sbf["rule"], cfg.gate)
    table = {"version": TABLE_VERSION, "suite": suite.name, "suite_hash": suite.suite_hash(),
             "training_hash": suite.training_hash(), "config": recorded_config(cfg),
             "sbf": {k: v for k, v in sbf.items() if k != "normalised"},
             "probe_commit": ptc, "rows": rows, "pending": pending, "complete": not pending, "passing": passing,
             "verdict": verdict}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "table.json", table)
    atomic_write(out / "table.md", lambda tmp: tmp.write_text(_markdown(table, cfg)))
    _plot(table, out / "gaps.png")
    return table


def _verdict(passing: int, scored: int, pending: list[str], sbf: str, gate: float) -> str:
    verdict = (f"{passing} of {scored} held-out settings pass the gate (the oracle above the single best "
               f"fixed rule, {sbf}, by more than {gate:g} pooled seed std)")
    if pending:
        verdict += f"; {len(pending)} settings still to run ({', '.join(pending)}): no verdict on the suite yet"
    elif 2 * passing < scored:
        verdict += "; fewer than half: the suite's axes are too narrow, widen them"
    return verdict


def _markdown(table: dict, cfg: OracleConfig) -> str:
    lines = [f"Oracle table of suite {table['suite']} (hash {table['suite_hash']}): tuning seeds "
             f"{list(cfg.tune_seeds)}, held-out seeds {list(cfg.seeds)}. Single best fixed rule over "
             f"{len(table['sbf']['settings'])} training settings x lams {table['sbf']['lams']}: "
             f"**{table['sbf']['rule']}**. Scale: "
             + (f"each setting's reference pair widened by the anchors {', '.join(cfg.anchors)} (run on its "
                f"reference seeds; every row rescored from its raw evaluations)." if cfg.anchors else
                "each setting's reference pair (source-only, target-only; anchored only where the pair cannot "
                "scale, as the row says)."),
             "", "| setting | extrapolates | oracle (tuning) | oracle held-out | SBF held-out | probe-then-commit "
             "(closed gap) | best baseline | pooled std | gap [pooled std] | gate |",
             "|---|---|---|---:|---:|---:|---|---:|---:|:---:|"]
    for r in table["rows"]:
        ptc = r.get("probe_commit")
        ptc_text = "—"
        if ptc and ptc in r["means"]:
            closed = (r["means"][ptc] - r["means"][r["sbf"]]) / r["gap"] if r["gap"] else float("nan")
            ptc_text = f"{r['means'][ptc]:+.4f} ({closed:+.2f})" if r["gated"] else f"{r['means'][ptc]:+.4f}"
        baselines = {k: v for k, v in r["means"].items() if k not in (r["oracle"], r["sbf"], ptc)}
        best = max(baselines, key=baselines.get) if baselines else "—"
        best_text = f"{best} {baselines[best]:+.4f}" if baselines else "—"
        lines.append(f"| {r['setting']} | {', '.join(r['extrapolates']) or 'interpolates'} | {r['oracle_label']} | "
                     f"{r['means'][r['oracle']]:+.4f} ± {r['stds'][r['oracle']]:.4f} | "
                     f"{r['means'][r['sbf']]:+.4f} ± {r['stds'][r['sbf']]:.4f} | {ptc_text} | {best_text} | "
                     f"{r['pooled_std']:.4f} | "
                     f"{r['gap']:+.4f} [{r['gap_std']:+.1f}] | {'yes' if r['gated'] else 'no'} |")
    sbf = table["sbf"]
    if sbf.get("ranking"):  # how clear the choice was, and what the training settings covered
        runner = ", ".join(f"{r['rule']} {r['grid_normalised_mean']:.3f}" for r in sbf["ranking"][:3])
        lines += ["", f"SBF's choice, by mean grid-normalised score on the training settings (tuning seed): "
                      f"{runner}."]
    if sbf.get("coverage"):
        lines += ["Training settings per axis value: " + "; ".join(
            f"{a} " + ", ".join(f"{v.rsplit('/', 1)[-1]}: {n}" for v, n in c.items())
            for a, c in sbf["coverage"].items()) + " (the decay share over WSD runs)."]
    scales = [(st["run_hash"], st["reward_scale"]) for st in sbf["settings"] if "reward_scale" in st]
    if scales:  # whether one reward scale holds across settings (agent v2 trains across them)
        lines += ["", "Reward scale: the range of the static rows' mean normalised_bpb at lam 0.5 per training "
                      "setting (tuning seed), on the reference runs' scale and with the extremes widened by the "
                      f"{', '.join(STANDARD_ANCHORS)} rows (what `reward.anchors` does):", "",
                  "| training setting | reference scale | anchored |", "|---|---:|---:|"]
        lines += [f"| {h} | {sc['reference'][0]:.3f} .. {sc['reference'][1]:.3f} | "
                  f"{sc['anchored'][0]:.3f} .. {sc['anchored'][1]:.3f} |" for h, sc in scales]
    lines += ["", "The pooled std is over each setting's fixed rules (its noise rows: oracle, SBF and the fixed "
                  "baselines), never over a fitted or learned policy."]
    ptc = table.get("probe_commit")
    if ptc and ptc["loso"]["rows"]:
        loso = ptc["loso"]
        lines += ["", f"Probe-then-commit ({ptc['path']}): on the training settings, each held out in turn, its "
                      f"choice scores {loso['probe_commit']:.3f} on the grid-normalised scale against SBF's "
                      f"{loso['sbf']:.3f} and the row best's {loso['row_best']:.3f} ({loso['rows']} rows; one tuning "
                      f"seed, so the row best is inflated, and each rule is credited as played from the first "
                      f"segment: a diagnostic, not its score); its closed gap on held-out seeds is shown where the "
                      f"gate passes."]
    extra = sorted({(k, n) for r in table["rows"] for k, n in r.get("extra_runs", {}).items()})
    if extra:  # what a per-setting method cost beyond the run itself
        lines += ["", "Extra runs per setting, beyond the scored run: " + ", ".join(
            f"{k} {n} proxy runs on the tuning seeds" for k, n in extra) + "."]
    return "\n".join(lines) + f"\n\n{table['verdict']}.\n"


def _plot(table: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = table["rows"]
    gaps = [r["gap_std"] if math.isfinite(r["gap_std"]) else 0.0 for r in rows]
    fig, ax = plt.subplots(figsize=(max(6, 0.8 * len(rows) + 2), 4))
    ax.bar(range(len(rows)), gaps, color=["tab:green" if r["gated"] else "tab:gray" for r in rows])
    ax.axhline(table["config"]["gate"], color="tab:red", ls="--", lw=1, label=f"gate ({table['config']['gate']:g} std)")
    ax.set_xticks(range(len(rows)), [r["setting"] for r in rows], rotation=30, ha="right")
    ax.set_ylabel("oracle - SBF [pooled seed std]")
    ax.set_title(f"{table['suite']}: per-setting oracle over the single best fixed rule ({table['sbf']['rule']})")
    ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def load_oracle_table(path: str | Path, suite, partial: bool = False) -> dict:
    """A written oracle table, checked to belong to ``suite`` (its name and training distribution) and read
    against the suite's held-out list as it is now: a row whose setting left the list or is declared otherwise
    is dropped (``stale``), and every held-out setting without a row is ``pending`` (so adding held-out settings
    to a suite leaves its finished rows valid).

    Args:
        partial: accept a table with settings still to run (its ``pending`` list).

    Raises:
        ConfigError: the file is missing, of another version, of another suite or training distribution (naming
            both), or unfinished.
    """
    p = Path(path)
    table_path = p / "table.json" if p.is_dir() else p
    if not table_path.is_file():
        raise ConfigError("oracle table", [f"{table_path} not found; run mixagent oracle-table for suite {suite.name}"])
    table = json.loads(table_path.read_text())
    if table.get("version") != TABLE_VERSION:
        raise ConfigError("oracle table", [f"{table_path} is version {table.get('version')}, expected {TABLE_VERSION}; "
                                           f"rebuild it with mixagent oracle-table"])
    if not _same_suite(table, suite):
        raise ConfigError("oracle table", [f"{table_path} is of suite {table.get('suite')} (hash "
                                           f"{table.get('suite_hash')}), not {suite.name} (hash {suite.suite_hash()}, "
                                           f"training distribution {suite.training_hash()}); rerun mixagent "
                                           f"oracle-table for this suite"])
    rows = _current_rows(table, suite)
    done = {r["setting"] for r in rows}
    pending = [n for n in suite.held_out_settings() if n not in done]
    stale = [r["setting"] for r in table["rows"] if r not in rows]
    passing = sum(r["gated"] for r in rows)
    table = {**table, "rows": rows, "pending": pending, "complete": not pending, "stale": stale, "passing": passing,
             "verdict": _verdict(passing, len(rows), pending, table["sbf"]["rule"], table["config"]["gate"])}
    if pending and not partial:
        why = f" ({stale} are declared otherwise now or left the suite)" if stale else ""
        raise ConfigError("oracle table", [f"{table_path} is unfinished: settings {pending} still to run{why}; "
                                           f"resume mixagent oracle-table (it continues from its caches)"])
    return table
