"""Is the judge a judge, and of which models? ``mixagent judge-check --config configs/judge/<name>.yaml``.

For every judge of the config (:class:`~mixagent.env.judge.JudgeSpec`, e.g. the prompted and the likelihood
mode of SmolLM2-135M-Instruct) on each field's held-out prefixes:

1. **Validity** (:func:`~mixagent.env.judge.measure_validity`): accuracy at preferring the real suffix over
   corrupted ones, its bootstrap 95% interval, per-corruption accuracy, agreement across orders and
   samples, position bias.
2. **Where the score moves**: each listed model (the proxies' committed bases at 0.6M, 2M and 7.4M
   parameters, SmolLM2-135M) continues the prefixes, and the judge scores them against the real text: the
   per-field win rate with a bootstrap interval over items, and the seconds one judged evaluation costs.
   A judge whose scores do not separate the models cannot reward a mixture at that scale.

Writes ``<out>/<name>/check.json``, ``check.md`` and ``scores.png`` (committed under ``audits/judge/``).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from typing import Any

import numpy as np

from mixagent.config import load_config, to_dict
from mixagent.data.build import read_split
from mixagent.env.judge import (
    JudgeEvaluation,
    JudgeSpec,
    LMJudge,
    cluster_bootstrap,
    cut_prefixes,
    judge_cache_dir,
    load_judge,
)
from mixagent.errors import MixagentError
from mixagent.paths import REPO_ROOT, atomic_write_json

__all__ = ["JudgeCheckConfig", "CheckedModel", "run_judge_check", "format_check", "plot_check", "main"]

FORMAT = 1
MODEL_KINDS = ("base", "smollm2_gguf")


@dataclasses.dataclass(frozen=True)
class CheckedModel:
    """A model whose continuations are judged.

    Args:
        name: its row in the table.
        kind: ``base`` (a proxy base checkpoint from ``config``) or ``smollm2_gguf``.
        config: the base-model config YAML (``kind: base``).
    """

    name: str
    kind: str = "base"
    config: str = "configs/base_model/default.yaml"

    def check(self) -> list[str]:
        problems = [] if self.kind in MODEL_KINDS else [f"kind must be one of {MODEL_KINDS}, got {self.kind!r}"]
        if self.kind == "base" and not (REPO_ROOT / self.config).is_file():
            problems.append(f"config {self.config!r} is not a base-model config file (configs/base_model/*.yaml)")
        return problems


@dataclasses.dataclass(frozen=True)
class JudgeCheckConfig:
    """Args:
        name: the check's directory under ``out``.
        judges: named judge specs; each is checked (``on_invalid`` is ignored: validity is measured here).
        fields: per field, the corpora whose held-out documents give the prefixes.
        models: the models whose continuations are judged.
        bootstrap: resamples of the model-score intervals (>= 100); the validity intervals use the judge
            evaluation's own resamples (:func:`mixagent.env.judge.measure_validity`), as a run's refusal does.
        out: output root.
    """

    name: str
    judges: dict[str, JudgeSpec]
    fields: dict[str, list[str]]
    models: list[CheckedModel]
    bootstrap: int = 2000
    out: str = "audits/judge"

    def check(self) -> list[str]:
        problems = [] if set(self.fields) == {"source", "target"} else [
            f"fields must name source and target, got {sorted(self.fields)}"]
        if not self.judges:
            problems.append("judges must name at least one judge")
        if not self.models:
            problems.append("models must list at least one model")
        if self.bootstrap < 100:
            problems.append(f"bootstrap must be >= 100 resamples (a 95% interval from fewer is noise), got "
                            f"{self.bootstrap}")
        return problems


def _load_model(m: CheckedModel) -> tuple[Any, Any, int]:
    """``(model, tokenizer, context length)`` of a checked model."""
    if m.kind == "smollm2_gguf":
        from mixagent.env.gguf import load_gguf_model

        model, tok = load_gguf_model(dtype="float32")
        return model, tok, int(model.config.max_position_embeddings)
    from mixagent.env.base_model import BaseModelConfig, get_base_model

    base = get_base_model(load_config(BaseModelConfig, REPO_ROOT / m.config))
    return base.model, base.tokenizer, base.model_config.seq_len


def run_judge_check(cfg: JudgeCheckConfig) -> dict:
    """Run the check (module docstring); returns what ``check.json`` holds."""
    from tqdm.auto import tqdm

    def prefixes_of(spec: JudgeSpec) -> dict[str, list]:  # each judge's own prefix knobs
        out = {}
        for field, corpora in cfg.fields.items():
            docs = [d["text"] for c in corpora for d in read_split(c, spec.split)]
            out[field] = cut_prefixes(docs, spec.prefixes, spec.prefix_chars, spec.suffix_chars, spec.seed,
                                      where=f"the {field} field's corpora {corpora}")
        return out

    loaded: dict[str, LMJudge] = {}
    evaluations: dict[str, JudgeEvaluation] = {}
    out: dict[str, Any] = {"format": FORMAT, "config": to_dict(cfg), "judges": {}, "models": {}}
    cut = {name: prefixes_of(spec) for name, spec in cfg.judges.items()}  # too few documents: refused before loading
    for name, spec in cfg.judges.items():
        spec = dataclasses.replace(spec, on_invalid="mark")
        twin = next((j for j in loaded.values() if j.spec.model == spec.model), None)
        judge = (LMJudge(twin.model, twin.tokenizer, spec, twin.digest) if twin is not None else load_judge(spec))
        loaded[name] = judge
        t0 = time.perf_counter()
        ev = JudgeEvaluation(spec, judge, cut[name], None, 1 << 20, judge_cache_dir())
        evaluations[name] = ev
        out["judges"][name] = {"identity": ev.identity, "validity_seconds": time.perf_counter() - t0,
                               "validity": {f: v.to_json() for f, v in ev.validity.items()}}
    rng = np.random.Generator(np.random.PCG64(0))
    for m in tqdm(cfg.models, desc="judged models", unit="model"):
        model, tok, context = _load_model(m)
        n_params = sum(p.numel() for p in model.parameters())
        row: dict[str, Any] = {"parameters": n_params, "judges": {}}
        for name, ev in evaluations.items():
            ev.tokenizer, ev.context_length = tok, context
            ev._cache.clear()
            t0 = time.perf_counter()
            scores = ev(model, start=True)
            row["judges"][name] = {"scores": scores, "seconds": time.perf_counter() - t0,
                                   "intervals": {f: cluster_bootstrap(ev.last_items[f], np.arange(len(
                                       ev.last_items[f])) // ev.spec.candidates, rng, cfg.bootstrap) for f in scores},
                                   "example": {"prefix": ev.prefixes["target"][0].text[-120:],
                                               "continuation": ev.last_texts["target"][0],
                                               "real": ev.prefixes["target"][0].suffix}}
        out["models"][m.name] = row
        del model
    return out


def format_check(result: dict) -> str:
    """The check as markdown: validity per judge and field, then each model's judge scores."""
    lines = ["| judge | field | accuracy [95% CI] | shuffle / swap / noise | order agreement | position bias | "
             "valid |", "|---|---|---|---|---|---|---|"]
    for name, j in result["judges"].items():
        ordered = result["config"]["judges"][name].get("mode", "prompt") == "prompt"  # likelihood has no order
        for f, v in j["validity"].items():
            by = " / ".join(f"{v['by_corruption'].get(k, float('nan')):.3f}" for k in ("shuffle", "swap", "noise"))
            order = f"{v['order_agreement']:.2f} | {v['position_bias']:.2f}" if ordered else "n/a | n/a"
            lines.append(f"| {name} | {f} | {v['accuracy']:.3f} [{v['ci_low']:.3f}, {v['ci_high']:.3f}] | {by} | "
                         f"{order} | {'yes' if v['valid'] else 'no'} |")
    judges = list(result["judges"])
    lines += ["", "| model | parameters | " + " | ".join(f"{n}: source | {n}: target | {n}: s/eval" for n in judges)
              + " |", "|---|---|" + "---|---|---|" * len(judges)]
    for name, row in result["models"].items():
        cells = []
        for n in judges:
            r = row["judges"][n]
            cells += [f"{r['scores'][f]:.3f} [{r['intervals'][f][0]:.3f}, {r['intervals'][f][1]:.3f}]"
                      for f in ("source", "target")] + [f"{r['seconds']:.0f}"]
        lines.append(f"| {name} | {row['parameters'] / 1e6:.1f}M | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_check(result: dict, path) -> None:
    """Each judge's score of each model's continuations per field, with its interval, models by size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    judges, models = list(result["judges"]), list(result["models"])
    fig, axes = plt.subplots(1, len(judges), figsize=(5 * len(judges), 3.8), squeeze=False, sharey=True)
    for ax, name in zip(axes[0], judges):
        for k, (field, color) in enumerate((("source", "tab:blue"), ("target", "tab:orange"))):
            rows = [result["models"][m]["judges"][name] for m in models]
            y = np.array([r["scores"][field] for r in rows])
            lo = np.array([r["intervals"][field][0] for r in rows])
            hi = np.array([r["intervals"][field][1] for r in rows])
            x = np.arange(len(models)) + (k - 0.5) * 0.3
            ax.bar(x, y, 0.3, color=color, label=field, yerr=[y - lo, hi - y], capsize=3)
        valid = all(v["valid"] for v in result["judges"][name]["validity"].values())
        ax.axhline(0.5, color="gray", ls="--", lw=1)
        ax.set_xticks(range(len(models)), [f"{m}\n{result['models'][m]['parameters'] / 1e6:.1f}M" for m in models],
                      fontsize=8)
        ax.set_title(f"judge: {name} ({'valid' if valid else 'NOT valid'})", fontsize=10)
        ax.set_ylim(0, 1)
    axes[0][0].set_ylabel("win rate against the real text")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mixagent judge-check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="a judge-check YAML (configs/judge/*.yaml)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. judges.prompt.prefixes=8")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(JudgeCheckConfig, args.config, args.overrides)
        result = run_judge_check(cfg)
    except MixagentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    folder = REPO_ROOT / cfg.out / cfg.name
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / "check.json", result)
    (folder / "check.md").write_text(format_check(result))
    plot_check(result, folder / "scores.png")
    print(format_check(result))
    print(f"written to {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

