"""RegMix (Liu et al., *RegMix: Data Mixture as Regression for Language Model Pre-training*, arXiv
2407.01492; sail-sg/regmix): static mixtures drawn around the natural shares, one proxy run each, a
LightGBM regressor from mixture to the final score, then the mixture the regressor likes best.

Steps (the proxy runs themselves are the comparison job's, ``mixagent.study.compare``):

1. :func:`sample_mixtures`: ``n`` mixtures ``~ Dirichlet(scale * K * natural)``, ``scale`` log-uniform in
   [0.1, 5] per draw (the paper's concentration range);
2. :func:`fit_regmix`: LightGBM regression (learning rate 0.01, up to 1000 rounds, early stopping on an
   inner 20% split), with its held-out Spearman rank correlation from k-fold cross-validation (the paper
   reports 0.975-0.997 at its scale, on 512 runs);
3. :meth:`RegMixFit.best_mixture`: simulate many mixtures from the same prior and average the top
   predicted ones; :class:`~mixagent.policies.FixedPolicy` drives it.

Adaptation: with tens of runs instead of 512, the trees may split on as few as ``max(2, n // 10)`` runs
(LightGBM's default of 20 would leave no split to make).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from mixagent.errors import ConfigError

__all__ = ["sample_mixtures", "fit_regmix", "RegMixFit", "min_runs"]

SCALE_RANGE = (0.1, 5.0)


def min_runs(k: int) -> int:
    """Proxy runs RegMix needs in a ``k``-domain space to fit and cross-validate: ``max(10, 2k)``."""
    return max(10, 2 * k)


def sample_mixtures(natural: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``(n, K)`` mixtures ``~ Dirichlet(scale * K * natural)``, ``scale`` log-uniform in [0.1, 5]."""
    natural = np.asarray(natural, dtype=np.float64)
    rng = np.random.default_rng(seed)
    lo, hi = (math.log(x) for x in SCALE_RANGE)
    out = np.empty((n, natural.size))
    for i in range(n):
        alpha = math.exp(rng.uniform(lo, hi)) * natural.size * np.maximum(natural, 1e-6)
        out[i] = rng.dirichlet(alpha)
    return out


def _regressor(n: int, seed: int):
    import lightgbm

    return lightgbm.LGBMRegressor(objective="regression", learning_rate=0.01, n_estimators=1000, num_leaves=8,
                                  min_child_samples=max(2, n // 10), random_state=seed, deterministic=True,
                                  force_row_wise=True, n_jobs=1, verbose=-1)


def _fit_one(x: np.ndarray, y: np.ndarray, seed: int):
    import lightgbm

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    n_val = max(2, len(x) // 5)
    val, train = order[:n_val], order[n_val:]
    model = _regressor(len(train), seed)
    model.fit(x[train], y[train], eval_X=(x[val],), eval_y=(y[val],),
              callbacks=[lightgbm.early_stopping(50, verbose=False)])
    return model


@dataclasses.dataclass
class RegMixFit:
    """A fitted RegMix regressor.

    Attributes:
        model: the LightGBM regressor fitted on the runs (20% of them held out for early stopping).
        spearman: held-out Spearman rank correlation of k-fold predictions with the measured scores.
        n_runs: proxy runs it was fitted on.
        natural: ``(K,)`` the prior's mean.
    """

    model: object
    spearman: float
    n_runs: int
    natural: np.ndarray

    def predict(self, mixtures: np.ndarray) -> np.ndarray:
        """``(n,)`` predicted score of ``(n, K)`` mixtures."""
        return np.asarray(self.model.predict(np.asarray(mixtures, dtype=np.float64)))

    def best_mixture(self, seed: int, n_sim: int = 100_000, top: int = 100) -> np.ndarray:
        """``(K,)`` the mean of the ``top`` best predicted of ``n_sim`` mixtures from the sampling prior."""
        sims = sample_mixtures(self.natural, n_sim, seed)
        best = np.argsort(-self.predict(sims), kind="stable")[:top]
        w = sims[best].mean(axis=0)
        return w / w.sum()


def fit_regmix(mixtures: np.ndarray, scores: np.ndarray, natural: np.ndarray, seed: int = 0,
               folds: int = 5) -> RegMixFit:
    """Fit RegMix's regressor on proxy runs: ``mixtures`` ``(n, K)``, final ``scores`` ``(n,)``.

    Raises:
        ConfigError: fewer than :func:`min_runs` runs, shapes that disagree, or non-finite scores.
    """
    from scipy.stats import spearmanr

    x, y = np.asarray(mixtures, dtype=np.float64), np.asarray(scores, dtype=np.float64)
    need = min_runs(x.shape[1] if x.ndim == 2 else 0)
    problems = []
    if x.ndim != 2 or y.shape != (x.shape[0],):
        problems.append(f"mixtures must be (n, K) and scores (n,), got {x.shape} and {y.shape}")
    elif x.shape[0] < need:
        problems.append(f"RegMix needs at least {need} proxy runs for a {x.shape[1]}-domain space (to fit and "
                        f"cross-validate), got {x.shape[0]}; raise regmix_runs")
    if not np.isfinite(y).all():
        problems.append("scores must be finite (a diverged proxy run?)")
    if problems:
        raise ConfigError("regmix", problems)
    rng = np.random.default_rng(seed)
    fold = rng.permutation(len(x)) % folds
    predicted = np.empty(len(x))
    for f in range(folds):
        held = fold == f
        predicted[held] = _fit_one(x[~held], y[~held], seed + 1 + f).predict(x[held])
    rho = float(spearmanr(predicted, y).statistic)
    return RegMixFit(_fit_one(x, y, seed), rho if math.isfinite(rho) else 0.0, len(x), np.asarray(natural, float))
