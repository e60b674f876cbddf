"""The consistency audit's flags: what may be wrong with each pair, one row per pair and flag
with its detail (``pair_flags``; the latest audit's in ``v_flags``).

Every flag is computed in one SQL statement over the whole store, so an audit of a quarter of a
million pairs takes seconds. Which flags keep a pair out of snapshots is ``audit.blocking_flags``.
"""

from __future__ import annotations

from typing import Literal, get_args

from prefcurate.audit.features import SHINGLES, WORDS
from prefcurate.store import Store

Flag = Literal["swap_inconsistent", "repeat_unstable", "reversed", "corrected", "tie", "judge_failure", "low_margin",
               "contradiction", "duplicate", "degenerate", "injection_attempt", "self_preferred", "failed_check"]

# name: (the stage whose output it concerns, what it means)
FLAGS: dict[str, tuple[str, str]] = {
    "swap_inconsistent": ("judge", "the two orders of a pairwise comparison disagree (same repeat)"),
    "repeat_unstable": ("judge", "the verdict flips across repeats (pairwise, or the pointwise scores' order)"),
    "reversed": ("judge", "every pairwise verdict prefers the rejected response, as the judge's own scores do not"),
    "corrected": ("pairs", "every pairwise verdict prefers the rejected response, as the judge's own scores do: "
                           "a rubric penalty (opener_penalty, length_penalty) set the order against the judge's bias"),
    "tie": ("judge", "a pairwise verdict on the pair was a tie"),
    "judge_failure": ("judge", "a judgment the pair depends on is a parse_error or api_error"),
    "low_margin": ("pairs", "the score margin is below audit.low_margin"),
    "contradiction": ("pairs", "another pair has the same normalised prompt and responses, the other way round"),
    "duplicate": ("generate", "chosen and rejected are equal once normalised, or their word-trigram Jaccard "
                              "similarity reaches audit.duplicate_jaccard"),
    "degenerate": ("generate", "a response has no words, was cut off at the token limit, or is a repetition loop"),
    "injection_attempt": ("generate", "a response contains text aimed at the judge (\"ignore the rubric\", ...)"),
    "self_preferred": ("judge", "the chosen response comes from the judge's own model family and the rejected one "
                                "from another (audit.judge_family; see self_preference)"),
    "failed_check": ("judge", "the chosen response fails a hard check of the rubric (its `checks:`): a verifiable "
                              "answer the judge preferred anyway"),
}
assert set(FLAGS) == set(get_args(Flag))

# low_margin is reported but does not block: the pairs stage already drops pairs below
# pairs.min_margin, and a stricter cut is a choice, not a defect. Nor does corrected: blocking it would
# undo the rubric's penalty and give the judge's bias back to the snapshot. Nor does self_preferred: a
# judge's own family may well write the better answer; the audit's self_preference says whether it wins
# more often than other judges think it should.
DEFAULT_BLOCKING: tuple[str, ...] = tuple(f for f in FLAGS if f not in ("low_margin", "corrected", "self_preferred"))

# Lower-cased and trimmed: what "the same text" means for duplicates and contradictions (texts that
# differ in inner whitespace still meet as duplicates: their word trigrams are the same).
NORMALISE = "lower(trim({0}))"
# How many distinct shingles a candidate has, from its features. Jaccard similarity can reach t only
# when the smaller set is at least t times the larger, so only such pairs are compared (the 1 is
# slack for the rounding of repetition_ratio).
SHINGLE_COUNT = "CASE WHEN {0}.words < 3 THEN NULL ELSE round(({0}.words - 2) * (1 - {0}.repetition_ratio)) END"

