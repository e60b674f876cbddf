"""Judge-bias metrics over preference pairs: length, openers and position.

Every metric comes with a bootstrap 95% interval and its n; one that cannot be computed (no
pairs of the kind it needs) is None with its n, never a made-up number. The same functions
measure the store's pairs (`prefcurate audit`) and any preference dataset (`audit-dataset`).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from prefcurate.features import DEFAULT_PHRASES, Phrases, opener_of

BOOTSTRAP = 1000
BOOTSTRAP_WORK = 20_000_000
SEED = 0


@dataclass(frozen=True)
class Pair:
    group: str  # what makes two pairs "the same prompt", e.g. the prompt id or text
    chosen: str
    rejected: str


def bootstrap_ci(values: np.ndarray, stat: Callable[[np.ndarray], float], n_boot: int = BOOTSTRAP) -> list[float] | None:
    """Percentile 95% interval of ``stat`` over resamples of the rows of ``values``.

    Large samples get fewer resamples (at least 200, about BOOTSTRAP_WORK rows in all): their
    interval is narrow, and a thousand resamples of a quarter of a million rows would take seconds.
    """
    if len(values) == 0:
        return None
    n_boot = min(n_boot, max(200, BOOTSTRAP_WORK // len(values)))
    rng = np.random.default_rng(SEED)
    stats = np.array([stat(values[rng.integers(0, len(values), size=len(values))]) for _ in range(n_boot)], dtype=float)
    stats = stats[~np.isnan(stats)]
    if len(stats) == 0:
        return None
    return [float(np.percentile(stats, 2.5)), float(np.percentile(stats, 97.5))]


def metric(name: str, values: np.ndarray, stat: Callable[[np.ndarray], float], n_boot: int = BOOTSTRAP) -> dict:
    if len(values) == 0:
        return {name: None, f"{name}_ci": None, f"{name}_n": 0}
    value = stat(values)
    return {name: None if math.isnan(value) else float(value), f"{name}_ci": bootstrap_ci(values, stat, n_boot),
            f"{name}_n": int(len(values))}


def mean(v: np.ndarray) -> float:
    return float(np.mean(v)) if len(v) else math.nan


def _orientation(p: Pair) -> bool:
    """A fixed coin per pair: whether the chosen response plays side A in the length model."""
    return hashlib.sha256(f"{p.group}\x00{p.chosen}\x00{p.rejected}".encode()).digest()[0] % 2 == 0


def logistic_coef(xy: np.ndarray, iterations: int = 25) -> float:
    """Slope of y ~ intercept + slope * x by Newton's method (x = column 0, y = column 1)."""
    x, y = xy[:, 0], xy[:, 1]
    if len(np.unique(y)) < 2 or np.allclose(x, x[0]):
        return math.nan
    X = np.column_stack([np.ones_like(x), x])
    beta = np.zeros(2)
    for _ in range(iterations):
        p = 1 / (1 + np.exp(-np.clip(X @ beta, -30, 30)))  # separable resamples push beta far out
        w = p * (1 - p) + 1e-9
        step = np.linalg.solve(X.T @ (X * w[:, None]) + 1e-9 * np.eye(2), X.T @ (y - p))
        beta += step
        if np.max(np.abs(step)) < 1e-8:
            break
    return float(beta[1])


def length_bias(pairs: Sequence[Pair], scored_groups: dict[str, list[tuple[float, int]]] | None = None) -> dict:
    """p_chosen_longer, spearman_score_length (needs per-candidate scores), lc_length_coef."""
    lengths = np.array([(len(p.chosen), len(p.rejected)) for p in pairs], dtype=float).reshape(-1, 2)
    differ = lengths[lengths[:, 0] != lengths[:, 1]]
    out = metric("p_chosen_longer", (differ[:, 0] > differ[:, 1]).astype(float), mean)

    # AlpacaEval-style length control: the verdict (is side A the chosen?) regressed on tanh of the
    # standardised length difference A - B; the sides are assigned by a fixed coin per pair.
    a_is_chosen = np.array([_orientation(p) for p in pairs], dtype=float)
    diff = np.where(a_is_chosen == 1, lengths[:, 0] - lengths[:, 1], lengths[:, 1] - lengths[:, 0]) if len(pairs) else np.array([])
    sd = float(np.std(diff)) if len(diff) else 0.0
    xy = np.column_stack([np.tanh(diff / sd), a_is_chosen]) if sd > 0 else np.empty((0, 2))
    out |= metric("lc_length_coef", xy, logistic_coef, n_boot=200)

    # Within each prompt's group, the rank correlation of score and length; averaged over groups.
    rhos = []
    for members in (scored_groups or {}).values():
        scores, lens = np.array([m[0] for m in members], float), np.array([m[1] for m in members], float)
        if len(members) >= 3 and np.ptp(scores) > 0 and np.ptp(lens) > 0:
            rhos.append(float(np.corrcoef(_ranks(scores), _ranks(lens))[0, 1]))
    out |= metric("spearman_score_length", np.array(rhos), mean)
    return out


def _ranks(v: np.ndarray) -> np.ndarray:
    """Average ranks (ties share their mean rank), as Spearman's rho needs."""
    order = np.argsort(v, kind="mergesort")
    ranks = np.empty(len(v))
    ranks[order] = np.arange(len(v), dtype=float)
    for value in np.unique(v):
        tied = v == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def opener_bias(pairs: Sequence[Pair], phrases: Phrases = DEFAULT_PHRASES) -> dict:
    flags = np.array([(opener_of(p.chosen, phrases) is not None, opener_of(p.rejected, phrases) is not None) for p in pairs],
                     dtype=float).reshape(-1, 2)
    out = metric("chosen_opener_rate", flags[:, 0], mean) | metric("rejected_opener_rate", flags[:, 1], mean)
    one_sided = flags[flags[:, 0] != flags[:, 1]]
    win = metric("opener_win_rate", one_sided[:, 0], mean)
    return out | {"opener_win_rate": win["opener_win_rate"], "opener_win_rate_ci": win["opener_win_rate_ci"],
                  "n_opener_pairs": win["opener_win_rate_n"]}


def position_bias(first_won: Sequence[bool]) -> dict:
    """Share of pairwise verdicts (ties left out) won by the response shown first."""
    m = metric("first_position_win_rate", np.array(first_won, dtype=float), mean)
    return {"first_position_win_rate": m["first_position_win_rate"],
            "first_position_win_rate_ci": m["first_position_win_rate_ci"], "n": m["first_position_win_rate_n"]}


def dataset_metrics(pairs: Sequence[Pair], scored_groups: dict[str, list[tuple[float, int]]] | None = None,
                    first_won: Sequence[bool] = (), phrases: Phrases = DEFAULT_PHRASES) -> dict:
    return {"n_pairs": len(pairs), "length_bias": length_bias(pairs, scored_groups),
            "opener_bias": opener_bias(pairs, phrases), "position_bias": position_bias(first_won)}
