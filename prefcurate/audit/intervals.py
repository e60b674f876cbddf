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


def cluster_rows(clusters: np.ndarray | None, n: int) -> tuple[Callable[[np.ndarray], np.ndarray], int]:
    """(a function from drawn cluster numbers to the rows of those clusters, the number of clusters);
    without ``clusters`` every row is a cluster of its own."""
    if clusters is None:
        return (lambda picks: picks), n
    _, inverse, sizes = np.unique(np.asarray(clusters), return_inverse=True, return_counts=True)
    order = np.argsort(inverse, kind="stable")  # rows grouped by cluster
    if sizes.max() == 1:
        return (lambda picks: order[picks]), len(sizes)
    starts = np.cumsum(sizes) - sizes

    def rows(picks: np.ndarray) -> np.ndarray:
        lens = sizes[picks]  # each drawn cluster's rows, end to end: a range per cluster, vectorised
        return order[np.repeat(starts[picks] - np.cumsum(lens) + lens, lens) + np.arange(lens.sum())]
    return rows, len(sizes)


def bootstrap_ci(values: np.ndarray, stat: Callable[[np.ndarray], float], n_boot: int = BOOTSTRAP,
                 clusters: np.ndarray | None = None) -> tuple[list[float] | None, int]:
    """(percentile 95% interval of ``stat`` over resamples of the clusters of ``values``, the number of
    clusters); one cluster label per row, every row its own cluster when None.

    Above SUBSAMPLE clusters, each resample draws only SUBSAMPLE of them (an m-out-of-n bootstrap) and
    the spread of the resampled statistics around the full sample's is narrowed by sqrt(SUBSAMPLE / k):
    the same interval for any root-n statistic, at a cost that does not grow with the store.
    """
    if len(values) == 0:
        return None, 0
    rng = np.random.default_rng(SEED)
    rows, k = cluster_rows(clusters, len(values))
    m = min(k, SUBSAMPLE)
    stats = np.array([stat(values[rows(rng.integers(0, k, size=m))]) for _ in range(n_boot)], dtype=float)
    stats = stats[~np.isnan(stats)]
    if len(stats) == 0:
        return None, k
    lo, hi = np.percentile(stats, 2.5), np.percentile(stats, 97.5)
    if m < k:
        centre, scale = stat(values), math.sqrt(m / k)
        lo, hi = centre + (lo - centre) * scale, centre + (hi - centre) * scale
    return [float(lo), float(hi)], k


def metric(name: str, values: np.ndarray, stat: Callable[[np.ndarray], float], n_boot: int = BOOTSTRAP,
           clusters: np.ndarray | None = None) -> dict:
    """{name: the statistic over all of ``values``, name_ci: its 95% interval resampling ``clusters``
    (prompts), name_n: how many rows, name_clusters: how many clusters}."""
    if len(values) == 0:
        return {name: None, f"{name}_ci": None, f"{name}_n": 0, f"{name}_clusters": 0}
    value = stat(values)
    ci, k = bootstrap_ci(values, stat, n_boot, clusters)
    return {name: None if math.isnan(value) else float(value), f"{name}_ci": ci, f"{name}_n": int(len(values)),
            f"{name}_clusters": int(k)}


def mean(v: np.ndarray) -> float:
    return float(np.mean(v)) if len(v) else math.nan
