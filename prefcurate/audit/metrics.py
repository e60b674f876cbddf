"""The audit's measurements of the store: judge bias over its pairs and judgments, how far probes
moved the judge, failure rates and the margins. Each metric comes with its interval (resampling
prompts), its n and its number of prompts."""

from __future__ import annotations

import numpy as np

from prefcurate.audit.bias import PairColumns, dataset_metrics
from prefcurate.audit.features import Phrases, compute_features
from prefcurate.audit.intervals import mean, metric
from prefcurate.judge.probes import pad
from prefcurate.store import Store

# Each score-shift probe joined to its pair: how far the perturbed rejected response's score moved,
# and whether it now beats the chosen one. Here and below, `prompt` is hash(prompt_id): the cluster the
# bootstrap resamples, as a number (a quarter of a million of them group far faster than strings).
SHIFT_PROBE_SQL = """
SELECT hash(j.prompt_id) AS prompt, j.overall - pr.rejected_score AS shift, (j.overall > pr.chosen_score)::DOUBLE AS flipped,
       c.text AS rejected_text
FROM v_probe_judgments j
JOIN pairs pr ON pr.rejected_id = j.candidate_id AND pr.judge = j.judge AND pr.rubric_hash = j.rubric_hash
JOIN candidates c ON c.candidate_id = pr.rejected_id
WHERE j.probe = ? AND j.mode = 'pointwise'
ORDER BY j.judgment_id
"""
# The swap probe: a pair judged in both orders; flipped when the two verdicts differ.
SWAP_PROBE_SQL = """
SELECT hash(any_value(prompt_id)) AS prompt, (count(DISTINCT winner) > 1)::DOUBLE AS flipped
FROM v_probe_judgments WHERE probe = 'swap'
GROUP BY judge, rubric_hash, candidate_id, candidate_b_id, repeat_index
HAVING count(*) = 2
ORDER BY any_value(judgment_id)
"""


def probe_metrics(store: Store) -> dict:
    """n, mean score shift and flip rate per probe (with intervals), and padding's shift per 100 characters
    it added (what a rubric's length_penalty corrects); the null response's mean score."""
    out = {}
    for kind in ("opener_injection", "padding"):
        c = store.columns(SHIFT_PROBE_SQL, [kind])
        prompts = c["prompt"]
        shift = metric("mean_shift", c["shift"].astype(float), mean, clusters=prompts)
        flip = metric("flip_rate", c["flipped"].astype(float), mean, clusters=prompts)
        out[kind] = {"n": len(prompts), **_strip_n(shift), **_strip_n(flip)}
        if kind == "padding":
            added = np.array([len(pad(t)) - len(t) for t in c["rejected_text"]], dtype=float)
            out[kind] |= _strip_n(metric("shift_per_100_chars", 100 * c["shift"].astype(float) / np.maximum(added, 1),
                                         mean, clusters=prompts))
    c = store.columns(SWAP_PROBE_SQL)
    out["swap"] = {"n": len(c["flipped"]), "mean_shift": None, "mean_shift_ci": None,
                   **_strip_n(metric("flip_rate", c["flipped"].astype(float), mean, clusters=c["prompt"]))}
    c = store.columns("SELECT hash(prompt_id) AS prompt, overall FROM v_probe_judgments WHERE probe = 'null_response' "
                      "ORDER BY judgment_id")
    out["null_response"] = {"n": len(c["overall"]),
                            **_strip_n(metric("mean_score", c["overall"].astype(float), mean, clusters=c["prompt"]))}
    return out


def _strip_n(metric: dict) -> dict:
    return {k: v for k, v in metric.items() if not k.endswith("_n")}


# Judgments by mode and status, for the failure rates.
STATUS_SQL = """
SELECT mode, count(*) AS n, count(*) FILTER (WHERE status = 'parse_error') AS parse_errors,
       count(*) FILTER (WHERE status = 'api_error') AS api_errors
FROM v_plain_judgments GROUP BY mode ORDER BY mode
"""
MARGIN_BINS = 20


