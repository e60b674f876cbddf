"""Pairs: best against worst per prompt; ties and margins below pairs.min_margin are dropped and counted."""

from __future__ import annotations

from conftest import JUDGE, RUBRIC_HASH, seed_scored

from prefcurate.config import PairsConfig
from prefcurate.pairs import build_pairs
from prefcurate.store import Store


def test_best_worst_with_ties_and_margins(db):
    with Store(db) as store:
        seed_scored(store, {
            "clear winner": [("good", 8.0), ("mid", 5.0), ("bad", 2.0)],
            "tie": [("a", 5.0), ("b", 5.0)],
            "close": [("a", 5.2), ("b", 5.0)],
            "alone": [("only", 7.0)],
            "failed judgment ignored": [("good", 9.0), ("broken", None), ("bad", 3.0)],
        })
        stats = build_pairs(store, PairsConfig(min_margin=0.5), JUDGE, RUBRIC_HASH, run_id="r1")
        assert (stats.prompts, stats.pairs_new, stats.dropped_tie, stats.dropped_low_margin, stats.too_few_candidates) \
            == (5, 2, 1, 1, 1)
        rows = store.query("SELECT prompt_text, chosen_text, rejected_text, margin FROM v_pairs ORDER BY prompt_text")
        assert [(r["prompt_text"], r["chosen_text"], r["rejected_text"], r["margin"]) for r in rows] == [
            ("clear winner", "good", "bad", 6.0),
            ("failed judgment ignored", "good", "bad", 6.0),
        ]
        assert build_pairs(store, PairsConfig(min_margin=0.5), JUDGE, RUBRIC_HASH).pairs_new == 0


def test_min_margin_zero_keeps_close_pairs_but_never_ties(db):
    with Store(db) as store:
        seed_scored(store, {"tie": [("a", 5.0), ("b", 5.0)], "close": [("a", 5.2), ("b", 5.0)]})
        stats = build_pairs(store, PairsConfig(min_margin=0.0), JUDGE, RUBRIC_HASH)
        assert (stats.pairs_new, stats.dropped_tie) == (1, 1)
