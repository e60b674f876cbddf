"""The audit stage (`prefcurate audit`, the flow's last step, and the first step of every
`snapshot create`): bias and consistency metrics, probes, flags per pair and gates over the store."""

from __future__ import annotations

import numpy as np

from prefcurate.audit.bias import PairColumns, dataset_metrics
from prefcurate.audit.consistency import consistency_metrics, noise_estimate
from prefcurate.audit.features import DEFAULT_PHRASES, Phrases, compute_features
from prefcurate.audit.flags import by_stage, compute_flags, fit_pairs_count, save_flags
from prefcurate.audit.gates import evaluate_gates
from prefcurate.audit.intervals import mean, metric
from prefcurate.config import AuditConfig
from prefcurate.ids import content_id
from prefcurate.store import Store, utc_now

# Each score-shift probe joined to its pair: how far the perturbed rejected response's score moved,
# and whether it now beats the chosen one.
SHIFT_PROBE_SQL = """
SELECT j.overall - pr.rejected_score AS shift, (j.overall > pr.chosen_score)::DOUBLE AS flipped
FROM judgments j JOIN pairs pr ON pr.rejected_id = j.candidate_id AND pr.judge = j.judge AND pr.rubric_hash = j.rubric_hash
WHERE j.probe = ? AND j.status = 'ok' AND j.mode = 'pointwise'
ORDER BY j.judgment_id
"""
# The swap probe: a pair judged in both orders; flipped when the two verdicts differ.
SWAP_PROBE_SQL = """
SELECT (count(DISTINCT winner) > 1)::DOUBLE AS flipped
FROM judgments WHERE probe = 'swap' AND status = 'ok' AND mode = 'pairwise'
GROUP BY judge, rubric_hash, candidate_id, candidate_b_id, repeat_index
HAVING count(*) = 2
ORDER BY any_value(judgment_id)
"""


def probe_metrics(store: Store) -> dict:
    """n, mean score shift and flip rate per probe (with intervals); the null response's mean score."""
    out = {}
    for kind in ("opener_injection", "padding"):
        rows = store.query(SHIFT_PROBE_SQL, [kind])
        shift = metric("mean_shift", np.array([r["shift"] for r in rows]), mean)
        flip = metric("flip_rate", np.array([r["flipped"] for r in rows]), mean)
        out[kind] = {"n": len(rows), **_strip_n(shift), **_strip_n(flip)}
    flips = np.array([r["flipped"] for r in store.query(SWAP_PROBE_SQL)])
    out["swap"] = {"n": len(flips), "mean_shift": None, "mean_shift_ci": None, **_strip_n(metric("flip_rate", flips, mean))}
    scores = np.array([r["overall"] for r in store.query(
        "SELECT overall FROM judgments WHERE probe = 'null_response' AND status = 'ok' ORDER BY judgment_id")])
    out["null_response"] = {"n": len(scores), **_strip_n(metric("mean_score", scores, mean))}
    return out


def _strip_n(metric: dict) -> dict:
    return {k: v for k, v in metric.items() if not k.endswith("_n")}


# Judgments by mode and status, for the failure rates.
STATUS_SQL = """
SELECT mode, count(*) AS n, count(*) FILTER (WHERE status = 'parse_error') AS parse_errors,
       count(*) FILTER (WHERE status = 'api_error') AS api_errors
FROM judgments WHERE probe IS NULL GROUP BY mode ORDER BY mode
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


def full_audit(store: Store, cfg: AuditConfig | None = None, run_id: str | None = None) -> dict:
    """The consistency audit: bias metrics, probes, consistency, the noise estimate, flags per pair and
    the gates. Stored as an ``audits`` row with its ``pair_flags`` (an identical store state gives
    the same audit id); returns what `prefcurate audit --json` prints."""
    cfg = cfg or AuditConfig()
    metrics = store_metrics(store, cfg.phrases()) | {"probes": probe_metrics(store)}
    metrics["consistency"] = consistency_metrics(store)
    metrics["noise_estimate"] = noise_estimate(store)
    metrics["failures"] = failure_rates(store)
    metrics["margins"] = margin_distribution(store)
    metrics["counts"] = store.counts()
    flagged = compute_flags(store, cfg)
    metrics["flags"] = flagged["counts"]
    metrics["flags_by_stage"] = by_stage(flagged["counts"])
    metrics["n_fit"] = fit_pairs_count(store, cfg.blocking_flags)
    metrics["blocking_flags"] = list(cfg.blocking_flags)
    metrics["gates"], metrics["passed"], metrics["n_inconclusive"] = evaluate_gates(metrics, cfg.gates)
    audit_cfg = cfg.model_dump(mode="json")
    # Rounded: a parallel sum may differ in its last bits between two runs over the same rows.
    metrics["audit_id"] = audit_id = content_id("audit", _rounded(metrics), flagged["fingerprint"], audit_cfg)
    with store.transaction():
        save_flags(store, audit_id)
        # Stored again with a new time when the same audit recurs, so v_flags shows the latest one.
        store.insert("audits", [{"audit_id": audit_id, "metrics": metrics, "gates": metrics["gates"],
                                 "passed": metrics["passed"], "run_id": run_id, "created_at": utc_now(),
                                 "config": audit_cfg, "n_pairs": metrics["n_pairs"], "n_fit": metrics["n_fit"]}],
                     replace_if="true", key="audit_id")
    return metrics


def _rounded(value):
    if isinstance(value, float):
        return float(f"{value:.9g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


# Each pair's lengths and openers, from the candidates' features; the length model's coin is a
# hash of the pair id.
PAIR_COLUMNS_SQL = """
SELECT fc.chars::DOUBLE AS chosen_chars, fr.chars::DOUBLE AS rejected_chars, fc.opener IS NOT NULL AS chosen_opener,
       fr.opener IS NOT NULL AS rejected_opener, hash(pr.pair_id) % 2 = 0 AS a_is_chosen
FROM pairs pr JOIN candidate_features fc ON fc.candidate_id = pr.chosen_id
JOIN candidate_features fr ON fr.candidate_id = pr.rejected_id
ORDER BY pr.pair_id
"""
# Within each prompt's group of scored candidates (at least 3, with varying score and length),
# Spearman's rho: the correlation of average ranks (tied values share the mean of their ranks).
SPEARMAN_SQL = """
WITH scored AS (
    SELECT j.prompt_id, j.candidate_id, avg(j.overall) AS score, any_value(f.chars) AS chars
    FROM judgments j JOIN candidate_features f USING (candidate_id)
    WHERE j.status = 'ok' AND j.mode = 'pointwise' AND j.probe IS NULL
    GROUP BY j.prompt_id, j.candidate_id
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
FIRST_WON_SQL = """
SELECT (pair_order = 'ab' AND winner = 'a') OR (pair_order = 'ba' AND winner = 'b') AS first
FROM judgments WHERE mode = 'pairwise' AND status = 'ok' AND winner <> 'tie'
ORDER BY judgment_id
"""


def store_metrics(store: Store, phrases: Phrases = DEFAULT_PHRASES) -> dict:
    """Length, opener and position bias of the stored pairs and judgments."""
    compute_features(store, phrases)
    c = store.columns(PAIR_COLUMNS_SQL)
    cols = PairColumns(c["chosen_chars"], c["rejected_chars"], c["chosen_opener"], c["rejected_opener"], c["a_is_chosen"])
    return dataset_metrics(cols, store.columns(SPEARMAN_SQL)["rho"], store.columns(FIRST_WON_SQL)["first"])
