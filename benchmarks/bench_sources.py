"""Tokenization work of a ``datasets`` text source read by DataLoader workers (a fixed fault: every worker used
to re-tokenize every text it skipped over). Counts the texts the tokenizer saw, in every process, and the
wall time of reading the same batches with 0 and 2 workers.

    .venv/bin/python benchmarks/bench_sources.py [--texts 192] [--batches 200]

Runs against whatever ``mixagent`` is importable (so the same script measures an older checkout with
``PYTHONPATH=<checkout>``). Writes ``runs/bench/sources.json``.
"""

from __future__ import annotations

import argparse
import json
import time

import datasets
import torch
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerFast

from mixagent.deploy.mixture import HFDatasetSource, MixtureDataset
from mixagent.domains import Domain, DomainSpace
from mixagent.paths import REPO_ROOT, data_root


class CountingTokenizer:
    """Counts the texts it tokenizes in shared memory, so DataLoader workers' work is counted too."""

    def __init__(self, tok: PreTrainedTokenizerFast) -> None:
        self.tok, self.eos_token_id = tok, tok.eos_token_id
        self.texts = torch.zeros(1, dtype=torch.int64).share_memory_()

    def __call__(self, texts: list[str], **kwargs):
        self.texts += len(texts)
        return self.tok(texts, **kwargs)


def measure(tok: PreTrainedTokenizerFast, n_texts: int, batches: int, workers: int) -> dict:
    space = DomainSpace("bench", [Domain(f"d{i}", "source" if i < 2 else "target", ["wiki"]) for i in range(4)])
    counting = CountingTokenizer(tok)
    t0 = time.perf_counter()
    sources = {n: HFDatasetSource(datasets.Dataset.from_dict(
        {"text": [f"{n} text {j}. " + "a sentence of plain words. " * (j % 9 + 4) for j in range(n_texts // 4)]}),
        64, tokenizer=counting, seed=i) for i, n in enumerate(space.names)}
    ds = MixtureDataset(sources, space, batch_size=8, seed=0)
    for i, _ in enumerate(DataLoader(ds, batch_size=8, num_workers=workers)):
        if i + 1 == batches:
            break
    return {"workers": workers, "texts_tokenized": int(counting.texts), "seconds": round(time.perf_counter() - t0, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=192, help="texts in all (4 domains)")
    parser.add_argument("--batches", type=int, default=200, help="batches of 8 windows of 64 tokens to read")
    args = parser.parse_args()
    tok_dir = next((data_root() / "cache/tokenizer").iterdir())
    tok = PreTrainedTokenizerFast(tokenizer_file=str(tok_dir / "tokenizer.json"), eos_token="<|endoftext|>")
    rows = [measure(tok, args.texts, args.batches, w) for w in (0, 2)]
    for r in rows:
        print(f"workers {r['workers']}: {r['texts_tokenized']} texts tokenized of {args.texts}, {r['seconds']} s")
    out = REPO_ROOT / "runs/bench/sources.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"texts": args.texts, "batches": args.batches, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
