"""A judge with a planted opener bonus, length bonus and first-position preference, served by the
local Messages-API server, is caught by the right gates with magnitudes close to the planted ones;
a judge without them passes."""

from __future__ import annotations

import hashlib
import json
import random

import pytest
from conftest import context

from prefcurate.audit.features import opener_of
from prefcurate.generate import import_candidates
from prefcurate.judge.probes import FILLER, INJECTED_OPENER, NULL_RESPONSE
from prefcurate.stages import STAGE
from prefcurate.store import Store
from prefcurate.testing.messages_api import MessagesAPIServer, fenced_texts, tool_schema

OPENER_BONUS = 3


def core(text: str) -> str:
    """What an honest judge looks at: the text without an injected opener or filler."""
    text = text.removeprefix(INJECTED_OPENER)
    for sentence in FILLER:
        text = text.replace(" " + sentence, "")
    return text


def quality(text: str) -> int:
    return 2 + int(hashlib.sha256(core(text).encode()).hexdigest(), 16) % 3  # 2..4


def scorer(biased: bool):
    def score(body: dict) -> dict:
        schema = tool_schema(body)["input_schema"]["properties"]
        if "winner" in schema:
            if biased:
                return {"winner": "A", "rationale": "the first one"}
            qa, qb = (quality(t) + len(core(t)) / 1e6 for t in fenced_texts(body))
            return {"winner": "A" if qa > qb else "B", "rationale": "better"}
        text = fenced_texts(body)[0]
        if biased:
            value = quality(text) + (OPENER_BONUS if opener_of(text) else 0) + min(2, len(text) // 150)
        else:
            value = 1 if text == NULL_RESPONSE else quality(text)
        return {name: value for name in schema if name != "rationale"} | {"rationale": "scored"}
    return score


@pytest.fixture
def candidates_file(tmp_path):
    rng = random.Random(0)
    words = "the a model answer data point clear short long useful example result".split()
    lines = []
    for i in range(80):
        cands = [" ".join(rng.choice(words) for _ in range(rng.randint(5, 90))) for _ in range(4)]
        cands[rng.randrange(4)] = "Sure, " + cands[0]
        lines.append(json.dumps({"prompt": f"Question {i}: explain point {i}.", "candidates": cands}))
    f = tmp_path / "c.jsonl"
    f.write_text("\n".join(lines) + "\n")
    return f


def run_audit(judge, candidates_file, tmp_path, monkeypatch) -> dict:
    """The audit of the candidates judged pointwise by ``judge`` (a Messages API scorer), with probes."""
    ctx = context(generator={"backend": "none"}, judge={"backend": "anthropic", "model": "claude-sonnet-4-6",
                                                         "mode": "pointwise"},
                  pairs={"min_margin": 0.5}, probes={"sample": 40})
    with MessagesAPIServer(scorer=judge) as server, Store(tmp_path / "audited.duckdb") as store:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-key")
        import_candidates(store, str(candidates_file))
        for stage in ("judge", "pairs", "probes"):
            STAGE[stage].run(store, ctx)
        return STAGE["audit"].run(store, ctx).metrics


def test_a_biased_judge_is_caught_by_the_right_gates(candidates_file, tmp_path, monkeypatch):
    m = run_audit(scorer(True), candidates_file, tmp_path, monkeypatch)
    gates = {name: g["status"] for name, g in m["gates"].items()}
    assert gates["opener_injection_shift"] == "failed" and gates["null_response_score"] == "failed"
    assert gates["first_position_win_rate"] == "failed" and gates["p_chosen_longer"] == "failed"
    assert m["passed"] is False
    # Every interval resampled prompts, and each gate says over how many.
    assert m["intervals"]["resampled"] == "prompt"
    assert all(0 < g["clusters"] <= g["n"] for g in m["gates"].values() if g["n"])
    # Magnitudes close to the planted ones.
    opener = m["probes"]["opener_injection"]
    # The injected opener also adds 27 characters, which sometimes tips the length bonus too.
    assert opener["n"] > 10 and opener["mean_shift"] == pytest.approx(OPENER_BONUS, abs=0.3)
    assert m["position_bias"]["first_position_win_rate"] == 1.0 and m["probes"]["swap"]["flip_rate"] == 1.0
    assert m["probes"]["null_response"]["mean_score"] > 5
    assert m["length_bias"]["p_chosen_longer"] > 0.75 and m["length_bias"]["lc_length_coef"] > 0


def test_a_judge_without_those_biases_passes(candidates_file, tmp_path, monkeypatch):
    m = run_audit(scorer(False), candidates_file, tmp_path, monkeypatch)
    statuses = {name: g["status"] for name, g in m["gates"].items()}
    assert "failed" not in statuses.values(), statuses
    assert m["passed"] is True
    assert statuses["opener_injection_shift"] == statuses["padding_flip_rate"] == statuses["null_response_score"] == "passed"
    assert m["probes"]["opener_injection"]["mean_shift"] == 0 and m["probes"]["swap"]["flip_rate"] == 0
    for g in m["gates"].values():
        if g["status"] == "inconclusive":
            assert g["n_needed"] is None or g["n_needed"] > g["n"]


def test_the_padding_probe_measures_a_length_bonus_per_100_characters(candidates_file, tmp_path, monkeypatch):
    from prefcurate.testing.planted import PlantedJudge

    # One point per 100 characters, as bench/bias_propagation.py plants it; whole-point scores round it.
    padding = run_audit(PlantedJudge(length_bonus=1.0), candidates_file, tmp_path, monkeypatch)["probes"]["padding"]
    assert padding["n"] > 10 and padding["shift_per_100_chars"] == pytest.approx(1.0, abs=0.2)
    lo, hi = padding["shift_per_100_chars_ci"]
    assert lo < 1.0 < hi
