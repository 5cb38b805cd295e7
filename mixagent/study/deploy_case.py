"""A generalization case run as real deployments: every policy drives a Hugging Face Trainer run of a deploy
job (``mixagent deploy``, e.g. ``configs/deploy/cpt-2m.yaml``: the ~2M base continually
pre-trained on v1's domain space), once per held-out seed, and the runs' reports become a table in the
comparison's format that :mod:`mixagent.study.generalize` reads like any other case.

Each run is a fresh process (``mixagent deploy --config <file> policy.spec=<policy> seed=<seed>
...``) writing its checkpoints under ``runs/generalize/<case>/`` (not committed); once it finished, its
``report.json`` (less the per-batch digests) is stored, with what identifies the run (the config's hash,
the policy and its identity, the seed), as ``<out>/<case>/reports/<policy label>-<digest>/<seed>.json``
(committed). An interrupted case resumes at the first missing run and a finished one reruns nothing.
Before the first run, the config and the overrides are validated (``mixagent deploy
--check-config``), so a typo fails in seconds, not after a run. The score is the
deploy report's ``balanced``: the mean change of the source and target fields' benchmark scores from the
start to the end of the run (the v0 reward, :func:`mixagent.env.rewards.balanced_score`). Next to it: the
same on held-out bits per byte (``balanced_bpb``, the mean relative fall of the fields' bpb: no reference
runs needed) and each field's mean held-out bits per byte at the end.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from mixagent.config import config_hash
from mixagent.errors import ConfigError, CorruptArtifactError, DataMissingError, WorkerError
from mixagent.paths import REPO_ROOT, atomic_write, atomic_write_json
from mixagent.rollout.identity import policy_identity

__all__ = ["deploy_case_hash", "case_inputs", "run_deploy_case", "check_deploy_config", "reserved_overrides",
           "policy_identity", "RESERVED_KEYS"]

log = logging.getLogger(__name__)
FORMAT = 1
RESERVED_KEYS = ("name", "seed", "policy.spec", "trainer.output_dir", "resume")  # set per run by the case


def reserved_overrides(overrides: tuple[str, ...]) -> list[str]:
    """A problem per override of a key the case sets per run (:data:`RESERVED_KEYS`)."""
    return [f"deploy_overrides: {o!r} sets a key the case sets per run ({', '.join(RESERVED_KEYS)}); drop it "
            f"(seeds come from the protocol's seeds, the policies from its agent and baselines)"
            for o in overrides if o.split("=", 1)[0].strip() in RESERVED_KEYS]


def run_identity(policy: str) -> str:
    """A stored run's policy identity: :func:`~mixagent.rollout.identity.policy_identity`, and for a learned
    policy the out-of-range guard's version (its settings are in the case's overrides, so in
    :func:`deploy_case_hash`): a run stored before the guard, or under other guard rules, is stale."""
    from mixagent.policies.ranges import GUARD_VERSION
    from mixagent.rollout.identity import artifact_dir

    identity = policy_identity(policy)
    return f"{identity}+guard{GUARD_VERSION}" if artifact_dir(policy) is not None else identity


def deploy_case_hash(config: str, overrides: tuple[str, ...]) -> str:
    """Identifies the runs: the deploy config as parsed (comments do not count), the overrides and what the
    config names: each repository file it points to by content (a YAML file as parsed), an env spec by its
    spec hash, a directory (a model, a policy artifact) by the content of every file in it.

    Raises:
        ConfigError: the config file does not exist or is not YAML.
    """
    from mixagent.env.spec import load_spec

    parsed = _parsed(config)
    named = {}
    for value in _named(parsed, overrides):
        f = REPO_ROOT / value
        if value and f.is_file():
            named[value] = (load_spec(f).spec_hash() if value.startswith("envs/") else _content_hash(f))
        elif "/" in value.strip("/") and f.is_dir():  # a path (a bare word like "benchmarks" is a value, not a dir)
            named[value] = _dir_hash(f)
    return config_hash(FORMAT, parsed, list(overrides), named)


def _parsed(config: str):
    import yaml

    path = REPO_ROOT / config
    if not path.is_file():
        raise ConfigError("generalize", [f"deploy: config {config!r} not found under {REPO_ROOT}; name a file "
                                         f"under configs/deploy/"])
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError("generalize", [f"deploy: config {config!r} is not valid YAML ({exc}); "
                                         f"fix the file"]) from None


def _named(parsed, overrides: tuple[str, ...]) -> list[str]:
    """Every string the config and the overrides hold (the candidates for named files and directories)."""
    return sorted(set(_strings(parsed)) | {o.split("=", 1)[-1] for o in overrides})


def case_inputs(config: str, overrides: tuple[str, ...], build: bool = False) -> dict[str, str]:
    """What the runs are built from beyond the configs' text: the base checkpoint each named base-model
    config (``configs/base_model/*.yaml``) builds, by its weights' sha256 (``"not built"`` where it is not
    built here, unless ``build``: then it is built or adopted from ``checkpoints/base/``), and the built
    corpora of each named domain space (``configs/spaces/*.yaml``), by their manifests' file digests. Stored
    with every run; a run whose inputs differ from today's is run again.

    Raises:
        ConfigError: the config file does not exist or is not YAML, or a named config does not load.
    """
    from mixagent.config import load_config
    from mixagent.data.build import read_manifest
    from mixagent.domains import DomainSpace
    from mixagent.env.base_model import BaseModelConfig, base_dir, get_base_model

    out: dict[str, str] = {}
    for value in _named(_parsed(config), overrides):
        f = REPO_ROOT / value
        if not value or not f.is_file():
            continue
        if f.parent.name == "base_model":
            cfg = load_config(BaseModelConfig, f)
            if build:
                get_base_model(cfg)
            meta = base_dir(cfg) / "meta.json"
            out[f"checkpoint:{value}"] = json.loads(meta.read_text())["sha256"] if meta.is_file() else "not built"
        elif f.parent.name == "spaces":
            for corpus in sorted({c for d in DomainSpace.from_yaml(f).domains for c in d.corpora}):
                try:
                    files = read_manifest(corpus)["files"]
                except (DataMissingError, CorruptArtifactError):  # not built here: its runs cannot be verified
                    out[f"corpus:{corpus}"] = "not built"
                    continue
                out[f"corpus:{corpus}"] = hashlib.sha256(json.dumps(
                    {k: v.get("sha256") for k, v in sorted(files.items())}, sort_keys=True).encode()).hexdigest()
    from mixagent.config import apply_overrides

    judge = (apply_overrides(_parsed(config) or {}, overrides).get("eval") or {}).get("judge")
    if isinstance(judge, dict):  # the judge by content (weights, tokenizer) and the judging rules' version
        from mixagent.env.judge import judge_model_digest

        model = str(judge.get("model", "smollm2_gguf"))
        try:
            out[f"judge:{model}"] = judge_model_digest(model)
        except DataMissingError:
            out[f"judge:{model}"] = "not found"
    return out


def _dir_hash(path: Path) -> str:
    """A directory by the names and contents of every file under it (YAML as parsed)."""
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode() + b"\0" + _content_hash(f).encode())
    return h.hexdigest()


def _content_hash(path: Path) -> str:
    """A YAML file by what it parses to (a comment or reformatting does not rerun a case), any other file, or
    YAML that does not parse, by its bytes."""
    import yaml

    raw = path.read_bytes()
    if path.suffix in (".yaml", ".yml"):
        try:
            return hashlib.sha256(json.dumps(yaml.safe_load(raw), sort_keys=True, default=str).encode()).hexdigest()
        except yaml.YAMLError:
            pass
    return hashlib.sha256(raw).hexdigest()


def _strings(node) -> list[str]:
    if isinstance(node, dict):
        return [s for v in node.values() for s in _strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return [node] if isinstance(node, str) else []


def _label(policy: str) -> str:
    """A directory name for ``policy``; a short digest keeps specs that differ only in ``/`` vs ``:`` apart."""
    return f"{policy.replace('/', '_').replace(':', '_')}-{hashlib.sha256(policy.encode()).hexdigest()[:6]}"


def run_deploy_case(name: str, config: str, overrides: tuple[str, ...], policies: tuple[str, ...],
                    agents: tuple[str, ...], seeds: tuple[int, ...], out: Path, work: Path | None = None,
                    check: bool = True) -> dict:
    """Run what is missing of ``policies`` x ``seeds`` and write ``<out>/<name>/table.json`` and ``table.md``.

    Args:
        name: the case's comparison name (``v1-trainer-2m``).
        config: the deploy config (a path under the repository).
        overrides: ``key=value`` deploy-config overrides applied to every run.
        policies: method specs or artifact directories (``policy.spec``).
        agents: which of ``policies`` are agents (the table's ``kind``).
        seeds: held-out seeds (the deploy job's ``seed``: the data order; with a model built from a config, also
            its initial weights).
        out: the comparisons' root (``audits/compare``).
        work: where the runs write their checkpoints (default ``runs/generalize/<name>``).
        check: validate the config with the deploy job before the first missing run (``False`` when the
            caller already did: :func:`check_deploy_config` starts a process).

    Returns:
        The table (``rows`` with per-seed ``scores``, ``mean``, ``std``; ``pooled_seed_std``).

    Raises:
        ConfigError: no policy, fewer than 2 seeds, an override of a key the case sets per run, a missing
            config or one the deploy job refuses (its message is passed on); nothing has run.
        WorkerError: a run failed or wrote no report (its log and command are named; the finished runs
            stay).
    """
    problems = [] if policies else ["policies is empty: name the policies the runs compare"]
    if len(seeds) < 2 or len(set(seeds)) != len(seeds):
        problems.append(f"seeds: a seed std needs >= 2 distinct seeds, got {list(seeds)}")
    problems += reserved_overrides(overrides)
    if problems:
        raise ConfigError("generalize", problems)
    spec_hash = deploy_case_hash(config, overrides)
    inputs = case_inputs(config, overrides, build=True)  # the runs need the bases; checking stored runs too
    case_dir = Path(out) / name
    runs = [(p, s) for p in policies for s in seeds]
    identity = {p: run_identity(p) for p in policies}
    reports: dict[tuple[str, int], dict] = {}
    todo = []
    for p, s in runs:
        path = case_dir / "reports" / _label(p) / f"{s}.json"
        try:
            stored = json.loads(path.read_text()) if path.is_file() else {}
            if not isinstance(stored, dict) or not isinstance(stored.get("report", {}), dict):
                raise ValueError("not a stored report")
        except (OSError, ValueError) as exc:
            log.warning("stored report %s is unreadable (%s); running it again", path, exc)
            stored = {}
        if (stored.get("format") == FORMAT and stored.get("spec_hash") == spec_hash and stored.get("seed") == s
                and stored.get("policy") == p and stored.get("identity") == identity[p]
                and stored.get("inputs") == inputs):  # a run without the record of its inputs is stale
            reports[(p, s)] = stored["report"]
        else:
            todo.append((p, s))
    if todo and check:
        check_deploy_config(name, config, overrides, todo[0])
    with tqdm(total=len(runs), initial=len(runs) - len(todo), desc=f"deploy runs {name}", unit="run") as bar:
        for p, s in todo:
            run_dir = Path(work or REPO_ROOT / "runs" / "generalize" / name) / _label(p) / str(s)
            cmd = [sys.executable, "-m", "mixagent.deploy", "--config", config, *overrides,
                   f"name={name}-{_label(p)}-{s}", f"policy.spec={p}", f"seed={s}", f"trainer.output_dir={run_dir}"]
            shutil.rmtree(run_dir, ignore_errors=True)  # an interrupted run starts over (its report was not kept)
            run_log = run_dir.parent / f"{s}.log"
            run_log.parent.mkdir(parents=True, exist_ok=True)
            with open(run_log, "w") as fh:
                done = subprocess.run(cmd, cwd=REPO_ROOT, stdout=fh, stderr=subprocess.STDOUT).returncode == 0
            if not done or not (run_dir / "report.json").is_file():
                raise WorkerError(f"{name}: the deploy run of {p} (seed {s}) "
                                  f"{'failed' if not done else 'wrote no report.json'}; see {run_log} (command: "
                                  f"python {' '.join(cmd[1:])}); the finished runs are kept, rerun to continue")
            report = json.loads((run_dir / "report.json").read_text())
            report.pop("batches_sha256", None)  # thousands of digests: the run's own directory keeps them
            (case_dir / "reports" / _label(p)).mkdir(parents=True, exist_ok=True)
            atomic_write_json(case_dir / "reports" / _label(p) / f"{s}.json",
                              {"format": FORMAT, "spec_hash": spec_hash, "seed": s, "policy": p,
                               "identity": identity[p], "inputs": inputs, "report": report})
            reports[(p, s)] = report
            bar.update()
    return _table(name, config, spec_hash, policies, agents, seeds, reports, case_dir, identity)


def check_deploy_config(name: str, config: str, overrides: tuple[str, ...], run: tuple[str, int]) -> None:
    """The deploy job's own validation of the config with the overrides and one run's keys.

    Raises:
        ConfigError: what the deploy job refuses, with its message.
    """
    p, s = run
    cmd = [sys.executable, "-m", "mixagent.deploy", "--config", config, "--check-config", *overrides,
           f"name={name}-check", f"policy.spec={p}", f"seed={s}"]
    done = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or ["(no message)"])
        raise ConfigError(name, [f"deploy config {config} with deploy_overrides {list(overrides)} is refused by "
                                 f"the deploy job: " + " ".join(line.strip() for line in why[-6:])])


def _bpb_summary(r: dict) -> tuple[float, float, float]:
    """A report's ``(balanced_bpb, source bpb, target bpb)``: the mean relative fall of the fields' held-out
    bits per byte over the run (:func:`mixagent.env.rewards.balanced_score`) and each field's at the end."""
    from mixagent.domains import Domain, DomainSpace
    from mixagent.env.evaluation import EvalResult
    from mixagent.env.rewards import balanced_score

    space = DomainSpace("report", [Domain(n, f, []) for n, f in zip(r["domains"], r["fields"])])
    start, final = EvalResult.from_json(r["start"]), EvalResult.from_json(r["final"])
    return (balanced_score("balanced_bpb", 0.5, start, final, space), final.field_bpb(space, "source"),
            final.field_bpb(space, "target"))


def _table(name: str, config: str, spec_hash: str, policies: tuple[str, ...], agents: tuple[str, ...],
           seeds: tuple[int, ...], reports: dict, case_dir: Path, identity: dict[str, str]) -> dict:
    rows = []
    for p in policies:
        rs = [reports[(p, s)] for s in seeds]
        scores = [float(r["balanced"]) for r in rs]
        bpb, source, target = np.array([_bpb_summary(r) for r in rs]).T.tolist()
        rows.append({"policy": p, "identity": identity[p], "kind": "agent" if p in agents else "baseline",
                     "seeds": list(seeds), "scores": scores, "mean": float(np.mean(scores)),
                     "std": float(np.std(scores, ddof=1)),
                     "balanced_bpb": bpb, "balanced_bpb_mean": float(np.mean(bpb)),
                     "balanced_bpb_std": float(np.std(bpb, ddof=1)),
                     "source_bpb": float(np.mean(source)), "target_bpb": float(np.mean(target)),
                     "train_seconds": float(np.mean([r.get("train_seconds") or 0.0 for r in rs]))})
        if all("judge" in r for r in rs):  # the judge's reward (lam 0.5) and end scores beside bits per byte
            judged = [float(r["judge"]["rewards"]["judge"]) for r in rs]
            rows[-1] |= {"judge": judged, "judge_mean": float(np.mean(judged)),
                         "judge_std": float(np.std(judged, ddof=1)),
                         "judge_final": {f: float(np.mean([r["final"]["judge"][f] for r in rs]))
                                         for f in ("source", "target")},
                         "judge_seconds": float(np.mean([r["judge"]["seconds_per_judged_eval"] for r in rs])),
                         "judge_marked": sorted({f for r in rs for f in r["judge"]["marked"]})}
        fell = [sum(h.get("fallback") is not None for h in r.get("history", [])) for r in rs]
        if any(fell):  # decisions the scheduler's guard took over: the run is not the policy as designed
            rows[-1]["fallbacks"] = {"decisions": sum(fell), "of": sum(len(r.get("history", [])) for r in rs)}
        guarded = [r["ood"] for r in rs if (r.get("ood") or {}).get("checked")]
        if guarded:  # decisions the out-of-range guard changed (fallback, clip) or only flagged (warn)
            rows[-1]["ood"] = {"mode": guarded[0]["mode"], "fallback": guarded[0].get("fallback"),
                               "affected": sum(g["affected"] for g in guarded),
                               "decisions": sum(g["decisions"] for g in guarded)}
    rows.sort(key=lambda r: -r["mean"])
    pooled = float(np.sqrt(np.mean([r["std"] ** 2 for r in rows])))
    first = reports[(policies[0], seeds[0])]
    table = {"version": FORMAT, "name": name, "env_id": f"deploy:{config}", "spec_hash": spec_hash,
             "reward": "balanced", "seeds": list(seeds), "pooled_seed_std": pooled, "rows": rows,
             "domains": first["domains"], "model": first["model"]}
    lines = [f"Trainer deployments ({config}; {first['model'].get('name', '')}, {first['steps']} steps), "
             f"held-out seeds {list(seeds)}; score: balanced (mean change of the fields' benchmark scores)", "",
             "| rank | policy | kind | balanced (mean ± std) | gap to best [pooled std] | balanced bpb (mean ± std) "
             "| source bpb | target bpb | train s |", "|---:|---|---|---:|---:|---:|---:|---:|---:|"]
    judged = all("judge_mean" in r for r in rows)
    if judged:
        marked = sorted({f for r in rows for f in r["judge_marked"]})
        lines[0] += ("; judge: the change of the judge's win rate against the real text, lam 0.5"
                     + (f" (**judge marked invalid on {', '.join(marked)}**)" if marked else ""))
        lines[2] = lines[2].rstrip(" |") + " | judge (mean ± std) | judge end: source / target | judge s/eval |"
        lines[3] += "---:|---:|---:|"
    for i, r in enumerate(rows, 1):
        gap = r["mean"] - rows[0]["mean"]
        name = r["policy"] + (f" (**fell back** at {r['fallbacks']['decisions']} of {r['fallbacks']['of']} "
                              f"decisions)" if r.get("fallbacks") else "")
        ood = r.get("ood")
        if ood and ood["affected"]:  # the policy as deployed is partly its guard's choice: say so in the row
            name += (f" (**out of range** at {ood['affected']} of {ood['decisions']} decisions: `ood: {ood['mode']}`"
                     + (f", {ood['fallback']} decided" if ood["mode"] == "fallback" else "") + ")")
        lines.append(f"| {i} | {name} | {r['kind']} | {r['mean']:+.4f} ± {r['std']:.4f} | "
                     f"{'best' if i == 1 else f'{gap:+.4f} [{gap / pooled if pooled else 0:+.1f}]'} | "
                     f"{r['balanced_bpb_mean']:+.4f} ± {r['balanced_bpb_std']:.4f} | {r['source_bpb']:.4f} | "
                     f"{r['target_bpb']:.4f} | {r['train_seconds']:.0f} |"
                     + (f" {r['judge_mean']:+.4f} ± {r['judge_std']:.4f} | {r['judge_final']['source']:.3f} / "
                        f"{r['judge_final']['target']:.3f} | {r['judge_seconds']:.0f} |" if judged else ""))
    case_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(case_dir / "table.json", table)
    atomic_write(case_dir / "table.md", lambda tmp: tmp.write_text("\n".join(lines) + "\n"))
    if judged:
        _judge_plot(table, case_dir / "judge.png")
    return table


def _judge_plot(table: dict, path: Path) -> None:
    """Each run's judge reward against its balanced bits-per-byte change, one colour per policy: whether the
    two measures agree, and how the judge's seed noise compares with the gaps between policies."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for i, r in enumerate(table["rows"]):
        ax.scatter(r["balanced_bpb"], r["judge"], s=46, marker="osD^v"[i % 5], alpha=0.8,
                   label=f"{r['policy']} ({r['kind']})")
        for x, y, seed in zip(r["balanced_bpb"], r["judge"], r["seeds"], strict=True):
            ax.annotate(f"s{seed}", (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7)
    ax.axhline(0, color="0.6", lw=0.8)
    ax.set_xlabel("balanced bits-per-byte change (higher is better)")
    ax.set_ylabel("judge reward, lam 0.5 (win-rate change)")
    ax.set_title(f"{table['name']}: judge vs bits per byte, per run", fontsize=10)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
