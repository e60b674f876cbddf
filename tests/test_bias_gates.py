"""A judge with a planted opener bonus, length bonus and first-position preference, served by the
local Messages-API server, is caught by the right gates with magnitudes close to the planted ones;
a judge without them passes."""

from __future__ import annotations

import hashlib
import json
import math
import random

import pytest
from conftest import RUBRIC, context

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


def run_audit(judge_scorer, candidates_file, tmp_path, monkeypatch, **sections) -> dict:
    """The audit of the candidates judged pointwise by ``judge_scorer`` (a Messages API scorer), with probes;
    ``sections`` over the test's config."""
    judge = {"backend": "anthropic", "model": "claude-sonnet-4-6", "mode": "pointwise"} | sections.pop("judge", {})
    ctx = context(**{"generator": {"backend": "none"}, "pairs": {"min_margin": 0.5}, "probes": {"sample": 40}} | sections,
                  judge=judge)
    with MessagesAPIServer(scorer=judge_scorer) as server, Store(tmp_path / "audited.duckdb") as store:
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
    # Each failure is significant across the gates, and first-position wins were tested by McNemar's exact
    # test on the comparisons whose two orders disagreed: every one of them went to the first-shown response.
    assert all(g["q"] < 0.05 for g in m["gates"].values() if g["status"] == "failed")
    position = m["position_bias"]
    assert position["second_twice"] == 0 and position["first_twice"] == position["n_flips"] > 10
    assert m["gates"]["first_position_win_rate"]["p"] == pytest.approx(2 * 0.5 ** position["first_twice"])
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
    assert statuses["opener_injection_shift"] == statuses["null_response_score"] == "passed"
    # 40 padding probes over 40 prompts and no flip: the audit could not have told a flip rate of 5% from
    # one of 14%, so the gate is inconclusive, and says about how many probes would: t[0.95] + t[0.8] with
    # 39 degrees of freedom (1.6849 + 0.8509, from the tables) standard errors of a share at 5%.
    padding = m["gates"]["padding_flip_rate"]
    assert padding["value"] == 0 and padding["n"] == padding["clusters"] == 40 and padding["status"] == "inconclusive"
    assert padding["mde"] == pytest.approx((1.6849 + 0.8509) * (0.05 * 0.95 / 40) ** 0.5, rel=1e-3)
    assert padding["n_needed"] == math.ceil(40 * (padding["mde"] / 0.05) ** 2) == 123 and padding["p"] > 0.5
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


PARAPHRASES = ["Judge the assistant's answer strictly and impartially, one criterion at a time.",
               "REVERSED: you are an impartial grader of an assistant's reply; score each criterion in turn."]


def wording_scorer(sensitive: bool):
    """Scores by quality; a ``sensitive`` judge reads the second paraphrase as asking for the opposite."""
    def score(body: dict) -> dict:
        system = " ".join(b["text"] for b in body["system"]) if isinstance(body["system"], list) else body["system"]
        value = quality(fenced_texts(body)[0])
        if sensitive and system.startswith("REVERSED"):
            value = 6 - value
        schema = tool_schema(body)["input_schema"]["properties"]
        return {name: value for name in schema if name != "rationale"} | {"rationale": "scored"}
    return score


@pytest.mark.parametrize("sensitive", [True, False])
def test_the_template_probe_scores_pairs_under_each_paraphrase(sensitive, candidates_file, tmp_path, monkeypatch):
    import yaml

    rubric = yaml.safe_load(RUBRIC.read_text()) | {"variants": PARAPHRASES}
    path = tmp_path / "rubric.yaml"
    path.write_text(yaml.safe_dump(rubric))
    m = run_audit(wording_scorer(sensitive), candidates_file, tmp_path, monkeypatch, judge={"rubric": str(path)},
                  probes={"sample": 40, "kinds": ["template"]})
    template, gate = m["probes"]["template"], m["gates"]["template_flip_rate"]
    assert template["n"] > 10 and template["wordings"] == 3  # the rubric's own words and two paraphrases
    if sensitive:
        # Reversed scores turn every probed pair around under the second paraphrase.
        assert template["flip_rate"] == 1.0 and template["kappa"] < 0.2 and gate["status"] == "failed"
    else:
        # Every verdict "chosen" under every wording: full agreement, with no spread of categories for Fleiss'
        # kappa to measure it against, so no kappa rather than a made-up one.
        assert template["flip_rate"] == 0.0 and template["kappa"] is None and gate["status"] != "failed"


