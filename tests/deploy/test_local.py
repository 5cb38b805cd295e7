"""Runs on mixagent's own corpora with a model that is not a mixagent base (``data.corpora`` with
``model.kind=smollm2_gguf``; the fixture's tiny Llama and its tokenizer stand in for SmolLM2): "natural" is the
data's token shares under the model's tokenizer, for the policy and the starting mixture alike, never uniform."""

from __future__ import annotations

import re

import numpy as np

from mixagent.config import load_config
from mixagent.data.build import read_split
from mixagent.data.sources import load_space
from mixagent.deploy.job import run_deploy
from mixagent.deploy.job_config import DeployConfig
from mixagent.paths import CONFIGS_DIR

FIX = CONFIGS_DIR.parent / "tests/fixtures/deploy"
MAX_DOCS = 50


def token_shares(tokenizer, space) -> np.ndarray:
    """Each domain's training tokens under ``tokenizer`` (documents and one separator each), counted here."""
    counts = []
    for d in space.domains:
        keep = re.compile(d.match).search if d.match is not None else None
        texts = [p["text"] for c in d.corpora for p in read_split(c, "train") if keep is None or keep(p["id"])]
        ids = tokenizer(texts[:MAX_DOCS], add_special_tokens=False)["input_ids"]
        counts.append(sum(len(x) + 1 for x in ids))
    return np.asarray(counts, dtype=np.float64) / sum(counts)


def test_natural_is_the_token_shares_of_the_data_for_a_model_that_is_not_a_mixagent_base(tmp_path, monkeypatch):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    import mixagent.env.gguf as gguf

    tok = AutoTokenizer.from_pretrained(str(FIX / "tokenizer"))

    def tiny_model(device="cpu"):
        import torch

        torch.manual_seed(0)
        return AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(FIX / "tiny-llama")), tok

    monkeypatch.setattr(gguf, "load_gguf_model", tiny_model)
    space = load_space(CONFIGS_DIR / "spaces/tiny-sub.yaml")
    want = token_shares(tok, space)
    assert np.abs(want - 1 / space.k).max() > 0.1  # far from uniform, so uniform cannot pass for it
    # max_change 0.01: the first decision stays within 0.01 of the starting mixture, so it equals the shares only
    # when both the natural policy and the natural start are the shares
    cfg = load_config(DeployConfig, CONFIGS_DIR / "deploy/cpt.yaml", [
        "model.kind=smollm2_gguf", "eval.kind=held_out", "data.corpora=configs/spaces/tiny-sub.yaml",
        f"data.max_docs={MAX_DOCS}", "data.seq_len=32", "data.eval_windows=2", "trainer.max_steps=2",
        "trainer.per_device_train_batch_size=2", "policy.every=1", "policy.spec=natural", "policy.initial=natural",
        "policy.max_change=0.01", f"trainer.output_dir={tmp_path / 'run'}"])
    report = run_deploy(cfg, progress=False)
    np.testing.assert_allclose(report["history"][0]["weights"], want, rtol=1e-9)
    np.testing.assert_allclose(report["schedule"][0][1], want, rtol=1e-9)  # the dataset starts at them too
