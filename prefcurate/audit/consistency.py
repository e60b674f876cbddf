"""How far the judge agrees with itself: across the two orders of a comparison (swap), across
repeats (flip rate, Cohen's or Fleiss' kappa, the spread of repeated scores), and the label-noise
rate that this disagreement implies, with the ``label_smoothing`` it suggests for TRL's robust
DPO loss.

Counts are grouped in SQL; numpy only sees one row per comparison, so this scales with the store.
"""

from __future__ import annotations

import math

import numpy as np

from prefcurate.audit.intervals import mean, metric, ratio
from prefcurate.store import Store

# Every plain, successful pairwise verdict, in a fixed orientation (see the view).
VERDICTS = "WITH v AS (SELECT * FROM v_oriented_verdicts WHERE probe IS NULL)"
# Both orders of one comparison at one repeat: do they agree?
SWAP_SQL = VERDICTS + """
SELECT hash(any_value(prompt_id)) AS prompt, (count(DISTINCT pick) = 1)::DOUBLE AS agree FROM v
GROUP BY judge, rubric_hash, x, y, repeat_index HAVING count(DISTINCT shown_first) = 2
ORDER BY judge, rubric_hash, x, y, repeat_index
"""
# One comparison in one order, judged two or more times: how many times each answer was given,
# and the answers of the first two repeats (for Cohen's kappa). Only comparisons with a repeat are
# grouped (most stores have none).
REPEAT_SQL = VERDICTS + """, repeated AS (SELECT DISTINCT judge, rubric_hash, x, y FROM v WHERE repeat_index > 0)
SELECT hash(any_value(prompt_id)) AS prompt, count(*) FILTER (WHERE pick = 'x') AS n_x,
       count(*) FILTER (WHERE pick = 'y') AS n_y, count(*) FILTER (WHERE pick = 'tie') AS n_tie,
       list(pick ORDER BY repeat_index)[1] AS first, list(pick ORDER BY repeat_index)[2] AS second
FROM v SEMI JOIN repeated USING (judge, rubric_hash, x, y)
GROUP BY judge, rubric_hash, x, y, shown_first HAVING count(*) >= 2
ORDER BY judge, rubric_hash, x, y, shown_first
"""
# Every verdict on one comparison, both orders and all repeats: the units of the noise estimate.
NOISE_SQL = VERDICTS + """
SELECT hash(any_value(prompt_id)) AS prompt, count(*) FILTER (WHERE pick = 'x') AS n_x, count(*) FILTER (WHERE pick = 'y') AS n_y,
       count(*) FILTER (WHERE pick = 'tie') AS n_tie
FROM v GROUP BY judge, rubric_hash, x, y HAVING count(*) >= 2
ORDER BY judge, rubric_hash, x, y
"""
# Pointwise repeats: each candidate scored two or more times by one judge and rubric, its scores
# rounded to whole points as the categories of Fleiss' kappa.
SCORE_REPEATS_SQL = """
SELECT hash(any_value(prompt_id)) AS prompt, stddev_samp(overall) AS sd,
       list(round(overall)::INTEGER ORDER BY repeat_index) AS ratings
FROM v_scores SEMI JOIN v_repeated_scores USING (candidate_id, judge, rubric_hash)
GROUP BY judge, rubric_hash, candidate_id HAVING count(*) >= 2
ORDER BY judge, rubric_hash, candidate_id
"""
# Pointwise repeats seen through the pairs: the order of chosen and rejected at each repeat.
PAIR_SIGNS_SQL = """
SELECT hash(any_value(pr.prompt_id)) AS prompt, count(*) FILTER (WHERE c.overall > r.overall) AS n_x, count(*) FILTER (WHERE c.overall < r.overall) AS n_y,
       count(*) FILTER (WHERE c.overall = r.overall) AS n_tie
FROM pairs pr
SEMI JOIN v_repeated_scores rc ON rc.candidate_id = pr.chosen_id AND rc.judge = pr.judge AND rc.rubric_hash = pr.rubric_hash
JOIN v_scores c ON c.candidate_id = pr.chosen_id AND c.judge = pr.judge AND c.rubric_hash = pr.rubric_hash
JOIN v_scores r ON r.candidate_id = pr.rejected_id AND r.judge = pr.judge AND r.rubric_hash = pr.rubric_hash
                AND r.repeat_index = c.repeat_index
GROUP BY pr.pair_id HAVING count(*) >= 2
ORDER BY pr.pair_id
"""


def _disagreement(counts: np.ndarray) -> np.ndarray:
    """Per unit (rows of n_x, n_y, n_tie): (disagreeing pairs of verdicts, all pairs of verdicts), where
    x against y counts 1 and a tie against either counts 1/2."""
    nx, ny, nt = counts[:, 0], counts[:, 1], counts[:, 2]
    n = nx + ny + nt
    return np.column_stack([nx * ny + 0.5 * nt * (nx + ny), n * (n - 1) / 2])


def flip_probability(disagreement: float | None) -> float | None:
    """The per-verdict flip probability e that explains a disagreement rate d between two verdicts
    on the same comparison, if each verdict flips independently: d = 2e(1 - e)."""
    if disagreement is None:
        return None
    return 0.5 * (1 - math.sqrt(max(0.0, 1 - 2 * min(disagreement, 0.5))))


