import json
import shutil

import pytest

import mixagent.env.base_model as bm
from mixagent.config import load_config
from mixagent.errors import CorruptArtifactError
from mixagent.paths import CONFIGS_DIR


@pytest.fixture(scope="module")
def tiny_cfg():
    return load_config(bm.BaseModelConfig, CONFIGS_DIR / "base_model/tiny.yaml")


def test_base_model_is_cached_with_meta(tiny_cfg):
    base = bm.get_base_model(tiny_cfg)
    meta = json.loads((base.path / "meta.json").read_text())
    assert meta["sha256"] == bm._sha256(base.path / "model.safetensors")
    assert meta["parameters"] > 400_000 and meta["tokens"] > 0 and meta["final_loss"] < 8.0
    again = bm.get_base_model(tiny_cfg)
    assert again.path == base.path and again.meta == base.meta


def test_corrupt_checkpoint_is_refused_or_rebuilt(tiny_cfg, tmp_path, monkeypatch):
    src = bm.get_base_model(tiny_cfg).path
    copy = tmp_path / "base"
    shutil.copytree(src, copy)
    data = bytearray((copy / "model.safetensors").read_bytes())
    data[-10] ^= 0xFF
    (copy / "model.safetensors").write_bytes(bytes(data))
    monkeypatch.setattr(bm, "base_dir", lambda cfg, root=None: copy)
    with pytest.raises(CorruptArtifactError, match="make base-model"):
        bm.get_base_model(tiny_cfg)
    rebuilt = bm.get_base_model(tiny_cfg, rebuild_corrupt=True)
    assert bm._sha256(copy / "model.safetensors") == rebuilt.meta["sha256"]
    # same config and seed: the rebuilt checkpoint equals the cached one bit for bit
    assert (copy / "model.safetensors").read_bytes() == (src / "model.safetensors").read_bytes()


def test_a_committed_checkpoint_is_adopted_instead_of_pretraining(tiny_cfg, tmp_path, monkeypatch):
    committed = tmp_path / "checkpoints"
    out = bm.commit_base_model(tiny_cfg, committed=committed)
    src = bm.get_base_model(tiny_cfg).path
    assert (out / "model.safetensors").read_bytes() == (src / "model.safetensors").read_bytes()
    assert json.loads((out / "meta.json").read_text())["tokenizer_file_hash"]
    cache = tmp_path / "cache" / src.name
    monkeypatch.setattr(bm, "base_dir", lambda cfg, root=None: cache)
    monkeypatch.setattr(bm, "_pretrain", lambda *a: pytest.fail("pre-trained although a committed copy exists"))
    adopted = bm.get_base_model(tiny_cfg, committed=committed)
    assert adopted.path == cache and adopted.meta["sha256"] == bm._sha256(src / "model.safetensors")
    assert adopted.meta["adopted_from"] == str(committed / cache.name)
    shutil.rmtree(cache)
    data = bytearray((out / "model.safetensors").read_bytes())
    data[-10] ^= 0xFF
    (out / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CorruptArtifactError, match="committed base model .* does not match the sha256"):
        bm.get_base_model(tiny_cfg, committed=committed)
