"""Llama-style proxy and target models built from config with ``transformers`` (no hub)."""

from __future__ import annotations

import dataclasses

import torch

from mixagent.errors import ConfigError, suggest

__all__ = ["ProxyModelConfig", "MODEL_SIZES", "build_model", "count_parameters"]


@dataclasses.dataclass(frozen=True)
class ProxyModelConfig:
    """Architecture of a Llama-style causal LM (tied input/output embeddings).

    Args:
        hidden: model width.
        layers: transformer blocks.
        heads: attention heads (``hidden`` must divide evenly).
        intermediate: MLP width.
        seq_len: context length used for training and evaluation.
        vocab_size: set from the tokenizer.
    """

    hidden: int = 64
    layers: int = 2
    heads: int = 4
    intermediate: int = 176
    seq_len: int = 128
    vocab_size: int = 4096

    def check(self) -> list[str]:
        problems = []
        if self.hidden % self.heads:
            problems.append(f"hidden ({self.hidden}) must be divisible by heads ({self.heads})")
        if min(self.hidden, self.layers, self.heads, self.intermediate, self.seq_len) < 1:
            problems.append("hidden, layers, heads, intermediate and seq_len must be >= 1")
        return problems


# ~0.5M, ~2M and ~8M parameters with a 4096-token vocabulary (embeddings included)
MODEL_SIZES: dict[str, ProxyModelConfig] = {
    "0.5m": ProxyModelConfig(hidden=96, layers=2, heads=4, intermediate=256),
    "2m": ProxyModelConfig(hidden=160, layers=4, heads=4, intermediate=432),
    "8m": ProxyModelConfig(hidden=256, layers=8, heads=8, intermediate=688),
}


def resolve_size(name: str) -> ProxyModelConfig:
    if name not in MODEL_SIZES:
        raise ConfigError("model", [f"unknown model size {name!r}{suggest(name, MODEL_SIZES)}; "
                                    f"known sizes: {', '.join(MODEL_SIZES)}"])
    return MODEL_SIZES[name]


def build_model(cfg: ProxyModelConfig, seed: int = 0) -> torch.nn.Module:
    """A freshly initialised ``LlamaForCausalLM`` in fp32 (SDPA attention, the faster one on this CPU)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    if cfg.check():
        raise ConfigError("ProxyModelConfig", cfg.check())
    hf = LlamaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden, intermediate_size=cfg.intermediate,
        num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads, num_key_value_heads=cfg.heads,
        max_position_embeddings=cfg.seq_len, tie_word_embeddings=True, rms_norm_eps=1e-5,
        bos_token_id=None, eos_token_id=None, pad_token_id=None,
    )
    hf._attn_implementation = "sdpa"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(hf)
    return model.float()


def count_parameters(model: torch.nn.Module) -> int:
    """Unique parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
