"""The few torch.distributed operations deployment needs; each is a no-op in a single process."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["dist_info", "all_reduce_sum", "broadcast_array"]


def _active() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def dist_info() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` without an initialised process group."""
    return (torch.distributed.get_rank(), torch.distributed.get_world_size()) if _active() else (0, 1)


def _device() -> torch.device:
    # NCCL reduces only CUDA tensors; gloo only CPU ones
    if torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(values: np.ndarray) -> np.ndarray:
    """Sum of ``values`` over ranks (float64)."""
    if not _active():
        return np.asarray(values, dtype=np.float64)
    t = torch.tensor(np.array(values, dtype=np.float64)).to(_device())
    torch.distributed.all_reduce(t)
    return t.cpu().numpy()


def broadcast_array(values: np.ndarray, src: int = 0) -> np.ndarray:
    """Rank ``src``'s ``values`` on every rank, bit for bit (float64)."""
    if not _active():
        return np.asarray(values, dtype=np.float64)
    t = torch.tensor(np.array(values, dtype=np.float64)).to(_device())
    torch.distributed.broadcast(t, src)
    return t.cpu().numpy()
