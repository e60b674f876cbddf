"""Verifiable checks in rubrics: each kind on good and bad answers, stored per candidate, reported by
the audit, and a pair whose chosen response fails a hard check flagged and left out of snapshots."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import RUBRIC, context, seed_scored, seeded_context

from prefcurate import checks, pairs
from prefcurate.audit.stage import full_audit
from prefcurate.rubric import Check, Rubric
from prefcurate.store import Store

SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}, "required": ["name"]}


@pytest.mark.parametrize("spec, good, bad", [
    ({"kind": "regex", "pattern": r"^\d+\.\s"}, "1. first\n2. second", "first, then second"),
    ({"kind": "not_regex", "pattern": r"(?i)as an ai"}, "Paris.", "As an AI, I think Paris."),
    ({"kind": "json"}, '```json\n{"a": 1}\n```', '{"a": 1,}'),
    ({"kind": "json_schema", "json_schema": SCHEMA}, '{"name": "Ada", "age": 36}', '{"age": "36"}'),
    ({"kind": "max_words", "limit": 5}, "Short and sweet.", "This answer runs on for far too many words."),
    ({"kind": "min_words", "limit": 3}, "Three whole words", "Two words"),
    ({"kind": "contains", "text": "Paris"}, "It is paris.", "It is Lyon."),
    ({"kind": "excludes", "text": "certainly"}, "Paris.", "Certainly! Paris."),
])
def test_each_check_kind_on_a_good_and_a_bad_answer(spec, good, bad):
    check = Check(name="c", **spec)
    assert checks.evaluate(check, good)[0] is True
    passed, why = checks.evaluate(check, bad)
    assert passed is False and why


def test_answers_against_the_prompts_reference():
    numeric, exact = Check(name="n", kind="numeric_answer"), Check(name="e", kind="exact_answer")
    assert checks.evaluate(numeric, "17 + 25 = 42", "42") == (True, "answer 42, reference 42")
    assert checks.evaluate(numeric, "The total is 1,234.0 apples.", "1234")[0] is True
    assert checks.evaluate(numeric, "It is 41, I think.", "42")[0] is False
    assert checks.evaluate(numeric, "I cannot say.", "42") == (False, "no number found")
    assert checks.evaluate(numeric, "42", None) == (None, "the prompt has no reference answer")
    assert checks.evaluate(exact, "Let me think.\nParis.", "paris")[0] is True
    assert checks.evaluate(Check(name="x", kind="exact_answer", pattern=r"Answer: (\w+)"), "Answer: Lyon\nbye", "Paris")[0] is False
    assert checks.evaluate(Check(name="t", kind="max_tokens", limit=10), "x", tokens=None)[0] is None
    assert checks.evaluate(Check(name="t", kind="max_tokens", limit=10), "x", tokens=12) == (False, "12 tokens")


def test_a_check_missing_what_its_kind_needs_is_refused():
    with pytest.raises(ValueError, match="needs `pattern`"):
        Check(name="c", kind="regex")
    with pytest.raises(ValueError, match="not a regular expression"):
        Check(name="c", kind="not_regex", pattern="(")


def test_a_chosen_answer_that_fails_a_hard_check_is_flagged_and_left_out(db, tmp_path):
    rubric = yaml.safe_load(RUBRIC.read_text()) | {"checks": [
        {"name": "right_number", "kind": "numeric_answer"},
        {"name": "short", "kind": "max_words", "limit": 6, "hard": False}]}
    (tmp_path / "checked.yaml").write_text(yaml.safe_dump(rubric))
    # Checks change no judgment: the rubric keeps its hash, and the seeded judge's pairs are its pairs.
    ctx = context(judge={"backend": "anthropic", "model": "test-judge", "rubric": str(tmp_path / "checked.yaml")})
    assert ctx.rubric.hash == seeded_context().rubric.hash == Rubric.model_validate(yaml.safe_load(RUBRIC.read_text())).hash
    with Store(db) as store:
        seed_scored(store, {f"what is {i} + 40?": [(f"{i} + 40 = {i + 40 + (i % 3 == 0)}", 8.0),
                                                   (f"It is {i + 30} or so, give or take a few more.", 3.0)]
                            for i in range(12)})
        store.execute("UPDATE prompts SET metadata = json_object('reference', "
                      "(regexp_extract(prompt_text, '(\\d+) \\+', 1)::INTEGER + 40)::VARCHAR)")
        pairs.run(store, seeded_context())
        stats = checks.run(store, ctx)
        assert (stats.candidates, stats.results) == (24, 48)
        assert checks.run(store, ctx).candidates == 0  # nothing twice
        m = full_audit(store, ctx)
        flagged = store.query("SELECT pair_id, detail FROM audit_flags WHERE flag = 'failed_check'")
        fit = store.scalar("SELECT count(*) FROM v_fit_pairs")
        results = store.query("SELECT name, passed FROM v_candidate_checks")
    wrong = [i for i in range(12) if i % 3 == 0]  # 0 + 40 = 41, 3 + 40 = 44, ...
    assert len(flagged) == m["flags"]["failed_check"] == len(wrong) == 4
    assert all(f["detail"].startswith("the chosen response fails right_number (answer") for f in flagged)
    assert fit == 12 - len(wrong)
    right = m["checks"]["right_number"]
    assert right["pass_rate"] == pytest.approx(8 / 24) and right["chosen_pass_rate"] == pytest.approx(8 / 12)
    assert m["checks"]["short"]["hard"] is False and m["checks"]["short"]["chosen_pass_rate"] == 1.0
    assert sum(r["passed"] is False for r in results if r["name"] == "short") == 12  # reported, never flagged
    assert json.dumps(m["checks"])  # in the audit's JSON


def test_the_arithmetic_task_is_seeded_and_its_answers_are_right():
    import importlib.util
    import re

    from conftest import ROOT

    from prefcurate.rubric import load_rubric

    spec = importlib.util.spec_from_file_location("make_arithmetic", ROOT / "data" / "prompts" / "make_arithmetic.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = module.arithmetic()
    committed = [json.loads(line) for line in (ROOT / "data" / "prompts" / "arithmetic.jsonl").read_text().splitlines()]
    assert rows == committed and len(rows) == 240 and len({r["prompt"] for r in rows}) == 240
    assert sum(r["metadata"]["split"] == "heldout" for r in rows) == 48
    right = load_rubric(ROOT / "rubrics" / "arithmetic.yaml").checks[0]
    for r in rows:
        a, op, b = re.search(r"(\d+) ([-+*]) (\d+)", r["prompt"]).groups()
        answer = {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op]
        assert r["metadata"]["reference"] == str(answer)
        assert checks.evaluate(right, f"The answer is {answer}.", r["metadata"]["reference"])[0] is True
        assert checks.evaluate(right, f"{answer + 1}", r["metadata"]["reference"])[0] is False
