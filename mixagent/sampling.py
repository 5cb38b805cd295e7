"""The one weights -> training windows sampler, shared by the environment's proxy training
(:class:`MixtureSampler`) and deployment's ``MixtureDataset``, so a policy is deployed under the data
process it was trained under.

**The stream.** Every sample of a run has a global index ``i`` (``0, 1, 2, ...`` over the whole run: for a
deployment, batch ``b`` holds samples ``b * samples_per_batch ...``, every rank's). Its domain is
``searchsorted(cdf, u_i)`` where ``cdf`` is the cumulative mixture in force and ``u_i`` the ``i``-th
uniform of a PCG64 stream seeded with ``seed`` (after the window orders below are drawn from it). This is
exactly ``numpy.random.Generator.choice(K, p=weights)`` drawn sample by sample, but counter-addressable:
:meth:`MixtureStream.uniforms` jumps to any ``i`` (``PCG64.advance``), so ranks, DataLoader workers and
resumed runs compute the same picks without drawing the ones before.

**Windows.** Each domain's windows (non-overlapping slices of its token stream) are taken in one shuffled
order drawn from the same generator at the start, by a per-domain cursor that counts the domain's earlier
picks; the order restarts after a full pass, so text repeats only after every window was used once.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mixagent.errors import DataMissingError, WeightsError

__all__ = ["MixtureStream", "MixtureSampler", "cumulative", "pick_domains", "SUM_TOL"]


SUM_TOL = float(np.sqrt(np.finfo(np.float64).eps))  # what numpy's Generator.choice accepts as summing to 1


def cumulative(weights: np.ndarray | Sequence[float], k: int | None = None) -> np.ndarray:
    """The normalised cumulative mixture ``(K,)`` float64 that :func:`pick_domains` searches (as numpy's
    ``Generator.choice`` builds it, so picks agree with ``choice(K, p=weights)`` bit for bit).

    Args:
        weights: ``(K,)`` domain weights: finite, non-negative, summing to 1 within ``SUM_TOL``.
        k: the expected number of domains, when known.

    Raises:
        WeightsError: a wrong length, non-finite or negative entries, or a sum other than 1.
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or len(w) == 0 or (k is not None and len(w) != k):
        raise WeightsError(f"weights have shape {w.shape}, expected ({k if k is not None else 'K'},)")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise WeightsError(f"weights must be finite and >= 0, got {w.tolist()}")
    if abs(w.sum() - 1.0) > SUM_TOL:
        raise WeightsError(f"weights must sum to 1 (within {SUM_TOL:.1e}), got {float(w.sum())!r}; normalise them "
                           f"(DomainWeights.normalised)")
    cdf = np.cumsum(w)
    cdf /= cdf[-1]
    return cdf


def pick_domains(cdf: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Domain index ``(n,)`` int64 of each uniform in ``u`` ``(n,)`` under cumulative weights ``cdf``."""
    return np.searchsorted(cdf, u, side="right").astype(np.int64, copy=False)


class MixtureStream:
    """The seeded randomness of a mixture: per-domain window orders and counter-addressable uniforms.

    Args:
        n_windows: windows per domain, in the space's order (0 for a domain whose windows come in their
            own order, e.g. a streaming dataset; it gets no shuffled order).
        seed: seeds the window orders, then the per-sample uniforms.
    """

    def __init__(self, n_windows: Sequence[int], seed: int) -> None:
        rng = np.random.Generator(np.random.PCG64(seed))
        self.n_windows = np.asarray([int(n) for n in n_windows], dtype=np.int64)
        self.orders = [rng.permutation(int(n)) for n in self.n_windows]
        self._after_orders = rng.bit_generator.state  # where sample 0's uniform starts
        self._gen, self._next = rng, 0  # sequential fast path: the generator sits at sample self._next

    def uniforms(self, start: int, n: int) -> np.ndarray:
        """Uniforms ``[0, 1)`` of samples ``start .. start + n - 1``: ``(n,)`` float64."""
        if start != self._next:
            bits = np.random.PCG64()
            bits.state = self._after_orders
            bits.advance(start)  # one 64-bit output per double
            self._gen = np.random.Generator(bits)
        self._next = start + n
        return self._gen.random(n)

    def domains(self, start: int, n: int, cdf: np.ndarray) -> np.ndarray:
        """Domains ``(n,)`` of samples ``start .. start + n - 1`` under cumulative weights ``cdf``."""
        return pick_domains(cdf, self.uniforms(start, n))

    def window(self, domain: int, cursor: int) -> int:
        """Index of the window that ``domain``'s ``cursor``-th pick takes (its shuffled order, cyclic)."""
        return int(self.orders[domain][cursor % self.n_windows[domain]])


class MixtureSampler:
    """Draws training windows of ``length`` tokens from token arrays, sample after sample (the
    environment's proxy training and base-model pre-training): domain by :class:`MixtureStream`, then the
    next window of that domain's shuffled order.

    Args:
        streams: one token array per domain.
        length: tokens per window (sequence length + 1 for the shifted targets).
        seed: seeds the window orders and the domain draws.
        names: domain names for error messages.

    Raises:
        DataMissingError: a domain has fewer than ``length`` tokens.
    """

    def __init__(self, streams: list[np.ndarray], length: int, seed: int, names: Sequence[str] | None = None) -> None:
        self.streams = streams
        self.length = length
        n_windows = np.array([len(s) // length for s in streams])
        if np.any(n_windows == 0):
            empty = [names[i] if names else i for i in np.flatnonzero(n_windows == 0)]
            raise DataMissingError(f"domains {empty} have fewer than {length} training tokens; give them more "
                                   f"data (corpus max_bytes, fewer clusters) or drop them from the space")
        self.stream = MixtureStream(n_windows, seed)
        self.cursors = np.zeros(len(streams), dtype=np.int64)
        self.drawn = 0  # samples drawn so far (the next sample's global index)

    def sample(self, weights: np.ndarray, n: int) -> np.ndarray:
        """``(n, length)`` int64 windows drawn under ``weights`` ``(K,)`` (non-negative, sum 1).

        Raises:
            WeightsError: invalid weights (see :func:`cumulative`); nothing is drawn.
        """
        domains = self.stream.domains(self.drawn, n, cumulative(weights, len(self.streams)))
        self.drawn += n
        out = np.empty((n, self.length), dtype=np.int64)
        for row, d in enumerate(domains):
            w = self.stream.window(d, self.cursors[d])
            self.cursors[d] += 1
            out[row] = self.streams[d][w * self.length: (w + 1) * self.length]
        return out

    def state(self) -> tuple[int, np.ndarray]:
        """``(samples drawn, per-domain cursors)``: everything :meth:`restore` needs."""
        return self.drawn, self.cursors.copy()

    def restore(self, state: tuple[int, np.ndarray]) -> None:
        """Continue from a :meth:`state` of a sampler with the same streams and seed."""
        self.drawn, self.cursors = int(state[0]), np.asarray(state[1], dtype=np.int64).copy()
