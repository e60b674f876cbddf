"""Pairs: best against worst per prompt; ties and margins below pairs.min_margin are dropped and counted."""

from __future__ import annotations

from conftest import seed_scored, seeded_context

from prefcurate import pairs
from prefcurate.store import Store


def build_pairs(store, opener_penalty: float = 0.0, length_penalty: float = 0.0, **settings):
    """The pairs stage over the seeded judge's scores, with ``settings`` as the config's pairs section
    and the rubric's penalties."""
    ctx = seeded_context(pairs=settings)
    rubric = ctx.rubric.model_copy(update={"opener_penalty": opener_penalty, "length_penalty": length_penalty})
    return pairs.run(store, ctx.model_copy(update={"rubric": rubric}))


def test_best_worst_with_ties_and_margins(db):
    with Store(db) as store:
        seed_scored(store, {
            "clear winner": [("good", 8.0), ("mid", 5.0), ("bad", 2.0)],
            "tie": [("a", 5.0), ("b", 5.0)],
            "close": [("a", 5.2), ("b", 5.0)],
            "alone": [("only", 7.0)],
            "failed judgment ignored": [("good", 9.0), ("broken", None), ("bad", 3.0)],
        })
        stats = build_pairs(store, min_margin=0.5)
        assert (stats.prompts, stats.pairs_new, stats.dropped_tie, stats.dropped_low_margin, stats.too_few_candidates) \
            == (5, 2, 1, 1, 1)
        rows = store.query("SELECT prompt_text, chosen_text, rejected_text, margin FROM v_pairs ORDER BY prompt_text")
        assert [(r["prompt_text"], r["chosen_text"], r["rejected_text"], r["margin"]) for r in rows] == [
            ("clear winner", "good", "bad", 6.0),
            ("failed judgment ignored", "good", "bad", 6.0),
        ]
        assert build_pairs(store, min_margin=0.5).pairs_new == 0


def test_min_margin_zero_keeps_close_pairs_but_never_ties(db):
    with Store(db) as store:
        seed_scored(store, {"tie": [("a", 5.0), ("b", 5.0)], "close": [("a", 5.2), ("b", 5.0)]})
        stats = build_pairs(store, min_margin=0.0)
        assert (stats.pairs_new, stats.dropped_tie) == (1, 1)


def test_length_balance_moves_p_chosen_longer_toward_half_without_losing_the_margin(db):
    with Store(db) as store:
        # Best is always the longest and worst the shortest; a short-ish mid candidate is also far enough below.
        seed_scored(store, {f"q{i}": [("long best answer " * 6, 9.0), ("mid", 6.0), ("a middling answer " * 8, 5.0),
                                      ("x", 2.0)] for i in range(10)})
        plain = build_pairs(store, min_margin=3.0)
        assert plain.p_chosen_longer == 1.0
        balanced = build_pairs(store, min_margin=3.0, length_balance=True)
        assert balanced.p_chosen_longer_before_balance == 1.0 and balanced.p_chosen_longer == 0.5
        rows = store.query("SELECT margin, rejected_text FROM v_pairs WHERE strategy = 'best_worst+length_balance'")
        assert len(rows) == 10 and min(r["margin"] for r in rows) >= 3.0


def test_length_balance_picks_the_rejected_closest_in_length(db):
    with Store(db) as store:
        # Best-worst pairs a 400-character answer with a 40-character one; balanced, the rejected is a
        # long answer too, shorter and longer in turn.
        seed_scored(store, {f"q{i}": [("b" * 400, 9.0), ("s" * 380, 5.0), ("l" * 420, 4.0), ("t" * 40, 2.0)]
                            for i in range(10)})
        plain = build_pairs(store, min_margin=3.0)
        assert plain.chars_gap == 360.0
        balanced = build_pairs(store, min_margin=3.0, length_balance=True)
        assert balanced.chars_gap_before_balance == 360.0
        assert balanced.p_chosen_longer == 0.5 and balanced.chars_gap == 0.0
        rows = store.query("SELECT DISTINCT length(rejected_text) AS n FROM v_pairs "
                           "WHERE strategy = 'best_worst+length_balance' ORDER BY n")
        assert [r["n"] for r in rows] == [380, 420]


def test_opener_penalty_lowers_scores_of_candidates_that_open_with_an_opener(db):
    with Store(db) as store:
        seed_scored(store, {"q": [("Certainly! Here is a fine answer.", 8.0), ("A fine answer.", 6.0), ("No.", 2.0)]})
        stats = build_pairs(store, opener_penalty=3.0, min_margin=0.5)
        assert stats.opener_penalized == 1
        row = store.query("SELECT chosen_text, chosen_score FROM v_pairs")[0]
        assert (row["chosen_text"], row["chosen_score"]) == ("A fine answer.", 6.0)


def test_length_penalty_lowers_scores_by_length(db):
    with Store(db) as store:
        # 3 points for about 390 characters more: at 1.5 points per 100 characters the short answer wins.
        seed_scored(store, {"q": [("long " * 80, 8.0), ("short answer", 5.0)]})
        build_pairs(store, length_penalty=1.5, min_margin=0.5)
        row = store.query("SELECT chosen_text, chosen_score, rejected_text FROM v_pairs")[0]
        assert (row["chosen_text"], row["rejected_text"]) == ("short answer", "long " * 80)
        assert row["chosen_score"] == 5.0 - 1.5 * len("short answer") / 100


def test_a_pair_a_penalty_ordered_against_the_judge_is_corrected_not_reversed(db):
    from conftest import seeded_context

    from prefcurate.audit.flags import DEFAULT_BLOCKING, compute_flags
    from prefcurate.ids import judgment_id

    with Store(db) as store:
        # The judge scores the opener answer 7 and the plain one 6; the penalty of 3 puts the plain one first.
        seed_scored(store, {"penalised": [("Certainly! An answer.", 7.0), ("A plain answer.", 6.0)],
                            "plain": [("A good answer.", 8.0), ("A bad answer.", 2.0)]})
        build_pairs(store, opener_penalty=3.0, min_margin=0.5)
        ctx = seeded_context()
        pairs = store.query("SELECT pair_id, prompt_id, chosen_id, rejected_id FROM pairs")
        for pr in pairs:  # the pairwise judge prefers the rejected response in both orders, on both pairs
            store.insert("judgments", [{
                "judgment_id": judgment_id(pr["chosen_id"], ctx.judge, ctx.rubric.hash, "pairwise", pr["rejected_id"], order),
                "prompt_id": pr["prompt_id"], "candidate_id": pr["chosen_id"], "candidate_b_id": pr["rejected_id"],
                "judge": ctx.judge, "rubric_hash": ctx.rubric.hash, "mode": "pairwise", "pair_order": order,
                "repeat_index": 0, "winner": "b", "status": "ok"} for order in ("ab", "ba")])
        verdicts = store.query("SELECT p.prompt_text, v.verdict FROM v_pair_verdicts v JOIN v_pairs p USING (pair_id) "
                               "ORDER BY 1")
        assert [(r["prompt_text"], r["verdict"]) for r in verdicts] == [("penalised", "corrected"), ("plain", "reversed")]
        counts = compute_flags(store, low_margin=0.0, duplicate_jaccard=0.9, repetition_max=0.5)["counts"]
        assert counts["corrected"] == 1 and counts["reversed"] == 1
        assert "reversed" in DEFAULT_BLOCKING and "corrected" not in DEFAULT_BLOCKING
