"""Judge-bias metrics over preference pairs: length, openers and position.

Every metric comes with a bootstrap 95% interval (resampling prompts: a prompt's pairs together), its
n and its number of prompts; one that cannot be computed (no pairs of the kind it needs) is None with
its n, never a made-up number. The same functions
measure the store's pairs (`prefcurate audit`, columns read from DuckDB) and any preference
dataset (`audit-dataset`, columns computed from the texts).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from prefcurate.audit.features import DEFAULT_PHRASES, Phrases, opener_of
from prefcurate.audit.intervals import mean, metric


@dataclass(frozen=True)
class Pair:
    group: str  # what makes two pairs "the same prompt", e.g. the prompt id or text
    chosen: str
    rejected: str


def _orientation(p: Pair) -> bool:
    """A fixed coin per pair: whether the chosen response plays side A in the length model."""
    return hashlib.sha256(f"{p.group}\x00{p.chosen}\x00{p.rejected}".encode()).digest()[0] % 2 == 0


@dataclass
class PairColumns:
    """What the bias metrics need of each pair, one array per feature: from texts (any dataset) or
    straight from the store's candidate features."""

    chosen_chars: np.ndarray
    rejected_chars: np.ndarray
    chosen_opener: np.ndarray  # bool: opens with an opener
    rejected_opener: np.ndarray
    a_is_chosen: np.ndarray  # bool: a fixed coin per pair, for the length model
    prompt: np.ndarray  # the pair's prompt (id or text): what the bootstrap resamples

    @classmethod
    def from_pairs(cls, pairs: Sequence[Pair], phrases: Phrases = DEFAULT_PHRASES) -> PairColumns:
        return cls(np.array([len(p.chosen) for p in pairs], dtype=float),
                   np.array([len(p.rejected) for p in pairs], dtype=float),
                   np.array([opener_of(p.chosen, phrases) is not None for p in pairs], dtype=bool),
                   np.array([opener_of(p.rejected, phrases) is not None for p in pairs], dtype=bool),
                   np.array([_orientation(p) for p in pairs], dtype=bool), np.array([p.group for p in pairs], dtype=object))

    def __len__(self) -> int:
        return len(self.chosen_chars)


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


def length_bias(cols: PairColumns, rhos: np.ndarray | None = None) -> dict:
    """p_chosen_longer, chars_gap, lc_length_coef, and spearman_score_length from the per-prompt rank
    correlations ``rhos`` of score and length (the store has them; a dataset of pairs has not)."""
    differ = cols.chosen_chars != cols.rejected_chars
    out = metric("p_chosen_longer", (cols.chosen_chars[differ] > cols.rejected_chars[differ]).astype(float), mean,
                 clusters=cols.prompt[differ])
    out |= metric("chars_gap", (cols.chosen_chars - cols.rejected_chars).astype(float), mean, clusters=cols.prompt)

    # AlpacaEval-style length control: the verdict (is side A the chosen?) regressed on tanh of the
    # standardised length difference A - B; the sides are assigned by a fixed coin per pair.
    diff = np.where(cols.a_is_chosen, cols.chosen_chars - cols.rejected_chars, cols.rejected_chars - cols.chosen_chars)
    sd = float(np.std(diff)) if len(diff) else 0.0
    xy = np.column_stack([np.tanh(diff / sd), cols.a_is_chosen.astype(float)]) if sd > 0 else np.empty((0, 2))
    out |= metric("lc_length_coef", xy, logistic_coef, n_boot=200, clusters=cols.prompt if sd > 0 else None)
    out |= metric("spearman_score_length", np.asarray(rhos if rhos is not None else [], dtype=float), mean)
    return out


def opener_bias(cols: PairColumns) -> dict:
    out = metric("chosen_opener_rate", cols.chosen_opener.astype(float), mean, clusters=cols.prompt) | \
        metric("rejected_opener_rate", cols.rejected_opener.astype(float), mean, clusters=cols.prompt)
    one_sided = cols.chosen_opener != cols.rejected_opener
    win = metric("opener_win_rate", cols.chosen_opener[one_sided].astype(float), mean, clusters=cols.prompt[one_sided])
    return out | {"n_opener_pairs": win.pop("opener_win_rate_n")} | win


def position_bias(first_won: Sequence[bool] | np.ndarray, prompts: np.ndarray | None = None) -> dict:
    """Share of pairwise verdicts (ties left out) won by the response shown first; ``prompts``: each
    verdict's prompt, what the bootstrap resamples."""
    m = metric("first_position_win_rate", np.asarray(first_won, dtype=float), mean, clusters=prompts)
    return {"n": m.pop("first_position_win_rate_n")} | m


def position_flips(first_twice: np.ndarray, second_twice: np.ndarray, prompts: np.ndarray) -> dict:
    """Of the comparisons whose verdict changed with the order, the share the response shown first won
    both times (first_position_flip_share, with its interval), and McNemar's two counts. A judge fair on
    clear cases that picks the first-shown response on close calls barely moves the overall first-position
    win rate; this share, conditional on the flips, is where it shows."""
    discordant = first_twice | second_twice
    m = metric("first_position_flip_share", first_twice[discordant].astype(float), mean, clusters=prompts[discordant])
    return {"n_flips": m.pop("first_position_flip_share_n"), "first_twice": int(first_twice.sum()),
            "second_twice": int(second_twice.sum())} | m


def dataset_metrics(cols: PairColumns, rhos: np.ndarray | None = None,
                    first_won: Sequence[bool] | np.ndarray = (), first_won_prompts: np.ndarray | None = None) -> dict:
    return {"n_pairs": len(cols), "length_bias": length_bias(cols, rhos), "opener_bias": opener_bias(cols),
            "position_bias": position_bias(first_won, first_won_prompts)}
