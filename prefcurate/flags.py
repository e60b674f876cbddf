"""The consistency audit's flags: what may be wrong with each pair, one row per pair and flag
with its detail (``pair_flags``; the latest audit's in ``v_flags``).

Every flag is computed in one SQL statement over the whole store, so an audit of a quarter of a
million pairs takes seconds. Which flags keep a pair out of snapshots is ``audit.blocking_flags``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, get_args

if TYPE_CHECKING:
    from prefcurate.config import AuditConfig
    from prefcurate.store import Store

Flag = Literal["swap_inconsistent", "repeat_unstable", "reversed", "tie", "judge_failure", "low_margin",
               "contradiction", "duplicate", "degenerate", "injection_attempt"]

# name: (the stage whose output it concerns, what it means)
FLAGS: dict[str, tuple[str, str]] = {
    "swap_inconsistent": ("judge", "the two orders of a pairwise comparison disagree (same repeat)"),
    "repeat_unstable": ("judge", "the verdict flips across repeats (pairwise, or the pointwise scores' order)"),
    "reversed": ("judge", "every pairwise verdict prefers the rejected response over the chosen one"),
    "tie": ("judge", "a pairwise verdict on the pair was a tie"),
    "judge_failure": ("judge", "a judgment the pair depends on is a parse_error or api_error"),
    "low_margin": ("pairs", "the score margin is below audit.low_margin"),
    "contradiction": ("pairs", "another pair has the same normalised prompt and responses, the other way round"),
    "duplicate": ("generate", "chosen and rejected are equal once normalised, or their word-trigram Jaccard "
                              "similarity reaches audit.duplicate_jaccard"),
    "degenerate": ("generate", "a response is empty, cut off at the token limit, or a repetition loop"),
    "injection_attempt": ("generate", "a response contains text aimed at the judge (\"ignore the rubric\", ...)"),
}
assert set(FLAGS) == set(get_args(Flag))

# low_margin is reported but does not block: the pairs stage already drops pairs below
# pairs.min_margin, and a stricter cut is a choice, not a defect.
DEFAULT_BLOCKING: tuple[str, ...] = tuple(f for f in FLAGS if f != "low_margin")

# Lower case, whitespace collapsed: what "the same text" means for duplicates and contradictions.
NORMALISE = "lower(regexp_replace(trim({0}), '\\s+', ' ', 'g'))"
# The distinct word trigrams of a normalised text (its words, when it has fewer than three).
SHINGLES = """CASE WHEN len({0}) < 3 THEN list_distinct({0}) ELSE list_distinct(list_transform(range(1, len({0}) - 1),
    lambda i: {0}[i] || ' ' || {0}[i + 1] || ' ' || {0}[i + 2])) END"""

FLAGS_SQL = """
CREATE OR REPLACE TEMP TABLE audit_flags AS
WITH pj AS (SELECT * FROM v_pair_judgments),
texts AS (
    SELECT pr.pair_id, pr.margin, {norm_prompt} AS prompt, {norm_chosen} AS chosen, {norm_rejected} AS rejected
    FROM pairs pr JOIN prompts p USING (prompt_id)
    JOIN candidates ch ON ch.candidate_id = pr.chosen_id JOIN candidates rj ON rj.candidate_id = pr.rejected_id
),
words AS (
    SELECT pair_id, chosen = rejected AS same, regexp_extract_all(chosen, '\\w+') AS wc,
           regexp_extract_all(rejected, '\\w+') AS wr
    FROM texts
),
shingled AS (SELECT pair_id, same, {shingles_c} AS sc, {shingles_r} AS sr FROM words),
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
    JOIN judgments c ON c.candidate_id = pr.chosen_id AND c.judge = pr.judge AND c.rubric_hash = pr.rubric_hash
    JOIN judgments r ON r.candidate_id = pr.rejected_id AND r.judge = pr.judge AND r.rubric_hash = pr.rubric_hash
                    AND r.repeat_index = c.repeat_index
    WHERE c.mode = 'pointwise' AND r.mode = 'pointwise' AND c.probe IS NULL AND r.probe IS NULL
      AND c.status = 'ok' AND r.status = 'ok'
    GROUP BY pr.pair_id
    HAVING count(*) >= 2 AND count(DISTINCT sign(c.overall - r.overall)) > 1
),
verdicts AS (SELECT * FROM v_pair_verdicts),
failures AS (
    SELECT pair_id, status, error FROM pj WHERE status <> 'ok'
    UNION ALL
    SELECT pr.pair_id, j.status, j.error
    FROM pairs pr JOIN judgments j ON j.candidate_id IN (pr.chosen_id, pr.rejected_id)
     AND j.judge = pr.judge AND j.rubric_hash = pr.rubric_hash AND j.mode = 'pointwise' AND j.probe IS NULL
    WHERE j.status <> 'ok'
),
degenerate AS (
    SELECT pr.pair_id, side, CASE WHEN trim(c.text) = '' THEN 'empty'
                                  WHEN c.finish_reason = 'length' THEN 'cut off at the token limit'
                                  ELSE 'repetition loop (' || round(100 * f.repetition_ratio)::INTEGER || '% of word trigrams repeat)'
                             END AS why
    FROM pairs pr
    CROSS JOIN (VALUES ('chosen'), ('rejected')) s(side)
    JOIN candidates c ON c.candidate_id = CASE side WHEN 'chosen' THEN pr.chosen_id ELSE pr.rejected_id END
    JOIN candidate_features f ON f.candidate_id = c.candidate_id
    WHERE trim(c.text) = '' OR c.finish_reason = 'length' OR (f.words >= 12 AND f.repetition_ratio >= $repetition_max)
),
injections AS (
    SELECT pr.pair_id, side
    FROM pairs pr
    CROSS JOIN (VALUES ('chosen'), ('rejected')) s(side)
    JOIN candidate_features f ON f.candidate_id = CASE side WHEN 'chosen' THEN pr.chosen_id ELSE pr.rejected_id END
    WHERE f.injection_attempt
)
SELECT pair_id, 'swap_inconsistent' AS flag, string_agg(detail, '; ' ORDER BY detail) AS detail
FROM swap_by_repeat GROUP BY pair_id
UNION ALL
SELECT pair_id, 'repeat_unstable', string_agg(detail, '; ' ORDER BY detail)
FROM (SELECT * FROM pairwise_repeats UNION ALL SELECT * FROM pointwise_repeats) GROUP BY pair_id
UNION ALL
SELECT pair_id, 'reversed', 'all ' || n_verdicts || ' pairwise verdicts prefer the rejected response'
FROM verdicts WHERE verdict = 'reversed'
UNION ALL
SELECT pair_id, 'tie', ties || ' of ' || n_verdicts || ' pairwise verdicts were ties'
FROM verdicts WHERE ties > 0
UNION ALL
SELECT pair_id, 'judge_failure', count(*) || ' failed: ' || string_agg(DISTINCT status || coalesce(' (' || left(error, 80) || ')', ''), '; ')
FROM failures GROUP BY pair_id
UNION ALL
SELECT pair_id, 'low_margin', 'margin ' || round(margin, 3) || ' < ' || $low_margin
FROM texts WHERE margin < $low_margin
UNION ALL
SELECT a.pair_id, 'contradiction', 'pair ' || min(b.pair_id) || ' prefers the other response'
FROM texts a JOIN texts b ON a.prompt = b.prompt AND a.chosen = b.rejected AND a.rejected = b.chosen
WHERE a.pair_id <> b.pair_id
GROUP BY a.pair_id
UNION ALL
SELECT pair_id, 'duplicate', CASE WHEN same THEN 'equal once normalised'
                                  ELSE 'word-trigram Jaccard ' || round(jaccard, 3) END
