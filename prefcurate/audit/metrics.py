"""The audit's measurements of the store: judge bias over its pairs and judgments, how far probes
moved the judge, failure rates and the margins. Each metric comes with its interval (resampling
prompts), its n and its number of prompts."""

from __future__ import annotations

import numpy as np

from prefcurate.audit.bias import PairColumns, dataset_metrics, position_flips
from prefcurate.audit.consistency import fleiss_kappa
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


# The template probe: each probed pair's verdict (chosen above, below or level with the rejected) under
# each wording of the rubric's instructions, its own and every paraphrase, counted per pair.
TEMPLATE_SQL = """
WITH scored AS (
    SELECT candidate_id, judge, rubric_hash, coalesce(probe, 'plain') AS wording, avg(overall) AS score
    FROM judgments WHERE mode = 'pointwise' AND status = 'ok' AND (probe IS NULL OR probe LIKE 'template:%')
    GROUP BY ALL
), probed AS (SELECT DISTINCT candidate_id, judge, rubric_hash FROM scored WHERE wording <> 'plain')
SELECT hash(pr.prompt_id) AS prompt, count(*) FILTER (WHERE c.score > r.score) AS n_chosen,
       count(*) FILTER (WHERE c.score < r.score) AS n_rejected, count(*) FILTER (WHERE c.score = r.score) AS n_tie
FROM pairs pr
SEMI JOIN probed p ON p.candidate_id = pr.rejected_id AND p.judge = pr.judge AND p.rubric_hash = pr.rubric_hash
JOIN scored c ON c.candidate_id = pr.chosen_id AND c.judge = pr.judge AND c.rubric_hash = pr.rubric_hash
JOIN scored r ON r.candidate_id = pr.rejected_id AND r.judge = pr.judge AND r.rubric_hash = pr.rubric_hash
             AND r.wording = c.wording
GROUP BY pr.pair_id, pr.prompt_id
ORDER BY pr.pair_id
"""


def template_metrics(store: Store) -> dict:
    """How far the verdicts depend on the wording of the instructions: the share of probed pairs whose
    verdict is not the same under every wording (flip_rate), and Fleiss' kappa across the wordings (over
    the pairs judged under the most common number of them), each with its interval."""
    c = store.columns(TEMPLATE_SQL)
    counts = np.column_stack([c["n_chosen"], c["n_rejected"], c["n_tie"]]).astype(float).reshape(-1, 3)
    flips = metric("flip_rate", (np.count_nonzero(counts, axis=1) > 1).astype(float), mean, clusters=c["prompt"])
    sizes = counts.sum(axis=1).astype(int)
    wordings = int(np.bincount(sizes).argmax()) if len(sizes) else 0
    kappa = metric("kappa", counts[sizes == wordings], fleiss_kappa, n_boot=200, clusters=c["prompt"][sizes == wordings])
    return {"n": len(counts), "wordings": wordings, **_strip_n(flips), **_strip_n(kappa)}


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
    out["template"] = template_metrics(store)
    return out


# Each applicable result of the rubric's checks, with its prompt and whether its candidate is some pair's chosen.
CHECKS_SQL = """
SELECT k.name, k.passed::DOUBLE AS passed, hash(c.prompt_id) AS prompt,
       c.candidate_id IN (SELECT chosen_id FROM pairs) AS chosen
FROM candidate_checks k JOIN candidates c USING (candidate_id)
WHERE list_contains($keys, k.check_key) AND k.passed IS NOT NULL
ORDER BY k.name, c.candidate_id
"""


def check_rates(store: Store, checks: list) -> dict:
    """Per check of the rubric: its kind, whether it is hard, and the share of candidates (pass_rate) and of
    chosen responses (chosen_pass_rate) that pass it, where it applies, with intervals."""
    c = store.columns(CHECKS_SQL, {"keys": [check.key for check in checks]})
    out = {}
    for check in checks:
        mine = c["name"] == check.name
        chosen = mine & c["chosen"].astype(bool)
        out[check.name] = {"kind": check.kind, "hard": check.hard,
                           **metric("pass_rate", c["passed"][mine], mean, clusters=c["prompt"][mine]),
                           **metric("chosen_pass_rate", c["passed"][chosen], mean, clusters=c["prompt"][chosen])}
    return out


def _strip_n(metric: dict) -> dict:
    return {k: v for k, v in metric.items() if not k.endswith("_n")}


