"""A user's own data for the deploy job: local files read through ``datasets``, split into domains and
held-out sets, then tokenized into per-domain training sources and held-out windows.

Two steps, so bad data fails before the model loads:

1. :func:`load_user_data` (no tokenizer): reads the files, checks the columns, splits the one-dataset form
   by its domain column, finds each domain's held-out rows (its files, or a seeded share of its documents).
2. :func:`tokenized_pieces` (the model's tokenizer): a :class:`~mixagent.deploy.mixture.HFDatasetSource`
   per domain (tokenized once, cached by ``datasets``), the natural token shares, and a
   :class:`~mixagent.deploy.heldout.HeldOutLoss` over ``eval_windows`` held-out windows per domain.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mixagent.deploy.heldout import HeldOutLoss
from mixagent.deploy.job_config import FILE_FORMATS, DataSection, resolve
from mixagent.deploy.mixture import HFDatasetSource, MixtureDataset
from mixagent.domains import Domain, DomainSpace, DomainWeights
from mixagent.errors import ConfigError, DataMissingError

__all__ = ["UserData", "load_user_data", "tokenized_pieces", "read_files", "byte_level"]

log = logging.getLogger(__name__)


def read_files(files: Sequence[str | Path], what: str) -> Any:
    """One ``datasets.Dataset`` from local files (by extension) and saved dataset directories, concatenated
    in the order given. A :class:`~pathlib.Path` is read as it is (the deploy job passes its config's
    resolved paths); a path given as text is resolved first (:func:`~mixagent.deploy.job_config.resolve`).

    Raises:
        ConfigError: a file ``datasets`` cannot read (named, with its error).
    """
    import datasets

    parts = []
    for f in files:
        p = f if isinstance(f, Path) else resolve(f)
        f = str(f)
        try:
            if p.is_dir():
                ds = datasets.load_from_disk(str(p))
                if isinstance(ds, datasets.DatasetDict):
                    raise ConfigError(what, [f"{f!r} is a DatasetDict ({list(ds)}): name one split's directory"])
            else:
                ds = datasets.load_dataset(FILE_FORMATS[p.suffix], data_files=[str(p)], split="train")
        except ConfigError:
            raise
        except Exception as exc:  # noqa: BLE001 — datasets raises many types for unreadable files
            raise ConfigError(what, [f"{f!r} could not be read by datasets ({type(exc).__name__}: {exc}); check "
                                     f"its format ({p.suffix or 'directory'})"]) from exc
        parts.append(ds)
    if len(parts) == 1:
        return parts[0]
    try:
        return datasets.concatenate_datasets(parts)
    except ValueError as exc:
        raise ConfigError(what, [f"the files {[str(f) for f in files]} have different columns or types ({exc}); "
                                 f"give files of one schema"]) from exc


@dataclasses.dataclass
class UserData:
    """The run's data before tokenization: the domain space and, per domain, its training and held-out rows
    (``datasets.Dataset``)."""

    space: DomainSpace
    train: dict[str, Any]
    held_out: dict[str, Any]
    text_column: str


def _check_columns(ds: Any, cfg: DataSection, where: str, need_domain: bool) -> list[str]:
    cols = list(ds.column_names)
    problems = []
    if "input_ids" not in cols and cfg.text_column not in cols:
        problems.append(f"{where} has no text column {cfg.text_column!r} (columns: {cols}): set data.text_column "
                        f"to the column holding the text, or give an input_ids column")
    if need_domain and cfg.domain_column not in cols:
        problems.append(f"{where} has no domain column {cfg.domain_column!r} (columns: {cols}): set "
                        f"data.domain_column, or give one file list per domain (data.domains.<name>.files)")
    return problems


def _split_by_domain(ds: Any, cfg: DataSection, names: list[str], where: str) -> dict[str, Any]:
    values = ds.unique(cfg.domain_column)
    unknown = sorted(str(v) for v in values if v not in names)
    if unknown:
        raise ConfigError("data", [f"{where} has rows of domains {unknown} that data.domains does not list "
                                   f"({names}): add them with their field, or drop those rows"])
    column = np.asarray(ds[cfg.domain_column], dtype=object)
    return {n: ds.select(np.flatnonzero(column == n)) for n in names}


def load_user_data(cfg: DataSection, seed: int = 0) -> UserData:
    """Read and split the user's data (see the module docstring); no tokenizer needed. The files are the
    section's resolved paths (``cfg.resolved``, ``cfg.domains[name].resolved``), resolved when it was built.

    Raises:
        ConfigError: an unreadable file, a missing text or domain column, rows of an unlisted domain.
        DataMissingError: a domain with no training rows or no held-out rows.
    """
    names = list(cfg.domains)
    space = DomainSpace("user", [Domain(n, d.field, [n]) for n, d in cfg.domains.items()])
    problems: list[str] = []
    if cfg.form == "column":
        train_all = read_files(cfg.resolved.files, "data.files")
        problems += _check_columns(train_all, cfg, "data.files", True)
        held_all = read_files(cfg.resolved.held_out_files, "data.held_out_files") if cfg.held_out_files else None
        if held_all is not None:
            problems += _check_columns(held_all, cfg, "data.held_out_files", True)
        if problems:
            raise ConfigError("data", problems)
        train = _split_by_domain(train_all, cfg, names, "data.files")
        held = _split_by_domain(held_all, cfg, names, "data.held_out_files") if held_all is not None else {}
    else:
        train, held = {}, {}
        for n, d in cfg.domains.items():
            train[n] = read_files(d.resolved.files, f"data.domains.{n}.files")
            problems += _check_columns(train[n], cfg, f"data.domains.{n}.files", False)
            if d.held_out:
                held[n] = read_files(d.resolved.held_out, f"data.domains.{n}.held_out")
                problems += _check_columns(held[n], cfg, f"data.domains.{n}.held_out", False)
        if problems:
            raise ConfigError("data", problems)
    empty = [n for n in names if len(train[n]) == 0]
    if empty:
        raise DataMissingError(f"domains {empty} have no training rows in the data given; give every domain "
                               f"some documents, or drop it from data.domains")
    for i, n in enumerate(names):
        if n in held and len(held[n]) > 0:
            continue
        if cfg.held_out_fraction <= 0 or len(train[n]) < 2:
            raise DataMissingError(f"domain {n!r} has no held-out data: give its held-out rows (data.held_out_files "
                                   f"or data.domains.{n}.held_out) or set data.held_out_fraction (with at least 2 "
                                   f"documents in the domain)")
        split = train[n].train_test_split(test_size=cfg.held_out_fraction, seed=seed + i)
        train[n], held[n] = split["train"], split["test"]
        log.info("domain %s: %d documents held out of %d (held_out_fraction %.3g)", n, len(held[n]),
                 len(train[n]) + len(held[n]), cfg.held_out_fraction)
    if cfg.max_docs:
        train = {n: ds.select(range(min(cfg.max_docs, len(ds)))) for n, ds in train.items()}
    return UserData(space, train, held, cfg.text_column)


def byte_level(tokenizer: Any) -> bool:
    """Whether a tokenizer is byte-level BPE (each vocabulary character one byte), so that held-out loss can
    be given in bits per byte from its vocabulary."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return False
    try:
        pre = json.loads(backend.to_str()).get("pre_tokenizer") or {}
    except ValueError:
        return False
    text = json.dumps(pre)
    return '"ByteLevel"' in text