def failure_rates(store: Store) -> dict:
    """Per judging mode: judgments, and the shares that were parse errors and API errors."""
    return {r["mode"]: {"n": r["n"], "parse_error_rate": r["parse_errors"] / r["n"], "api_error_rate": r["api_errors"] / r["n"]}
            for r in store.query(STATUS_SQL)}


def margin_distribution(store: Store) -> dict:
    """Quantiles of the pairs' margins and a histogram (for the report's plot)."""
    margins = store.columns("SELECT margin FROM pairs")["margin"].astype(float)
    if not len(margins):
        return {"n": 0, "quantiles": None, "histogram": None}
    q = dict(zip(("min", "p10", "p25", "p50", "p75", "p90", "max"),
                 map(float, np.quantile(margins, [0, 0.1, 0.25, 0.5, 0.75, 0.9, 1]))))
    counts, edges = np.histogram(margins, bins=MARGIN_BINS)
    return {"n": len(margins), "mean": float(margins.mean()), "quantiles": q,
            "histogram": {"counts": counts.tolist(), "edges": edges.tolist()}}


# Each pair's lengths and openers, from the candidates' features; the length model's coin is a
# hash of the pair id.
PAIR_COLUMNS_SQL = """
SELECT fc.chars::DOUBLE AS chosen_chars, fr.chars::DOUBLE AS rejected_chars, fc.opener IS NOT NULL AS chosen_opener,
       fr.opener IS NOT NULL AS rejected_opener, hash(pr.pair_id) % 2 = 0 AS a_is_chosen, hash(pr.prompt_id) AS prompt
FROM pairs pr JOIN candidate_features fc ON fc.candidate_id = pr.chosen_id
JOIN candidate_features fr ON fr.candidate_id = pr.rejected_id
ORDER BY pr.pair_id
"""
# Within each prompt's group of scored candidates (at least 3, with varying score and length),
# Spearman's rho: the correlation of average ranks (tied values share the mean of their ranks).
SPEARMAN_SQL = """
WITH scored AS (
    SELECT s.prompt_id, s.candidate_id, avg(s.overall) AS score, any_value(f.chars) AS chars
    FROM v_scores s JOIN candidate_features f USING (candidate_id)
    GROUP BY s.prompt_id, s.candidate_id
), ranked AS (
    SELECT prompt_id, score, chars,
           rank() OVER (PARTITION BY prompt_id ORDER BY score) + (count(*) OVER (PARTITION BY prompt_id, score) - 1) / 2 AS score_rank,
           rank() OVER (PARTITION BY prompt_id ORDER BY chars) + (count(*) OVER (PARTITION BY prompt_id, chars) - 1) / 2 AS chars_rank
    FROM scored
)
SELECT corr(score_rank, chars_rank) AS rho FROM ranked
GROUP BY prompt_id HAVING count(*) >= 3 AND max(score) > min(score) AND max(chars) > min(chars)
ORDER BY prompt_id
"""
# Every pairwise verdict with a winner, probes included: in pointwise mode the swap probes are the
# only pairwise verdicts there are.
FIRST_WON_SQL = """
SELECT (pair_order = 'ab' AND winner = 'a') OR (pair_order = 'ba' AND winner = 'b') AS first, hash(prompt_id) AS prompt
FROM judgments WHERE mode = 'pairwise' AND status = 'ok' AND winner <> 'tie'
ORDER BY judgment_id
"""


def store_metrics(store: Store, phrases: Phrases) -> dict:
    """Length, opener and position bias of the stored pairs and judgments."""
    compute_features(store, phrases)
    c = store.columns(PAIR_COLUMNS_SQL)
    cols = PairColumns(c["chosen_chars"], c["rejected_chars"], c["chosen_opener"], c["rejected_opener"], c["a_is_chosen"],
                       c["prompt"])
    first = store.columns(FIRST_WON_SQL)
    return dataset_metrics(cols, store.columns(SPEARMAN_SQL)["rho"], first["first"], first["prompt"])