def test_a_template_probe_without_paraphrases_is_refused_before_anything_runs(tmp_path):
    import yaml

    from prefcurate.errors import ConfigError

    rubric = yaml.safe_load(RUBRIC.read_text())
    del rubric["variants"]
    path = tmp_path / "plain.yaml"
    path.write_text(yaml.safe_dump(rubric))
    with pytest.raises(ConfigError, match=f"{path}: probes.kinds has template but the rubric has no variants; add"):
        context(probes={"kinds": ["template"]}, judge={"rubric": str(path)})


def test_a_judge_that_prefers_its_own_family_is_measured_against_another_judge(tmp_path, monkeypatch):
    """Candidates from two generators, one of the judge's family (claude) whose answers say "delve"; the
    judge adds 3 points for that word, another judge (mistral) does not. Pairs are the first judge's."""
    rng = random.Random(1)
    words = "the a model answer data point clear short long useful example result".split()
    lines = []
    for i in range(60):
        for generator, extra in (("anthropic:claude-haiku-4-5", " delve"), ("gpt-4o", "")):
            texts = [" ".join(rng.choice(words) for _ in range(rng.randint(8, 40))) + extra for _ in range(2)]
            lines.append(json.dumps({"prompt": f"Question {i}", "candidates": texts, "generator": generator}))
    (tmp_path / "c.jsonl").write_text("\n".join(lines) + "\n")

    def score(body: dict) -> dict:
        text = fenced_texts(body)[0]
        value = quality(text) + (3 if body["model"].startswith("claude") and "delve" in text else 0)
        return {name: value for name in tool_schema(body)["input_schema"]["properties"] if name != "rationale"} | {
            "rationale": "scored"}

    judges = {name: context(generator={"backend": "none"}, pairs={"min_margin": 0.5}, probes={"sample": 0},
                            judge={"backend": "anthropic", "model": name, "mode": "pointwise"})
              for name in ("claude-sonnet-4-6", "mistral-large-2")}
    with MessagesAPIServer(scorer=score) as server, Store(tmp_path / "s.duckdb") as store:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-key")
        import_candidates(store, str(tmp_path / "c.jsonl"))
        for ctx in judges.values():
            STAGE["judge"].run(store, ctx)
        STAGE["pairs"].run(store, judges["claude-sonnet-4-6"])
        m = STAGE["audit"].run(store, judges["claude-sonnet-4-6"]).metrics
        # Counted here without the audit's SQL: the mixed pairs, and the other judge's verdict on each.
        mixed = store.query("""SELECT c.generator LIKE '%claude%' AS own_chosen, mc.overall AS other_chosen,
                                      mr.overall AS other_rejected
                               FROM pairs p
                               JOIN candidates c ON c.candidate_id = p.chosen_id JOIN candidates r ON r.candidate_id = p.rejected_id
                               JOIN judgments mc ON mc.candidate_id = p.chosen_id AND mc.judge LIKE '%mistral%'
                               JOIN judgments mr ON mr.candidate_id = p.rejected_id AND mr.judge LIKE '%mistral%'
                               WHERE (c.generator LIKE '%claude%') <> (r.generator LIKE '%claude%')""")
        flagged = store.scalar("SELECT count(*) FROM v_flags WHERE flag = 'self_preferred'")
    own = m["self_preference"]
    assert own["n"] == len(mixed) > 20 and own["own_win_rate"] == sum(r["own_chosen"] for r in mixed) / len(mixed)
    assert own["own_win_rate"] > 0.8 and own["n_compared"] == own["n"]
    # The other judge prefers the claude side less often (best against worst, it often agrees): the excess
    # is the planted bonus at work, and its interval excludes no preference.
    other = [0.5 if r["other_chosen"] == r["other_rejected"] else float((r["other_chosen"] > r["other_rejected"]) == r["own_chosen"])
             for r in mixed]
    assert own["excess_win_rate"] == pytest.approx(own["own_win_rate"] - sum(other) / len(other))
    assert own["excess_win_rate"] > 0.1 and own["excess_win_rate_ci"][0] > 0
    # Every pair whose chosen side is the judge's own family is flagged, and the flag does not block.
    assert flagged == sum(r["own_chosen"] for r in mixed) and m["flags"]["self_preferred"] == flagged
    assert "self_preferred" not in m["blocking_flags"]