FLAGS_SQL = """
CREATE OR REPLACE TEMP TABLE audit_flags AS
WITH pj AS (SELECT * FROM v_pair_judgments),
alike AS (  -- pairs whose two sides may be near-duplicates, by their shingle counts
    SELECT pr.pair_id, {norm_chosen} = {norm_rejected} AS same, {words_c} AS wc, {words_r} AS wr
    FROM pairs pr
    JOIN candidate_features fc ON fc.candidate_id = pr.chosen_id
    JOIN candidate_features fr ON fr.candidate_id = pr.rejected_id
    JOIN candidates ch ON ch.candidate_id = pr.chosen_id JOIN candidates rj ON rj.candidate_id = pr.rejected_id
    WHERE {count_c} IS NULL OR {count_r} IS NULL
       OR least({count_c}, {count_r}) >= $duplicate_jaccard * greatest({count_c}, {count_r}) - 1
),
shingled AS (SELECT pair_id, same, {shingles_c} AS sc, {shingles_r} AS sr FROM alike),
shared_prompts AS (  -- pairs whose normalised prompt has other pairs: only they can contradict one another
    SELECT pr.pair_id, hash({norm_prompt}) AS prompt
    FROM pairs pr JOIN prompts p USING (prompt_id)
    QUALIFY count(*) OVER (PARTITION BY hash({norm_prompt})) > 1
),
keyed AS (
    SELECT s.pair_id, s.prompt, hash({norm_chosen}) AS chosen, hash({norm_rejected}) AS rejected
    FROM shared_prompts s JOIN pairs pr USING (pair_id)
    JOIN candidates ch ON ch.candidate_id = pr.chosen_id JOIN candidates rj ON rj.candidate_id = pr.rejected_id
),
swap_by_repeat AS (
    SELECT pair_id, 'repeat ' || repeat_index || ': chosen shown first -> ' || any_value(prefers) FILTER (pair_order = 'ab')
           || ', rejected shown first -> ' || any_value(prefers) FILTER (pair_order = 'ba') AS detail
    FROM pj WHERE status = 'ok'
    GROUP BY pair_id, repeat_index
    HAVING count(DISTINCT pair_order) = 2 AND count(DISTINCT prefers) > 1
),
pairwise_repeats AS (
    SELECT pair_id, CASE pair_order WHEN 'ab' THEN 'chosen' ELSE 'rejected' END || ' shown first: '
           || string_agg(prefers, ', ' ORDER BY repeat_index) AS detail
    FROM pj WHERE status = 'ok'
    GROUP BY pair_id, pair_order
    HAVING count(*) >= 2 AND count(DISTINCT prefers) > 1
),
pointwise_repeats AS (
    SELECT pr.pair_id, 'pointwise: chosen scored above the rejected in ' || count(*) FILTER (WHERE c.overall > r.overall)
           || ' of ' || count(*) || ' repeats' AS detail
    FROM pairs pr
    SEMI JOIN v_repeated_scores rc ON rc.candidate_id = pr.chosen_id AND rc.judge = pr.judge AND rc.rubric_hash = pr.rubric_hash
    JOIN v_scores c ON c.candidate_id = pr.chosen_id AND c.judge = pr.judge AND c.rubric_hash = pr.rubric_hash
    JOIN v_scores r ON r.candidate_id = pr.rejected_id AND r.judge = pr.judge AND r.rubric_hash = pr.rubric_hash
                    AND r.repeat_index = c.repeat_index
    GROUP BY pr.pair_id
    HAVING count(*) >= 2 AND count(DISTINCT sign(c.overall - r.overall)) > 1
),
verdicts AS (SELECT * FROM v_pair_verdicts),
failed_scores AS (
    SELECT candidate_id, judge, rubric_hash, status, error FROM v_plain_judgments
    WHERE status <> 'ok' AND mode = 'pointwise'
),
failures AS (
    SELECT pair_id, status, error FROM pj WHERE status <> 'ok'
    UNION ALL
    SELECT pr.pair_id, f.status, f.error
    FROM pairs pr JOIN failed_scores f ON f.candidate_id = pr.chosen_id AND f.judge = pr.judge AND f.rubric_hash = pr.rubric_hash
    UNION ALL
    SELECT pr.pair_id, f.status, f.error
    FROM pairs pr JOIN failed_scores f ON f.candidate_id = pr.rejected_id AND f.judge = pr.judge AND f.rubric_hash = pr.rubric_hash
),
sides AS (
    SELECT pair_id, 'chosen' AS side, chosen_id AS candidate_id FROM pairs
    UNION ALL
    SELECT pair_id, 'rejected', rejected_id FROM pairs
),
degenerate AS (
    SELECT s.pair_id, s.side, CASE WHEN f.words = 0 THEN 'empty (no words)'
                                   WHEN c.finish_reason = 'length' THEN 'cut off at the token limit'
                                   ELSE 'repetition loop (' || round(100 * f.repetition_ratio)::INTEGER || '% of word trigrams repeat)'
                              END AS why
    FROM sides s JOIN candidate_features f USING (candidate_id) JOIN candidates c USING (candidate_id)
    WHERE f.words = 0 OR c.finish_reason = 'length' OR (f.words >= 12 AND f.repetition_ratio >= $repetition_max)
),
injections AS (
    SELECT s.pair_id, s.side FROM sides s JOIN candidate_features f USING (candidate_id) WHERE f.injection_attempt
),
failed_checks AS (  -- hard checks of the audit's rubric that the chosen response fails
    SELECT pr.pair_id, string_agg(k.name || ' (' || k.detail || ')', '; ' ORDER BY k.name) AS detail
    FROM pairs pr JOIN candidate_checks k ON k.candidate_id = pr.chosen_id
    WHERE list_contains($check_keys, k.check_key) AND k.hard AND NOT k.passed
    GROUP BY pr.pair_id
),
families AS (
    SELECT pr.pair_id, coalesce($judge_family, model_family(pr.judge)) AS own, ch.generator AS chosen_by,
           rj.generator AS rejected_by, gc.family AS chosen_family, gr.family AS rejected_family
    FROM pairs pr JOIN candidates ch ON ch.candidate_id = pr.chosen_id JOIN candidates rj ON rj.candidate_id = pr.rejected_id
    JOIN v_generator_families gc ON gc.generator = ch.generator JOIN v_generator_families gr ON gr.generator = rj.generator
)
SELECT pair_id, 'swap_inconsistent' AS flag, string_agg(detail, '; ' ORDER BY detail) AS detail
FROM swap_by_repeat GROUP BY pair_id
UNION ALL
SELECT pair_id, 'repeat_unstable', string_agg(detail, '; ' ORDER BY detail)
FROM (SELECT * FROM pairwise_repeats UNION ALL SELECT * FROM pointwise_repeats) GROUP BY pair_id
UNION ALL
SELECT pair_id, verdict, 'all ' || n_verdicts || ' pairwise verdicts prefer the rejected response'
       || CASE verdict WHEN 'corrected' THEN ', as the judge''s own scores do before the rubric''s penalties' ELSE '' END
FROM verdicts WHERE verdict IN ('reversed', 'corrected')
UNION ALL
SELECT pair_id, 'tie', ties || ' of ' || n_verdicts || ' pairwise verdicts were ties'
FROM verdicts WHERE ties > 0
UNION ALL
SELECT pair_id, 'judge_failure', count(*) || ' failed: ' || string_agg(DISTINCT status || coalesce(' (' || left(error, 80) || ')', ''), '; ')
FROM failures GROUP BY pair_id
UNION ALL
SELECT pair_id, 'low_margin', 'margin ' || round(margin, 3) || ' < ' || $low_margin
FROM pairs WHERE margin < $low_margin
UNION ALL
SELECT a.pair_id, 'contradiction', 'pair ' || min(b.pair_id) || ' prefers the other response'
FROM keyed a JOIN keyed b ON a.prompt = b.prompt AND a.chosen = b.rejected AND a.rejected = b.chosen
WHERE a.pair_id <> b.pair_id
GROUP BY a.pair_id
UNION ALL
SELECT pair_id, 'duplicate', CASE WHEN same THEN 'equal once normalised'
                                  ELSE 'word-trigram Jaccard ' || round(jaccard, 3) END
FROM (SELECT pair_id, same, shared / nullif(len(sc) + len(sr) - shared, 0) AS jaccard  -- |A or B| = |A| + |B| - |A and B|
      FROM (SELECT *, len(list_intersect(sc, sr)) AS shared FROM shingled))
WHERE same OR jaccard >= $duplicate_jaccard
UNION ALL
SELECT pair_id, 'degenerate', string_agg(side || ': ' || why, '; ' ORDER BY side)
FROM degenerate GROUP BY pair_id
UNION ALL
SELECT pair_id, 'injection_attempt', string_agg(side, ' and ' ORDER BY side) || ' addresses the judge'
FROM injections GROUP BY pair_id
UNION ALL
SELECT pair_id, 'self_preferred', 'chosen from the judge''s family (' || own || '): ' || chosen_by || ' over ' || rejected_by
FROM families WHERE chosen_family = own AND rejected_family IS DISTINCT FROM own
UNION ALL
SELECT pair_id, 'failed_check', 'the chosen response fails ' || detail FROM failed_checks
""".format(
    norm_prompt=NORMALISE.format("p.prompt_text"), norm_chosen=NORMALISE.format("ch.text"),
    norm_rejected=NORMALISE.format("rj.text"), count_c=SHINGLE_COUNT.format("fc"), count_r=SHINGLE_COUNT.format("fr"),
    words_c=WORDS.format("ch.text"), words_r=WORDS.format("rj.text"),
    shingles_c=SHINGLES.format("wc"), shingles_r=SHINGLES.format("wr"),
)