def fleiss_kappa(counts: np.ndarray) -> float:
    """Fleiss' kappa from a units x categories matrix of counts, every unit rated the same number of times."""
    m = counts.sum(axis=1)
    if len(counts) == 0 or m[0] < 2 or not np.all(m == m[0]):
        return math.nan
    m = float(m[0])
    p_unit = ((counts ** 2).sum(axis=1) - m) / (m * (m - 1))
    p_cat = counts.sum(axis=0) / counts.sum()
    p_e = float((p_cat ** 2).sum())
    return math.nan if p_e >= 1 else float((p_unit.mean() - p_e) / (1 - p_e))


def cohen_kappa(first: np.ndarray, second: np.ndarray) -> float:
    """Cohen's kappa of two raters (here: the first two repeats) over the same units."""
    if len(first) == 0:
        return math.nan
    cats = np.union1d(first, second)
    p_o = float(np.mean(first == second))
    p_e = float(sum(np.mean(first == c) * np.mean(second == c) for c in cats))
    return math.nan if p_e >= 1 else (p_o - p_e) / (1 - p_e)


def _kappa(counts: np.ndarray, first: np.ndarray | None = None, second: np.ndarray | None = None) -> tuple[float | None, str | None]:
    """Cohen's kappa when units have two ratings, else Fleiss' kappa over the units with the most common
    number of ratings."""
    if len(counts) == 0:
        return None, None
    sizes = counts.sum(axis=1)
    if first is not None and np.all(sizes == 2):
        value, method = cohen_kappa(first, second), "cohen"
    else:
        common = np.bincount(sizes.astype(int)).argmax()
        value, method = fleiss_kappa(counts[sizes == common]), "fleiss"
    return (None if math.isnan(value) else value), method


def consistency_metrics(store: Store) -> dict:
    """swap_consistency, repeat_flip_rate, kappa (with their n), score_sd_mean: see the README."""
    c = store.columns(SWAP_SQL)
    swap = metric("swap_consistency", c["agree"], mean, clusters=c["prompt"])
    out = {"n_swap": swap.pop("swap_consistency_n")} | swap

    # Repeat agreement from pairwise verdicts where there are repeated ones, else from pointwise scores.
    repeats = store.query(REPEAT_SQL)
    scores = store.query(SCORE_REPEATS_SQL)
    if repeats:
        counts = np.array([(r["n_x"], r["n_y"], r["n_tie"]) for r in repeats], dtype=float)
        flips = (np.count_nonzero(counts, axis=1) > 1).astype(float)
        kappa, method = _kappa(counts, np.array([r["first"] for r in repeats]), np.array([r["second"] for r in repeats]))
        source, prompts = "pairwise", np.array([r["prompt"] for r in repeats], dtype=np.uint64)
    else:
        c = store.columns(PAIR_SIGNS_SQL)
        signs, prompts = _counts(c), c["prompt"]
        flips = (np.count_nonzero(signs, axis=1) > 1).astype(float)
        counts = _score_counts([r["ratings"] for r in scores])
        kappa, method = _kappa(counts, *_first_two([r["ratings"] for r in scores]))
        source = "pointwise" if len(scores) else None
    flip = metric("repeat_flip_rate", flips, mean, clusters=prompts)
    sd = np.array([r["sd"] for r in scores], dtype=float)
    out |= {"n_repeat": flip.pop("repeat_flip_rate_n")} | flip | {
            "kappa": kappa, "kappa_method": method, "repeat_source": source,
            "score_sd_mean": float(sd.mean()) if len(sd) else None, "n_score_sd": int(len(sd))}
    return out


def _score_counts(ratings: list[list[int]]) -> np.ndarray:
    if not ratings:
        return np.empty((0, 0))
    cats = sorted({x for rs in ratings for x in rs})
    index = {c: i for i, c in enumerate(cats)}
    counts = np.zeros((len(ratings), len(cats)))
    for u, rs in enumerate(ratings):
        for x in rs:
            counts[u, index[x]] += 1
    return counts


def _first_two(ratings: list[list[int]]) -> tuple[np.ndarray | None, np.ndarray | None]:
    if not ratings:
        return None, None
    return np.array([rs[0] for rs in ratings]), np.array([rs[1] for rs in ratings])


def noise_estimate(store: Store) -> dict:
    """The share of the judge's verdicts that are flips of the truth, assuming each verdict flips
    independently with one probability: estimated from how often two verdicts on the same comparison
    (other order, other repeat) disagree; pointwise repeats of the pairs are used when there are no
    pairwise verdicts to compare."""
    c, source = store.columns(NOISE_SQL), "pairwise"
    if not len(c["n_x"]):
        c, source = store.columns(PAIR_SIGNS_SQL), "pointwise"
    counts = _counts(c)
    if not len(counts):
        return {"rate": None, "rate_ci": None, "n": 0, "source": None, "label_smoothing": None, "loss_type": None,
                "how": "needs repeated verdicts: judge.repeats >= 2, or judge.mode hybrid or pairwise"}
    units = _disagreement(counts)
    d = metric("d", units, ratio, clusters=c["prompt"])
    rate = flip_probability(d["d"])
    ci = [flip_probability(x) for x in d["d_ci"]] if d["d_ci"] else None
    smoothing = round(min(rate, 0.49), 2) if rate is not None else None
    return {"rate": rate, "rate_ci": ci, "n": len(counts), "clusters": d["d_clusters"], "source": source, "disagreement": d["d"],
            "label_smoothing": smoothing, "loss_type": "robust" if smoothing and smoothing >= 0.01 else "sigmoid"}


def _counts(columns: dict) -> np.ndarray:
    """Rows of (n_x, n_y, n_tie)."""
    return np.column_stack([columns["n_x"], columns["n_y"], columns["n_tie"]]).astype(float).reshape(-1, 3)
