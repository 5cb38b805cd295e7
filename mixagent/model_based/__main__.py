"""``python -m mixagent.model_based <command> ...`` (also ``mixagent world-model | world-model-settings |
plan | variants``): the model-based research jobs.

* ``world-model``: fit the world model of an env on its trajectories, measure it (held-out R², policy
  ranking), commit it as a surrogate env;
* ``world-model-settings``: one world model across a suite's settings, measured per setting left out;
* ``plan``: model-predictive control over a world model, scored in the real env;
* ``variants``: every agent variant (BC, CQL, model-based, per-domain, planner) against the baselines.
"""

from __future__ import annotations

import argparse
import logging
import sys

from mixagent.errors import MixagentError
from mixagent.paths import CONFIGS_DIR

__all__ = ["world_model", "world_model_settings", "plan", "variants", "COMMANDS", "cli"]


def world_model(argv: list[str] | None = None) -> int:
    """Run the ``world-model`` command: fit the ensemble, measure it, save the artifact and report."""
    parser = argparse.ArgumentParser(prog="mixagent world-model",
                                     description="Fit the world model of the mixing environment on collected "
                                                 "trajectories; report held-out R² and how it ranks real policies.")
    parser.add_argument("--config", default=str(CONFIGS_DIR / "world_model/default.yaml"), help="config YAML")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--ranks-only", action="store_true",
                        help="no refit: rank the policies again with the world model at out (after a comparison "
                             "changed)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. model.epochs=50 out=runs/wm")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        from mixagent.config import load_config
        from mixagent.model_based.job import WorldModelJobConfig, refresh_ranks, run_world_model_job

        cfg = load_config(WorldModelJobConfig, args.config, args.overrides)
        report = refresh_ranks(cfg) if args.ranks_only else run_world_model_job(cfg, progress=not args.no_progress)
    except MixagentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    r2 = report["r2_summary"]
    print("\nheld-out R² (ensemble mean, one step): " + ", ".join(f"{k} {v:.3f}" for k, v in r2.items()))
    rho, ceiling = report["spearman"], report["seed_ceiling"]
    print(f"policy ranking, surrogate vs real, {len(report['policies'])} policies: Spearman "
          f"{'n/a' if rho is None else f'{rho:.3f}'} (goal >= 0.9; the real env against itself: "
          f"{'n/a' if ceiling is None else f'{ceiling:.3f}'})")
    print(f"artifact and report: {cfg.out}/ (meta.json, model.safetensors, report.md, ranks.png)")
    return 0


def world_model_settings(argv: list[str] | None = None) -> int:
    """Run the ``world-model-settings`` command: the world model across a suite's settings, measured per setting
    by models fitted without it (:mod:`mixagent.model_based.settings_job`)."""
    parser = argparse.ArgumentParser(prog="mixagent world-model-settings",
                                     description="Fit one world model across a suite's settings; report, per setting "
                                                 "left out, one-step R² and how it ranks the setting's grid rows.")
    parser.add_argument("--config", default=str(CONFIGS_DIR / "world_model/suite-v1.yaml"), help="config YAML")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. model.epochs=50 folds=3")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        from mixagent.config import load_config
        from mixagent.model_based.settings_job import SettingsModelJobConfig, run_settings_model_job

        cfg = load_config(SettingsModelJobConfig, args.config, args.overrides)
        report = run_settings_model_job(cfg, progress=not args.no_progress)
    except MixagentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    s = report["summary"]
    print(f"\n{len(report['settings'])} settings, each left out: R² bpb source {s['bpb_source']:.2f}, target "
          f"{s['bpb_target']:.2f}; score source {s['score_source']:.2f}, target {s['score_target']:.2f}")
    if "spearman_mean" in s:
        print(f"grid ranking in {s['ranked_settings']} settings: Spearman mean {s['spearman_mean']:+.2f} (min "
              f"{s['spearman_min']:+.2f}), regret {s['regret_mean']:.3f}; fixed rules "
              + ", ".join(f"{k} {v:.3f}" for k, v in s["fixed_regret_mean"].items()))
    print(f"artifact and report: {cfg.out}/ (meta.json, model.safetensors, report.md, ranks.png)")
    return 0


def plan(argv: list[str] | None = None) -> int:
    """Run the ``plan`` command: model-predictive control over a world model, scored in the real env."""
    parser = argparse.ArgumentParser(prog="mixagent plan",
                                     description="Roll the world-model planner (MPC) out in the real env on held-out "
                                                 "seeds; one episode JSON per seed (resumable).")
    parser.add_argument("--world-model", default="checkpoints/world_models/math-cpt-v1")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--trials", type=int, default=64, help="plans searched per decision")
    parser.add_argument("--penalty", type=float, default=0.05, help="weight of the ensemble disagreement")
    parser.add_argument("--out", default="audits/agent-v1/mpc")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        import numpy as np

        from mixagent.model_based.planning import evaluate_planner

        eps = evaluate_planner(args.world_model, args.seeds, args.out, args.trials, args.penalty)
    except MixagentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    scores = [e["balanced"] for e in eps]
    print(f"planner (trials {args.trials}, penalty {args.penalty}) in the real env, seeds {args.seeds}: final balanced "
          f"score {np.mean(scores):+.4f} ± {np.std(scores):.4f}; episodes in {args.out}/<key digest>/ (the world "
          f"model, trials, penalty, spec and planner version)")
    return 0


def variants(argv: list[str] | None = None) -> int:
    """Run the ``variants`` command: every agent variant against the baselines in the real env, one table."""
    parser = argparse.ArgumentParser(prog="mixagent variants",
                                     description="Train (resuming) and score every agent variant of the config in "
                                                 "the real env against the comparison's baselines; one table.")
    parser.add_argument("--config", default=str(CONFIGS_DIR / "agent/variants.yaml"), help="variants YAML")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. out=runs/variants")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        from mixagent.config import load_config
        from mixagent.model_based.variants import VariantsConfig, run_variants
        from mixagent.paths import REPO_ROOT

        cfg = load_config(VariantsConfig, args.config, args.overrides)
        run_variants(cfg, progress=not args.no_progress)
    except MixagentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print((REPO_ROOT / cfg.out / "table.md").read_text())
    print(f"table: {cfg.out}/table.md; the comparison's report: audits/compare/{cfg.name}/report.md")
    return 0


COMMANDS = {"world-model": world_model, "world-model-settings": world_model_settings, "plan": plan,
            "variants": variants}


def cli(argv: list[str] | None = None) -> int:
    """``python -m mixagent.model_based <command> ...``: ``world-model``, ``plan`` or ``variants``."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print("usage: python -m mixagent.model_based {world-model,plan,variants} ... (or mixagent <command> ...)",
              file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(cli())
