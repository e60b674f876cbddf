"""Tests behind the gates: each gate's p-value against its null, Benjamini-Hochberg q-values across
the gates, and the minimum detectable effect (MDE) at the audit's n.

Standard errors are cluster-robust (`intervals.cluster_se`), as the intervals resample prompts, so a
statistic over k prompts is referred to Student's t with k - 1 degrees of freedom (a cluster-robust
standard error from a few prompts is itself uncertain); from NORMAL_DF prompts on, to the normal. The
MDE is the smallest departure from the null that a two-sided (or, for a null at the threshold,
one-sided) test at level alpha detects with 80% power: (t[1 - alpha/2] + t[0.8]) times the standard
error the estimate would have there.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

POWER = 0.8
NORMAL_DF = 100  # from this many degrees of freedom on, t is read as normal (they differ by < 1% at 0.975)


def _ibeta(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b), by its continued fraction (Lentz's method)."""
    if x <= 0 or x >= 1:
        return 0.0 if x <= 0 else 1.0
    if x > (a + 1) / (a + b + 2):
        return 1.0 - _ibeta(b, a, 1 - x)
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)) / a
    tiny, c, d = 1e-300, 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1 / (d if abs(d) > tiny else tiny)
    f = d
    for m in range(1, 300):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1 + numerator * d
            d = 1 / (d if abs(d) > tiny else tiny)
            c = 1 + numerator / c
            c = c if abs(c) > tiny else tiny
            f *= c * d
        if abs(c * d - 1) < 1e-12:
            break
    return front * f


def upper_tail(t: float, df: int | None = None) -> float:
    """P(T > t) for Student's t with ``df`` degrees of freedom (the normal when None or >= NORMAL_DF)."""
    if df is None or df >= NORMAL_DF:
        return 0.5 * math.erfc(t / math.sqrt(2))
    tail = 0.5 * _ibeta(df / 2, 0.5, df / (df + t * t))
    return tail if t >= 0 else 1 - tail


def quantile(p: float, df: int | None = None) -> float:
    """The t (or normal) value below which a share ``p`` lies."""
    if df is None or df >= NORMAL_DF:
        return NormalDist().inv_cdf(p)
    lo, hi = -1e3, 1e3
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if 1 - upper_tail(mid, df) < p else (lo, mid)
    return (lo + hi) / 2


def statistic_p(t: float, df: int | None = None, sided: int = 2) -> float:
    """P-value of a t (or, without ``df``, normal) statistic: two-sided, or one-sided (upper tail)."""
    upper = upper_tail(t, df)
    return min(1.0, 2 * min(upper, 1 - upper)) if sided == 2 else upper


def binomial_p(k: int, n: int, p: float = 0.5) -> float:
    """Exact two-sided binomial test of k successes in n (the sum of the outcomes no likelier than k's):
    with k the discordant pairs one way, McNemar's exact test."""
    if n == 0:
        return 1.0
    ks = np.arange(n + 1)
    logs = (math.lgamma(n + 1) - np.array([math.lgamma(i + 1) + math.lgamma(n - i + 1) for i in ks])
            + ks * math.log(p) + (n - ks) * math.log1p(-p))
    return float(min(1.0, np.exp(logs[logs <= logs[k] + 1e-7]).sum()))


def benjamini_hochberg(pvalues: dict[str, float | None]) -> dict[str, float | None]:
    """q-values: the smallest false-discovery rate at which each test would be rejected, across all the
    tests that have a p-value (None stays None)."""
    named = sorted(((p, name) for name, p in pvalues.items() if p is not None))
    m, out, running = len(named), {name: None for name in pvalues}, 1.0
    for rank in range(m, 0, -1):
        p, name = named[rank - 1]
        running = min(running, p * m / rank)
        out[name] = running
    return out


def mde(se: float, alpha: float, sided: int = 2, df: int | None = None) -> float:
    """Smallest departure from the null detected with POWER at level ``alpha``, for a standard error ``se``."""
    return (quantile(1 - alpha / sided, df) + quantile(POWER, df)) * se
