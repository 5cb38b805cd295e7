"""The one observation builder, shared by the environment and the deployment scheduler.

Version 1 (:class:`ObservationBuilder`, below) is what the environment, the collected datasets and the shipped
agents use. Version 2 (:class:`SettingObservationBuilder`, at the end) is for one policy across settings: scale-
free score features and the stated setting: env specs with ``observation: 2``, datasets rebuilt with
``observation=2``, the per-domain policy and the deploy scheduler (with the job's ``policy.stated``) read it.

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

import math

import numpy as np

from mixagent.domains import FIELDS, DomainSpace
from mixagent.env.evaluation import EvalResult

__all__ = ["ObservationBuilder", "OBSERVATION_VERSION", "CLIP", "observation_names", "SettingObservationBuilder",
           "OBSERVATION_V2", "observation_names_v2", "setting_features", "SETTING_FEATURES", "SCORE_SCALE",
           "observation_builder"]

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
        s0, s_prev, s_now = _field_scores(start, prev, now)
        return _clipped([_domain_blocks(self.space, weights, start, prev, now), s_now / s0 - 1.0,
                         (s_now - s_prev) / s0, [progress], [] if lr is None else [lr]])


def _domain_blocks(space: DomainSpace, weights: np.ndarray, start: EvalResult, prev: EvalResult,
                   now: EvalResult) -> np.ndarray:
    """``(3K,)`` the per-domain blocks both versions share: weights, loss over the start minus 1, loss change
    since the last step over the start."""
    b0, b_prev, b_now = (np.array([e.bpb[n] for n in space.names]) for e in (start, prev, now))
    return np.concatenate([np.asarray(weights, dtype=np.float64), b_now / b0 - 1.0, (b_now - b_prev) / b0])


def _field_scores(start: EvalResult, prev: EvalResult, now: EvalResult) -> tuple[np.ndarray, ...]:
    """``(2,)`` source and target benchmark scores at the start, the last step and now."""
    return tuple(np.array([e.scores[f] for f in FIELDS]) for e in (start, prev, now))


def _clipped(parts: list) -> np.ndarray:
    """The parts concatenated, non-finite entries replaced and everything clipped to ``[-CLIP, CLIP]``."""
    obs = np.concatenate([np.asarray(p, dtype=np.float64) for p in parts])
    return np.clip(np.nan_to_num(obs, nan=0.0, posinf=CLIP, neginf=-CLIP), -CLIP, CLIP).astype(np.float32)


# ---- version 2: one policy across settings (agent v2; ../shared/SETTINGS.md) --------------------------------
OBSERVATION_V2 = 2
SCORE_SCALE = 0.1  # a benchmark score (in [0, 1]) changing by this much reads 1 in version 2
REPETITION_CLIP = 10.0  # log2 of 1024 epochs: beyond it every budget is "hopelessly repeated"
SETTING_FEATURES = ("lam", "repetition_log2", "repetition_known", "wsd", "decay_fraction")


def observation_names_v2(domains: tuple[str, ...] | list[str]) -> list[str]:
    """The names of :class:`SettingObservationBuilder`'s layout, in order (``3K + 11``): version 1's with the
    LR, then :data:`SETTING_FEATURES`."""
    return observation_names(domains, observe_lr=True) + list(SETTING_FEATURES)


def setting_features(stated: dict[str, float]) -> np.ndarray:
    """``(5,)`` what a user states about a run, scale-free (:data:`SETTING_FEATURES`), from
    :meth:`mixagent.env.setting.Setting.stated` / :func:`mixagent.env.setting.stated_from_spec`:

    * ``lam``: the user's weight on the target field;
    * ``repetition_log2``: ``log2`` of the run's training tokens (``steps * segment_tokens``) over its unique
      target tokens: how many times target-only would repeat its data (0 when unknown; clipped to
      ``[-10, 10]``);
    * ``repetition_known``: 1 when the unique target tokens are stated (``target_tokens > 0``), else 0;
    * ``wsd``: 1 for a warmup-stable-decay schedule, 0 for cosine;
    * ``decay_fraction``: the share of the run in WSD's final decay (0 for cosine).

    The peak LR and the model's size are left out on purpose: they differ by orders of magnitude between a
    proxy and a deployment, and the LR enters as its value over the peak.

    Raises:
        ConfigError: a stated number is missing, non-finite, or lam is outside [0, 1].
    """
    from mixagent.errors import ConfigError

    need = ("lam", "steps", "segment_tokens", "target_tokens", "wsd", "decay_fraction")
    missing = [k for k in need if k not in stated]
    if missing:
        raise ConfigError("stated setting", [f"missing {missing}; give {list(need)} "
                                             f"(mixagent.env.setting.stated_from_spec(spec) for an env spec)"])
    v = {k: float(stated[k]) for k in need}
    bad = [k for k, x in v.items() if not np.isfinite(x)]
    if bad or not 0.0 <= v["lam"] <= 1.0 or v["steps"] < 1 or v["segment_tokens"] < 1 or v["target_tokens"] < 0:
        raise ConfigError("stated setting", [f"needs finite numbers, lam in [0, 1], steps and segment_tokens >= 1 "
                                             f"and target_tokens >= 0 (0 = unknown), got {v}"])
    known = v["target_tokens"] > 0
    repetition = math.log2(v["steps"] * v["segment_tokens"] / v["target_tokens"]) if known else 0.0
    wsd = float(v["wsd"] > 0.5)
    return np.array([v["lam"], float(np.clip(repetition, -REPETITION_CLIP, REPETITION_CLIP)), float(known), wsd,
                     v["decay_fraction"] * wsd])


class SettingObservationBuilder:
    """Observation version 2, for one policy across settings (float32, length ``3K + 11``, clipped to
    ``[-CLIP, CLIP]``):

    ====================  =====  ==========================================================
    slice                 size   meaning
    ====================  =====  ==========================================================
    ``[0, 3K)``           3K     the per-domain blocks of version 1 (weights, loss relative to the start,
                                 loss change since the last step over the start): bits per byte never start
                                 near zero, so the ratios are bounded
    ``3K, 3K+1``          2      source, target benchmark score change since the start, over
                                 :data:`SCORE_SCALE` (version 1 divided by the start score, which can be
                                 near zero: the shipped agent read +1.73 on a base starting at 0.053)
    ``3K+2, 3K+3``        2      source, target score change since the last step, over :data:`SCORE_SCALE`
    ``3K+4``              1      progress ``t/T``
    ``3K+5``              1      the coming segment's learning rate over the peak (always)
    ``3K+6 .. 3K+10``     5      the stated setting (:func:`setting_features`): lam, log2 repetition, whether
                                 it is known, WSD, decay share
    ====================  =====  ==========================================================

    What a user cannot state (the base's prior target exposure, its size) is not observed: a policy infers it
    from the evaluations.

    Args:
        space: the domain space (fixes K and the domain order).
        stated: the run's stated setting (:func:`setting_features`).
    """

    version = OBSERVATION_V2

    def __init__(self, space: DomainSpace, stated: dict[str, float]) -> None:
        self.space = space
        self.setting = setting_features(stated)
        self.dim = 3 * space.k + 6 + len(SETTING_FEATURES)

    def __call__(self, weights: np.ndarray, start: EvalResult, prev: EvalResult, now: EvalResult,
                 progress: float, lr: float) -> np.ndarray:
        """``(dim,)`` float32 for the coming segment (``lr``: its learning rate over the peak)."""
        s0, s_prev, s_now = _field_scores(start, prev, now)
        return _clipped([_domain_blocks(self.space, weights, start, prev, now), (s_now - s0) / SCORE_SCALE,
                         (s_now - s_prev) / SCORE_SCALE, [progress, lr], self.setting])


def observation_builder(space: DomainSpace, version: int = OBSERVATION_VERSION, observe_lr: bool = False,
                        stated: dict[str, float] | None = None) -> ObservationBuilder | SettingObservationBuilder:
    """The builder of observation ``version`` in ``space``: version 1 (``observe_lr``: with the LR) or version 2
    (``stated``: the run's stated setting, :func:`setting_features`), for the env, datasets and the scheduler.

    Raises:
        ConfigError: version 2 without a stated setting, or a bad one.
    """
    if version != OBSERVATION_V2:
        return ObservationBuilder(space, observe_lr)
    if stated is None:
        from mixagent.errors import ConfigError

        raise ConfigError("stated setting", ["the policy observes the run's stated setting (observation version 2): "
                                             "pass stated= (the deploy job's policy.stated: lam and target_tokens; "
                                             "the rest comes from the trainer section)"])
    return SettingObservationBuilder(space, stated)
