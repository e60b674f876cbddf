"""Stage 5, pairs: chosen/rejected candidates per prompt from the judge's scores.

best_worst: the top-scored candidate against the bottom-scored one, by pointwise score or, in
pairwise mode, by share of comparisons won. A pair whose two scores
are equal is a tie and dropped; one whose margin is below ``pairs.min_margin`` is dropped too.
Each drop is counted with its reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from prefcurate.audit.features import compute_features
from prefcurate.context import RunContext
from prefcurate.ids import content_id
from prefcurate.stats import StageStats
from prefcurate.store import Store

# A candidate's score: pointwise, the mean over repeats of its plain overall score; pairwise, its
# share of the comparisons it won, where a comparison whose verdicts (both orders, every repeat)
# do not all agree counts as a tie (half a win each).
POINTWISE_SCORES = """
SELECT prompt_id, candidate_id, avg(overall) AS score FROM v_scores
WHERE judge = $judge AND rubric_hash = $rubric_hash AND ($prompt_ids IS NULL OR list_contains($prompt_ids, prompt_id))
GROUP BY prompt_id, candidate_id
"""

PAIRWISE_SCORES = """
WITH comparisons AS (
    SELECT prompt_id, candidate_id AS a, candidate_b_id AS b,
           bool_and(winner = 'a') AS a_won, bool_and(winner = 'b') AS b_won
    FROM v_comparisons
    WHERE judge = $judge AND rubric_hash = $rubric_hash AND status = 'ok'
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

# Every scored candidate with its length and opener.
SCORED = """
WITH scored AS ({scores})
SELECT s.prompt_id, s.candidate_id, s.score, length(c.text) AS chars, f.opener
FROM scored s JOIN candidates c USING (candidate_id) LEFT JOIN candidate_features f USING (candidate_id)
ORDER BY s.prompt_id, s.candidate_id
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
    opener_penalized: int = 0  # candidates whose score the rubric's opener_penalty lowered
    p_chosen_longer: float | None = None  # of this run's pairs (length_balance moves it toward 0.5)
    p_chosen_longer_before_balance: float | None = None  # what best-worst alone would have given
    chars_gap: float | None = None  # mean characters of chosen minus rejected (length_balance shrinks it)
    chars_gap_before_balance: float | None = None  # what best-worst alone would have given


def run(store: Store, ctx: RunContext) -> PairStats:
    """Pairs of the run's prompts from the judge's scores (pointwise and hybrid modes) or win shares
    (pairwise mode, where ``pairs.min_margin`` is a difference of win shares, between 0 and 1)."""
    cfg, mode, rubric = ctx.config.pairs, ctx.config.judge.mode, ctx.require_rubric()
    compute_features(store, ctx.phrases)
    scores = PAIRWISE_SCORES if mode == "pairwise" else POINTWISE_SCORES
    groups: dict[str, list[dict]] = {}
    for r in store.query(SCORED.format(scores=scores), {"judge": ctx.judge, "rubric_hash": rubric.hash,
                                                         "prompt_ids": ctx.prompt_ids}):
        groups.setdefault(r["prompt_id"], []).append(r)
    stats = PairStats(prompts=len(groups))
    if mode != "pairwise":  # the rubric's penalties correct scores; win shares have no points to correct
        for members in groups.values():
            for m in members:
                m["score"] -= rubric.length_penalty * m["chars"] / 100
                if rubric.opener_penalty and m["opener"]:
                    m["score"] -= rubric.opener_penalty
                    stats.opener_penalized += 1
    strategy = cfg.strategy + ("+length_balance" if cfg.length_balance else "")
    rows, longer, plain_longer, gaps, plain_gaps = [], [], [], [], []
    for prompt_id, members in groups.items():
        chosen = min(members, key=lambda m: (-m["score"], m["candidate_id"]))
        worst = min(members, key=lambda m: (m["score"], _desc(m["candidate_id"])))
        margin = chosen["score"] - worst["score"]
        if len(members) < 2:
            stats.too_few_candidates += 1
            continue
        if margin <= TIE_EPSILON:
            stats.dropped_tie += 1
            continue
        if margin < cfg.min_margin:
            stats.dropped_low_margin += 1
            continue
        rejected = _balanced_rejected(chosen, members, cfg.min_margin, longer) if cfg.length_balance else worst
        for pick, share, gap in ((worst, plain_longer, plain_gaps), (rejected, longer, gaps)):
            gap.append(chosen["chars"] - pick["chars"])
            if pick["chars"] != chosen["chars"]:
                share.append(chosen["chars"] > pick["chars"])
        rows.append({
            "pair_id": content_id("pair", prompt_id, chosen["candidate_id"], rejected["candidate_id"], strategy),
            "prompt_id": prompt_id, "chosen_id": chosen["candidate_id"], "rejected_id": rejected["candidate_id"],
            "strategy": strategy, "chosen_score": chosen["score"], "rejected_score": rejected["score"],
            "margin": chosen["score"] - rejected["score"], "judge": ctx.judge, "rubric_hash": rubric.hash,
            "run_id": ctx.run_id,
        })
    stats.pairs = len(rows)
    stats.p_chosen_longer, stats.p_chosen_longer_before_balance = _mean(longer), _mean(plain_longer)
    stats.chars_gap, stats.chars_gap_before_balance = _mean(gaps), _mean(plain_gaps)
    stats.pairs_new = store.insert("pairs", rows)
    return stats


def _desc(text: str) -> tuple[int, ...]:
    return tuple(-ord(ch) for ch in text)


def _mean(values: list) -> float | None:
    return sum(values) / len(values) if values else None


def _balanced_rejected(chosen: dict, members: list[dict], min_margin: float, longer: list[bool]) -> dict:
    """The rejected candidate, among those at least ``min_margin`` below the chosen (the worst always is),
    that moves the running share of chosen-longer pairs toward 0.5 (a longer one when chosen responses
    have been longer more often than not, else a shorter one) and is the closest to the chosen in
    length: balancing the share alone would leave long chosen against much shorter rejected, a length
    signal DPO learns from the token counts. Without one on the wanted side, the closest in length."""
    fits = [m for m in members if m is not chosen and chosen["score"] - m["score"] >= max(min_margin, TIE_EPSILON)]
    want_longer_rejected = sum(longer) > len(longer) / 2
    wanted = [m for m in fits if (m["chars"] > chosen["chars"] if want_longer_rejected else m["chars"] < chosen["chars"])]
    return min(wanted or fits, key=lambda m: (abs(m["chars"] - chosen["chars"]), m["score"], m["candidate_id"]))
