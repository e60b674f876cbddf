"""Bootstrap intervals: every audit metric comes with its 95% interval and its n, and one with nothing
to measure is None, never a made-up number."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

BOOTSTRAP = 1000
SUBSAMPLE = 10_000
SEED = 0


def bootstrap_ci(values: np.ndarray, stat: Callable[[np.ndarray], float], n_boot: int = BOOTSTRAP) -> list[float] | None:
    """Percentile 95% interval of ``stat`` over resamples of the rows of ``values``.

    Above SUBSAMPLE rows, each resample draws only SUBSAMPLE rows (an m-out-of-n bootstrap) and the
    spread of the resampled statistics around the full sample's is narrowed by sqrt(SUBSAMPLE / n):
    the same interval for any root-n statistic, at a cost that does not grow with the store.
    """
    if len(values) == 0:
        return None
    rng = np.random.default_rng(SEED)
    n = len(values)
    m = min(n, SUBSAMPLE)
    stats = np.array([stat(values[rng.integers(0, n, size=m)]) for _ in range(n_boot)], dtype=float)
    stats = stats[~np.isnan(stats)]
    if len(stats) == 0:
        return None
    lo, hi = np.percentile(stats, 2.5), np.percentile(stats, 97.5)
    if m < n:
        centre, scale = stat(values), math.sqrt(m / n)
        lo, hi = centre + (lo - centre) * scale, centre + (hi - centre) * scale
    return [float(lo), float(hi)]


def metric(name: str, values: np.ndarray, stat: Callable[[np.ndarray], float], n_boot: int = BOOTSTRAP) -> dict:
    """{name: the statistic over all of ``values``, name_ci: its 95% interval, name_n: how many}."""
    if len(values) == 0:
        return {name: None, f"{name}_ci": None, f"{name}_n": 0}
    value = stat(values)
    return {name: None if math.isnan(value) else float(value), f"{name}_ci": bootstrap_ci(values, stat, n_boot),
            f"{name}_n": int(len(values))}


def mean(v: np.ndarray) -> float:
    return float(np.mean(v)) if len(v) else math.nan