def compute_flags(store: Store, low_margin: float, duplicate_jaccard: float, repetition_max: float,
                  judge_family: str | None = None, check_keys: list[str] | None = None) -> dict:
    """Flag every stored pair into the temporary table ``audit_flags`` (needs candidate features);
    return {flag: count} for every flag, and the flags' fingerprint (it changes with any row).
    ``judge_family``: the model family whose answers count as the judge's own (None: its model's name says);
    ``check_keys``: the rubric's checks (rubric.Check.key) whose failure on a chosen response is flagged."""
    store.execute(FLAGS_SQL, {"low_margin": low_margin, "duplicate_jaccard": duplicate_jaccard,
                              "repetition_max": repetition_max, "judge_family": judge_family,
                              "check_keys": list(check_keys or [])})
    counts = {flag: 0 for flag in FLAGS} | {r["flag"]: int(r["n"]) for r in store.query(
        "SELECT flag, count(*) AS n FROM audit_flags GROUP BY flag")}
    fingerprint = store.scalar("SELECT coalesce(bit_xor(hash(pair_id, flag, detail)), 0) FROM audit_flags")
    return {"counts": counts, "fingerprint": str(fingerprint)}


def save_flags(store: Store, audit_id: str, blocking: list[str]) -> int:
    """Store ``audit_flags`` as this audit's rows of ``pair_flags``, each marked whether it blocks its pair;
    return how many pairs no flag blocks (`fit_pairs`, what a snapshot takes)."""
    store.execute("INSERT INTO pair_flags (audit_id, pair_id, flag, detail, blocks) "
                  "SELECT ?, pair_id, flag, detail, list_contains(?, flag) FROM audit_flags ON CONFLICT DO NOTHING",
                  [audit_id, list(blocking)])
    return store.scalar("SELECT count(*) FROM fit_pairs(?)", [audit_id])


def by_stage(counts: dict[str, int]) -> dict[str, int]:
    """Flagged pairs per stage the flags concern (a pair with two flags counts twice)."""
    out: dict[str, int] = {}
    for flag, n in counts.items():
        out[FLAGS[flag][0]] = out.get(FLAGS[flag][0], 0) + n
    return out