# Pairs with exactly one side from the judge's own model family (by its generator): was that side
# chosen, and how often did the other judges (of other families) that scored both sides prefer it? A
# tie between another judge's scores counts a half.
SELF_PREFERENCE_SQL = """
WITH mixed AS (
    SELECT pr.pair_id, pr.prompt_id, pr.judge, pr.chosen_id, pr.rejected_id, own, gc.family = own AS own_chosen
    FROM (SELECT *, coalesce($judge_family, model_family(judge)) AS own FROM pairs) pr
    JOIN candidates c ON c.candidate_id = pr.chosen_id JOIN candidates r ON r.candidate_id = pr.rejected_id
    JOIN v_generator_families gc ON gc.generator = c.generator JOIN v_generator_families gr ON gr.generator = r.generator
    WHERE (gc.family = own) IS DISTINCT FROM (gr.family = own)
), others AS (
    SELECT candidate_id, judge, avg(overall) AS score FROM v_scores GROUP BY ALL
), other_verdicts AS (
    SELECT m.pair_id, avg(CASE WHEN c.score = r.score THEN 0.5 WHEN (c.score > r.score) = m.own_chosen THEN 1 ELSE 0 END) AS other_prefers_own
    FROM mixed m JOIN others c ON c.candidate_id = m.chosen_id JOIN others r ON r.candidate_id = m.rejected_id AND r.judge = c.judge
    WHERE c.judge <> m.judge AND model_family(c.judge) IS DISTINCT FROM m.own
    GROUP BY m.pair_id
)
SELECT hash(m.prompt_id) AS prompt, m.own_chosen::DOUBLE AS own_chosen, o.other_prefers_own
FROM mixed m LEFT JOIN other_verdicts o USING (pair_id)
ORDER BY m.pair_id
"""


def self_preference(store: Store, judge_family: str | None = None) -> dict:
    """On pairs with one side from the judge's own model family: how often that side was chosen
    (own_win_rate), and by how much more often than other judges prefer it on the same pairs
    (excess_win_rate, on the pairs other judges scored); each with its interval."""
    c = store.columns(SELF_PREFERENCE_SQL, {"judge_family": judge_family})
    own = c["own_chosen"].astype(float)
    other = np.asarray(c["other_prefers_own"], dtype=float)  # NULL (no other judge) reads as nan
    compared = ~np.isnan(other)
    out = {"n": len(own), **_strip_n(metric("own_win_rate", own, mean, clusters=c["prompt"])),
           "n_compared": int(compared.sum()),
           **_strip_n(metric("excess_win_rate", own[compared] - other[compared], mean, clusters=c["prompt"][compared]))}
    if not len(own):
        out["how"] = "no pair has one side from the judge's model family and the other from another family"
    elif not compared.any():
        out["how"] = ("needs another judge's scores of the same candidates: a second run with another judge, "
                      "or its judgments imported")
    return out


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
SELECT pick = shown_first AS first, hash(prompt_id) AS prompt FROM v_oriented_verdicts WHERE pick <> 'tie'
ORDER BY judgment_id
"""
# Both orders of one comparison (plain or probe, at one repeat) that disagree: did the response shown
# first win both times (first_twice) or the one shown second (second_twice)? McNemar's discordant pairs.
POSITION_FLIPS_SQL = """
SELECT hash(any_value(prompt_id)) AS prompt, count(*) FILTER (WHERE pick = shown_first) = 2 AS first_twice,
       count(*) FILTER (WHERE pick <> shown_first AND pick <> 'tie') = 2 AS second_twice
FROM v_oriented_verdicts
GROUP BY judge, rubric_hash, probe, x, y, repeat_index HAVING count(*) = 2 AND count(DISTINCT shown_first) = 2
ORDER BY judge, rubric_hash, probe, x, y, repeat_index
"""


def store_metrics(store: Store, phrases: Phrases) -> dict:
    """Length, opener and position bias of the stored pairs and judgments."""
    compute_features(store, phrases)
    c = store.columns(PAIR_COLUMNS_SQL)
    cols = PairColumns(c["chosen_chars"], c["rejected_chars"], c["chosen_opener"], c["rejected_opener"], c["a_is_chosen"],
                       c["prompt"])
    first = store.columns(FIRST_WON_SQL)
    out = dataset_metrics(cols, store.columns(SPEARMAN_SQL)["rho"], first["first"], first["prompt"])
    flips = store.columns(POSITION_FLIPS_SQL)
    out["position_bias"] |= position_flips(flips["first_twice"], flips["second_twice"], flips["prompt"])
    return out
