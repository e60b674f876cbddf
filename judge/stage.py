"""Stage 3, judge: score every candidate of the run's prompts (pointwise and hybrid modes), or compare
every two candidates of a prompt in both orders (pairwise mode), ``judge.repeats`` times."""

from __future__ import annotations

from prefcurate.context import RunContext
from prefcurate.judge.runner import JudgeStats, item, judge_missing, pair_items, task_for
from prefcurate.store import Store

# Each candidate of the run's prompts, once per repeat.
CANDIDATES_SQL = """
SELECT c.candidate_id, c.prompt_id, c.text, p.messages, p.metadata, r.range AS repeat_index
FROM candidates c JOIN prompts p USING (prompt_id) CROSS JOIN range($repeats) r
WHERE $prompt_ids IS NULL OR list_contains($prompt_ids, c.prompt_id)
ORDER BY c.prompt_id, c.sample_index, c.candidate_id, repeat_index
"""
# Every two candidates of a prompt (the lower id as a), in both orders and every repeat.
COMPARISONS_SQL = """
SELECT a.prompt_id, p.messages, p.metadata, a.candidate_id AS a_id, a.text AS a_text,
       b.candidate_id AS b_id, b.text AS b_text, o.pair_order, r.range AS repeat_index
FROM candidates a JOIN candidates b ON b.prompt_id = a.prompt_id AND a.candidate_id < b.candidate_id
JOIN prompts p ON p.prompt_id = a.prompt_id
CROSS JOIN (VALUES ('ab'), ('ba')) o(pair_order) CROSS JOIN range($repeats) r
WHERE $prompt_ids IS NULL OR list_contains($prompt_ids, a.prompt_id)
ORDER BY a.prompt_id, a_id, b_id, repeat_index, o.pair_order
"""


def run(store: Store, ctx: RunContext) -> JudgeStats:
    cfg, rubric, stats = ctx.config.judge, ctx.require_rubric(), JudgeStats()
    scope = {"repeats": cfg.repeats, "prompt_ids": ctx.prompt_ids}
    if cfg.mode == "pairwise":
        items = pair_items(ctx, store.query(COMPARISONS_SQL, scope))
        judge_missing(store, ctx, items, stats, "comparing candidates in both orders")
    else:
        items = [item(ctx, task_for(r, rubric, (r["text"],)), r["prompt_id"], r["candidate_id"],
                      repeat_index=r["repeat_index"]) for r in store.query(CANDIDATES_SQL, scope)]
        judge_missing(store, ctx, items, stats, f"judging with {rubric.name}")
    return stats
