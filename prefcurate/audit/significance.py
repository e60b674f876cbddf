"""Tests behind the gates: each gate's p-value against its null, Benjamini-Hochberg q-values across
the gates, and the minimum detectable effect (MDE) at the audit's n.

Standard errors are cluster-robust (`intervals.cluster_se`), as the intervals resample prompts. The MDE is the smallest departure from the null that a two-sided (or, for a
null at the threshold, one-sided) test at level alpha detects with 80% power:
(z[1 - alpha/2] + z[0.8]) times the standard error the estimate would have there.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

POWER = 0.8


def _z(p: float) -> float:
    return NormalDist().inv_cdf(p)


def normal_p(z: float, sided: int = 2) -> float:
    """P-value of a standard normal statistic: two-sided, or one-sided (upper tail)."""
    upper = 0.5 * math.erfc(z / math.sqrt(2))
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


def mde(se: float, alpha: float, sided: int = 2) -> float:
    """Smallest departure from the null detected with POWER at level ``alpha``, for a standard error ``se``."""
    return (_z(1 - alpha / sided) + _z(POWER)) * se