FROM (SELECT pair_id, same, len(list_intersect(sc, sr)) / nullif(len(list_distinct(list_concat(sc, sr))), 0) AS jaccard
      FROM shingled)
WHERE same OR jaccard >= $duplicate_jaccard
UNION ALL
SELECT pair_id, 'degenerate', string_agg(side || ': ' || why, '; ' ORDER BY side)
FROM degenerate GROUP BY pair_id
UNION ALL
SELECT pair_id, 'injection_attempt', string_agg(side, ' and ' ORDER BY side) || ' addresses the judge'
FROM injections GROUP BY pair_id
""".format(
    norm_prompt=NORMALISE.format("p.prompt_text"), norm_chosen=NORMALISE.format("ch.text"),
    norm_rejected=NORMALISE.format("rj.text"), shingles_c=SHINGLES.format("wc"), shingles_r=SHINGLES.format("wr"),
)


def compute_flags(store: Store, cfg: AuditConfig) -> dict:
    """Flag every stored pair into the temporary table ``audit_flags`` (needs candidate features);
    return {flag: count} for every flag, and the flags' fingerprint (it changes with any row)."""
    store.con.execute(FLAGS_SQL, {"low_margin": cfg.low_margin, "duplicate_jaccard": cfg.duplicate_jaccard,
                                  "repetition_max": cfg.repetition_max})
    counts = {flag: 0 for flag in FLAGS} | {r["flag"]: int(r["n"]) for r in store.query(
        "SELECT flag, count(*) AS n FROM audit_flags GROUP BY flag")}
    fingerprint = store.scalar("SELECT coalesce(bit_xor(hash(pair_id, flag, detail)), 0) FROM audit_flags")
    return {"counts": counts, "fingerprint": str(fingerprint)}


def fit_pairs_count(store: Store, blocking: list[str]) -> int:
    """Pairs with no blocking flag in ``audit_flags``."""
    return store.scalar("SELECT count(*) FROM pairs WHERE pair_id NOT IN "
                        "(SELECT pair_id FROM audit_flags WHERE list_contains(?, flag))", [list(blocking)])


def save_flags(store: Store, audit_id: str) -> int:
    """Store ``audit_flags`` as this audit's rows of ``pair_flags``; return how many were new."""
    before = store.scalar("SELECT count(*) FROM pair_flags")
    store.con.execute("INSERT INTO pair_flags SELECT ?, pair_id, flag, detail FROM audit_flags ON CONFLICT DO NOTHING",
                      [audit_id])
    return store.scalar("SELECT count(*) FROM pair_flags") - before


def by_stage(counts: dict[str, int]) -> dict[str, int]:
    """Flagged pairs per stage the flags concern (a pair with two flags counts twice)."""
    out: dict[str, int] = {}
    for flag, n in counts.items():
        out[FLAGS[flag][0]] = out.get(FLAGS[flag][0], 0) + n
    return out
