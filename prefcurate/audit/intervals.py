"""Bootstrap intervals: every audit metric comes with its 95% interval, its n and the number of
clusters the bootstrap resampled, and one with nothing to measure is None, never a made-up number.

The unit resampled is the prompt: all rows of one prompt (its pairs, probes, both orders and every
repeat) are drawn together, since they are correlated, and an interval that resampled them one by
one would be too narrow.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

BOOTSTRAP = 1000
SUBSAMPLE = 10_000
SEED = 0
UNIT = "prompt"  # what a cluster is: the audit's JSON says so beside its intervals
CHUNK = 100  # resamples drawn at once when only cluster sums are resampled


def mean(v: np.ndarray) -> float:
    return float(np.mean(v)) if len(v) else math.nan


def ratio(rows: np.ndarray) -> float:
    """Sum of column 0 over sum of column 1 (a rate whose units weigh differently)."""
    total = rows[:, 1].sum()
    return float(rows[:, 0].sum() / total) if total else math.nan


def clusters_of(clusters: np.ndarray | None, n: int) -> tuple[np.ndarray, int]:
    """(each row's cluster number, 0..k-1, the number of clusters k); every row its own without ``clusters``."""
    if clusters is None:
        return np.arange(n), n
    _, inverse = np.unique(np.asarray(clusters), return_inverse=True)
    inverse = inverse.reshape(-1)
    return inverse, int(inverse.max()) + 1 if n else 0


def cluster_totals(values: np.ndarray, stat: Callable[[np.ndarray], float], inverse: np.ndarray,
                   k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per cluster, the numerator's and the denominator's sums of a ``mean`` or ``ratio`` statistic."""
    num, den = (values, np.ones(len(values))) if stat is mean else (values[:, 0], values[:, 1])
    return (np.bincount(inverse, weights=num.astype(float), minlength=k),
            np.bincount(inverse, weights=den.astype(float), minlength=k))


def _resampled_stats(values: np.ndarray, stat: Callable[[np.ndarray], float], n_boot: int, m: int,
                     inverse: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """``stat`` over n_boot draws of m clusters with replacement."""
    if stat is mean or stat is ratio:
        # A mean or a ratio of sums needs only each cluster's sums: the same statistic as over the drawn
        # rows, at a cost that does not grow with the rows per cluster.
        num, den = cluster_totals(values, stat, inverse, k)
        out = []
        for start in range(0, n_boot, CHUNK):
            picks = rng.integers(0, k, size=(min(CHUNK, n_boot - start), m))
            top, bottom = num[picks].sum(axis=1), den[picks].sum(axis=1)
            out.append(np.divide(top, bottom, out=np.full(len(top), np.nan), where=bottom != 0))
        return np.concatenate(out)
    order = np.argsort(inverse, kind="stable")  # rows grouped by cluster
    sizes = np.bincount(inverse, minlength=k)
    starts = np.cumsum(sizes) - sizes

    def rows(picks: np.ndarray) -> np.ndarray:
        lens = sizes[picks]  # each drawn cluster's rows, end to end: a range per cluster, vectorised
        return order[np.repeat(starts[picks] - np.cumsum(lens) + lens, lens) + np.arange(lens.sum())]
    return np.array([stat(values[rows(rng.integers(0, k, size=m))]) for _ in range(n_boot)], dtype=float)


def cluster_se(values: np.ndarray, stat, clusters: np.ndarray | None) -> float | None:
    """Cluster-robust (sandwich) standard error of a ``mean`` or ``ratio`` statistic: the spread of the
    clusters' sums around the estimate, so that correlated rows of one prompt do not count as independent
    evidence. None for other statistics or with fewer than two clusters."""
    return _se(values, stat, *clusters_of(clusters, len(values)))


def _se(values: np.ndarray, stat, inverse: np.ndarray, k: int) -> float | None:
    if stat is not mean and stat is not ratio or k < 2:
        return None
    num, den = cluster_totals(values, stat, inverse, k)
    total = den.sum()
    if not total:
        return None
    estimate = num.sum() / total
    return float(math.sqrt(k / (k - 1) * np.sum((num - estimate * den) ** 2)) / total)


def _interval(values: np.ndarray, stat: Callable[[np.ndarray], float], n_boot: int, inverse: np.ndarray,
              k: int) -> tuple[list[float] | None, float | None]:
    """(percentile 95% interval, standard deviation) of ``stat`` over resamples of the k clusters of
    ``values`` (``inverse``: each row's cluster number).

    Above SUBSAMPLE clusters, each resample draws only SUBSAMPLE of them (an m-out-of-n bootstrap) and
    the spread of the resampled statistics around the full sample's is narrowed by sqrt(SUBSAMPLE / k):
    the same interval for any root-n statistic, at a cost that does not grow with the store.
    """
    m = min(k, SUBSAMPLE)
    stats = _resampled_stats(values, stat, n_boot, m, inverse, k, np.random.default_rng(SEED))
    stats = stats[~np.isnan(stats)]
    if len(stats) == 0:
        return None, None
    lo, hi, scale = np.percentile(stats, 2.5), np.percentile(stats, 97.5), math.sqrt(m / k)
    if m < k:
        centre = stat(values)
        lo, hi = centre + (lo - centre) * scale, centre + (hi - centre) * scale
    return [float(lo), float(hi)], float(np.std(stats, ddof=1) * scale) if len(stats) > 1 else None


def metric(name: str, values: np.ndarray, stat: Callable[[np.ndarray], float], n_boot: int = BOOTSTRAP,
           clusters: np.ndarray | None = None) -> dict:
    """{name: the statistic over all of ``values``, name_ci: its 95% interval resampling ``clusters``
    (prompts), name_n: how many rows, name_clusters: how many clusters, name_se: its standard error
    (cluster-robust for means and ratios, the bootstrap's spread for other statistics such as a kappa)}."""
    if len(values) == 0:
        return {name: None, f"{name}_ci": None, f"{name}_n": 0, f"{name}_clusters": 0, f"{name}_se": None}
    value = stat(values)
    inverse, k = clusters_of(clusters, len(values))  # grouped once, for the interval and the standard error
    ci, spread = _interval(values, stat, n_boot, inverse, k)
    se = _se(values, stat, inverse, k) if stat is mean or stat is ratio else spread
    return {name: None if math.isnan(value) else float(value), f"{name}_ci": ci,
            f"{name}_n": int(len(values)), f"{name}_clusters": int(k), f"{name}_se": se}
