"""Stage 5, pairs: chosen/rejected candidates per prompt from the judge's scores.

best_worst: the top-scored candidate against the bottom-scored one, by pointwise score or, in
pairwise mode, by share of comparisons won. A pair whose two scores
are equal is a tie and dropped; one whose margin is below ``pairs.min_margin`` is dropped too.
Each drop is counted with its reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from prefcurate.config import PairsConfig
from prefcurate.ids import content_id
from prefcurate.stats import StageStats
from prefcurate.store import Store

# A candidate's score: pointwise, the mean over repeats of its plain overall score; pairwise, its
# share of the comparisons it won, where a comparison whose verdicts (both orders, every repeat)
# do not all agree counts as a tie (half a win each).
POINTWISE_SCORES = """
SELECT c.prompt_id, j.candidate_id, avg(j.overall) AS score
FROM judgments j JOIN candidates c USING (candidate_id)
WHERE j.judge = $judge AND j.rubric_hash = $rubric_hash AND j.mode = 'pointwise'
  AND j.probe IS NULL AND j.status = 'ok'
  AND ($prompt_ids IS NULL OR list_contains($prompt_ids, c.prompt_id))
GROUP BY c.prompt_id, j.candidate_id
"""

PAIRWISE_SCORES = """
WITH comparisons AS (
    SELECT prompt_id, candidate_id AS a, candidate_b_id AS b,
           bool_and(winner = 'a') AS a_won, bool_and(winner = 'b') AS b_won
    FROM judgments
    WHERE judge = $judge AND rubric_hash = $rubric_hash AND mode = 'pairwise' AND probe IS NULL AND status = 'ok'
      AND ($prompt_ids IS NULL OR list_contains($prompt_ids, prompt_id))
    GROUP BY prompt_id, candidate_id, candidate_b_id
), results AS (
    SELECT prompt_id, a AS candidate_id, CASE WHEN a_won THEN 1.0 WHEN b_won THEN 0.0 ELSE 0.5 END AS result
    FROM comparisons
    UNION ALL
    SELECT prompt_id, b, CASE WHEN b_won THEN 1.0 WHEN a_won THEN 0.0 ELSE 0.5 END FROM comparisons
)
SELECT prompt_id, candidate_id, avg(result) AS score FROM results GROUP BY prompt_id, candidate_id
"""

# The best and worst scored candidate per prompt (ties broken by id, so the choice is deterministic).
BEST_WORST = """
WITH scored AS ({scores}), ranked AS (
    SELECT *,
           row_number() OVER (PARTITION BY prompt_id ORDER BY score DESC, candidate_id) AS best_rank,
           row_number() OVER (PARTITION BY prompt_id ORDER BY score ASC, candidate_id DESC) AS worst_rank,
           count(*) OVER (PARTITION BY prompt_id) AS n_scored
    FROM scored
)
SELECT b.prompt_id, b.n_scored,
       b.candidate_id AS chosen_id, b.score AS chosen_score,
       w.candidate_id AS rejected_id, w.score AS rejected_score
FROM ranked b JOIN ranked w ON w.prompt_id = b.prompt_id AND w.worst_rank = 1
WHERE b.best_rank = 1
ORDER BY b.prompt_id
"""

TIE_EPSILON = 1e-9  # scores closer than this are equal (float noise from averaging)


@dataclass
class PairStats(StageStats):
    prompts: int = 0
    pairs: int = 0
    pairs_new: int = 0
    dropped_tie: int = 0
    dropped_low_margin: int = 0
    too_few_candidates: int = 0


def build_pairs(store: Store, cfg: PairsConfig, judge: str, rubric_hash: str, prompt_ids: list[str] | None = None,
                run_id: str | None = None, mode: str = "pointwise") -> PairStats:
    """Pairs from the scores of ``mode`` (pointwise and hybrid: pointwise scores; pairwise: win shares,
    so ``pairs.min_margin`` is then a difference of win shares, between 0 and 1)."""
    scores = PAIRWISE_SCORES if mode == "pairwise" else POINTWISE_SCORES
    groups = store.query(BEST_WORST.format(scores=scores),
                         {"judge": judge, "rubric_hash": rubric_hash, "prompt_ids": prompt_ids})
    stats = PairStats(prompts=len(groups))
    rows = []
    for g in groups:
        margin = g["chosen_score"] - g["rejected_score"]
        if g["n_scored"] < 2:
            stats.too_few_candidates += 1
        elif margin <= TIE_EPSILON:
            stats.dropped_tie += 1
        elif margin < cfg.min_margin:
            stats.dropped_low_margin += 1
        else:
            rows.append({
                "pair_id": content_id("pair", g["prompt_id"], g["chosen_id"], g["rejected_id"], cfg.strategy),
                "prompt_id": g["prompt_id"], "chosen_id": g["chosen_id"], "rejected_id": g["rejected_id"],
                "strategy": cfg.strategy, "chosen_score": g["chosen_score"], "rejected_score": g["rejected_score"],
                "margin": margin, "judge": judge, "rubric_hash": rubric_hash, "run_id": run_id,
            })
    stats.pairs = len(rows)
    stats.pairs_new = store.insert("pairs", rows)
    return stats
