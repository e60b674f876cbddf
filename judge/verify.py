"""Stage 5 (hybrid mode), verify: judge each of the run's pairs pairwise, in both orders and every
repeat. A pair whose verdicts do not all prefer its chosen response is a tie, not a preference: the
audit flags it and snapshots leave it out (`v_pair_verdicts`)."""

from __future__ import annotations

from dataclasses import dataclass

from prefcurate.context import RunContext
from prefcurate.judge.runner import JudgeStats, judge_missing, pair_items
from prefcurate.store import Store

# This judge's pairs of the run's prompts, in both orders and every repeat: a is the chosen response.
PAIRS_SQL = """
SELECT v.pair_id, v.prompt_id, p.messages, p.metadata, v.chosen_id AS a_id, v.chosen_text AS a_text,
       v.rejected_id AS b_id, v.rejected_text AS b_text, o.pair_order, r.range AS repeat_index
FROM v_pairs v JOIN prompts p USING (prompt_id)
CROSS JOIN (VALUES ('ab'), ('ba')) o(pair_order) CROSS JOIN range($repeats) r
WHERE v.judge = $judge AND v.rubric_hash = $rubric_hash
  AND ($prompt_ids IS NULL OR list_contains($prompt_ids, v.prompt_id))
ORDER BY v.pair_id, repeat_index, o.pair_order
"""
OUTCOMES_SQL = """
SELECT verdict, count(*) AS n FROM v_pair_verdicts
WHERE judge = ? AND rubric_hash = ? AND list_contains(?, pair_id) GROUP BY verdict
"""


@dataclass
class VerifyStats(JudgeStats):
    consistent: int = 0  # pairs whose every verdict prefers the chosen response
    inconsistent: int = 0  # verdicts disagree across orders or repeats: a tie, not a preference
    reversed: int = 0  # every verdict prefers the rejected response, against the judge's own scores
    corrected: int = 0  # every verdict prefers the rejected response, as the judge's own scores did before a rubric penalty
    unverified: int = 0  # a verdict failed


def run(store: Store, ctx: RunContext) -> VerifyStats:
    rubric_hash, stats = ctx.require_rubric().hash, VerifyStats()
    rows = store.query(PAIRS_SQL, {"repeats": ctx.config.judge.repeats, "prompt_ids": ctx.prompt_ids,
                                   "judge": ctx.judge, "rubric_hash": rubric_hash})
    judge_missing(store, ctx, pair_items(ctx, rows), stats, "verifying pairs in both orders")
    pair_ids = sorted({r["pair_id"] for r in rows})
    outcome = {r["verdict"]: r["n"] for r in store.query(OUTCOMES_SQL, [ctx.judge, rubric_hash, pair_ids])}
    stats.consistent, stats.inconsistent = outcome.get("consistent", 0), outcome.get("inconsistent", 0)
    stats.reversed, stats.corrected = outcome.get("reversed", 0), outcome.get("corrected", 0)
    stats.unverified = outcome.get("failed", 0)
    return stats
