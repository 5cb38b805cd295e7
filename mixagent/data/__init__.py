"""Data: corpora from registry packages (``mixagent data build``), the local tokenizer,
tokenized splits, the TF-IDF + k-means labeller for fine-grained spaces, and :class:`DomainData` (every
domain's token streams and validation windows). Names load lazily."""

from __future__ import annotations

from mixagent._lazy import lazy_exports

__all__ = ["DataConfig", "read_split", "SOURCES", "load_space", "DomainData", "get_tokenizer",
           "TokenizerConfig", "load_tokenized", "cluster_labels"]

__getattr__, __dir__ = lazy_exports(__name__, {
    "DataConfig": "build", "read_split": "build", "SOURCES": "sources",
    "load_space": "sources", "DomainData": "domain_data", "get_tokenizer": "tokenizer",
    "TokenizerConfig": "tokenizer", "load_tokenized": "tokens", "cluster_labels": "labeller"})
