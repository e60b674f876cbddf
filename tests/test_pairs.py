"""Pairs: best against worst per prompt; ties and margins below pairs.min_margin are dropped and counted."""

from __future__ import annotations

from conftest import seed_scored, seeded_context

from prefcurate import pairs
from prefcurate.store import Store


def build_pairs(store, opener_penalty: float = 0.0, **settings):
    """The pairs stage over the seeded judge's scores, with ``settings`` as the config's pairs section."""
    ctx = seeded_context(pairs=settings)
    return pairs.run(store, ctx.model_copy(update={"rubric": ctx.rubric.model_copy(update={"opener_penalty": opener_penalty})}))


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


def test_opener_penalty_lowers_scores_of_candidates_that_open_with_an_opener(db):
    with Store(db) as store:
        seed_scored(store, {"q": [("Certainly! Here is a fine answer.", 8.0), ("A fine answer.", 6.0), ("No.", 2.0)]})
        stats = build_pairs(store, opener_penalty=3.0, min_margin=0.5)
        assert stats.opener_penalized == 1
        row = store.query("SELECT chosen_text, chosen_score FROM v_pairs")[0]
        assert (row["chosen_text"], row["chosen_score"]) == ("A fine answer.", 6.0)
