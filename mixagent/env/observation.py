"""The one observation builder, shared by the environment and the deployment scheduler.

Layout (float32, length ``3K + 5``; every entry clipped to ``[-CLIP, CLIP]``), scale-free so a policy
trained on a proxy can drive a bigger model:

====================  =====  ==========================================================
slice                 size   meaning
====================  =====  ==========================================================
``[0, K)``            K      current domain weights
``[K, 2K)``           K      per-domain bits per byte relative to the start: ``b_t/b_0 - 1``
``[2K, 3K)``          K      per-domain change since the last step: ``(b_t - b_{t-1})/b_0``
``3K, 3K+1``          2      source, target benchmark score relative to the start
``3K+2, 3K+3``        2      source, target score change since the last step (relative to start)
``3K+4``              1      progress ``t/T``
``3K+5`` (optional)   1      learning rate of the coming segment over the peak (``observe_lr`` specs)
====================  =====  ==========================================================
"""

from __future__ import annotations

import numpy as np

from mixagent.domains import FIELDS, DomainSpace
from mixagent.env.evaluation import EvalResult

__all__ = ["ObservationBuilder", "OBSERVATION_VERSION", "CLIP", "observation_names"]

OBSERVATION_VERSION = 1
CLIP = 10.0


def observation_names(domains: tuple[str, ...] | list[str], observe_lr: bool = False) -> list[str]:
    """The name of every entry of the layout above, in order (``3K + 5`` names, ``3K + 6`` with ``observe_lr``):
    ``weight[d]``, ``loss_rel[d]``, ``loss_change[d]`` per domain ``d``, then ``source_score``, ``target_score``,
    ``source_change``, ``target_change``, ``progress`` (and ``lr``)."""
    blocks = [f"{what}[{d}]" for what in ("weight", "loss_rel", "loss_change") for d in domains]
    return blocks + ["source_score", "target_score", "source_change", "target_change", "progress"] + \
        (["lr"] if observe_lr else [])


class ObservationBuilder:
    """Builds observations for a domain space.

    Args:
        space: the domain space (fixes K and the domain order).
        observe_lr: append the learning-rate entry (dimension ``3K + 6``).
    """

    version = OBSERVATION_VERSION

    def __init__(self, space: DomainSpace, observe_lr: bool = False) -> None:
        self.space = space
        self.observe_lr = observe_lr
        self.dim = 3 * space.k + 5 + int(observe_lr)

    def __call__(self, weights: np.ndarray, start: EvalResult, prev: EvalResult, now: EvalResult,
                 progress: float, lr: float | None = None) -> np.ndarray:
        """``(dim,)`` float32; ``lr`` (the coming segment's learning rate over the peak) is required exactly
        when ``observe_lr`` is set."""
        if (lr is None) == self.observe_lr:
            raise ValueError(f"lr must be given {'with' if self.observe_lr else 'only with'} observe_lr")
        names = self.space.names
        b0 = np.array([start.bpb[n] for n in names])
        b_prev = np.array([prev.bpb[n] for n in names])
        b_now = np.array([now.bpb[n] for n in names])
        s0 = np.array([start.scores[f] for f in FIELDS])
        s_prev = np.array([prev.scores[f] for f in FIELDS])
        s_now = np.array([now.scores[f] for f in FIELDS])
        obs = np.concatenate([
            np.asarray(weights, dtype=np.float64),
            b_now / b0 - 1.0,
            (b_now - b_prev) / b0,
            s_now / s0 - 1.0,
            (s_now - s_prev) / s0,
            [progress],
            [] if lr is None else [lr],
        ])
        return np.clip(np.nan_to_num(obs, nan=0.0, posinf=CLIP, neginf=-CLIP), -CLIP, CLIP).astype(np.float32)