def _windows(ds: Any, length: int, n: int, tokenizer: Any, text_column: str, eos_id: int | None) -> np.ndarray:
    src = HFDatasetSource(ds, length, tokenizer=tokenizer, text_column=text_column, eos_id=eos_id, seed=0)
    tokens = sum(len(x) + 1 for x in src.dataset["input_ids"])  # documents joined by one separator each
    if tokens < length:
        return np.zeros((0, length), dtype=np.int64)
    return np.stack([w for _, w in zip(range(min(n, tokens // length)), src.windows(0))])


def tokenized_pieces(data: UserData, tokenizer: Any, seq_len: int, batch_size: int, eval_windows: int,
                     unit: str = "auto", eval_batch: int = 16, seed: int = 0, eos_id: int | None = None,
                     ) -> tuple[MixtureDataset, HeldOutLoss, DomainWeights]:
    """The training dataset, the held-out evaluation and the natural token shares of the user's data.

    Args:
        data: from :func:`load_user_data`.
        tokenizer: the model's tokenizer.
        seq_len: tokens per training window (held-out windows are ``seq_len + 1``).
        batch_size: sequences per step per rank.
        eval_windows: held-out windows per domain (fewer when a domain's held-out data is shorter).
        unit: ``byte``, ``token`` or ``auto`` (byte for byte-level BPE tokenizers).
        seed: data-order seed.

    Raises:
        DataMissingError: a domain whose training or held-out data is shorter than one window.
        ConfigError: ``unit=byte`` with a tokenizer that is not byte-level.
    """
    from mixagent.data.tokenizer import token_byte_lengths

    names = data.space.names
    sources, windows, tokens = {}, {}, []
    for i, n in enumerate(names):
        src = HFDatasetSource(data.train[n], seq_len, tokenizer=tokenizer, text_column=data.text_column,
                              eos_id=eos_id, seed=seed + i)
        count = sum(len(x) + 1 for x in src.dataset["input_ids"])
        if count < seq_len:
            raise DataMissingError(f"domain {n!r} has {count} training tokens, fewer than one window of "
                                   f"{seq_len}: give it more text or lower data.seq_len")
        sources[n] = src
        tokens.append(count)
        windows[n] = _windows(data.held_out[n], seq_len + 1, eval_windows, tokenizer, data.text_column, eos_id)
        if len(windows[n]) == 0:
            raise DataMissingError(f"domain {n!r}'s held-out data is shorter than one evaluation window "
                                   f"({seq_len + 1} tokens): give it more held-out text (or a larger "
                                   f"held_out_fraction), or lower data.seq_len")
    byte = byte_level(tokenizer)
    if unit == "byte" and not byte:
        raise ConfigError("eval.unit", ["bits per byte needs a byte-level BPE tokenizer (its vocabulary gives each "
                                        "token's bytes); this one is not: use unit token or auto"])
    lengths = token_byte_lengths(tokenizer) if (unit == "byte" or (unit == "auto" and byte)) else None
    natural = DomainWeights.normalised(data.space, np.asarray(tokens, dtype=np.float64))
    dataset = MixtureDataset(sources, data.space, batch_size, seed=seed, initial=natural)
    return dataset, HeldOutLoss(windows, data.space, byte_lengths=lengths, batch_size=eval_batch), natural
