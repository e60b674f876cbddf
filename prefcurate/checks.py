"""Stage 3, checks: the rubric's verifiable checks on every candidate, no model needed.

Where an answer can be checked (a format, a number, a JSON schema, a length), a function beats a judge.
A rubric lists its ``checks:`` (rubric.py's Check); each candidate's result of each check is a row of
``candidate_checks`` (passed true or false, or NULL where the check does not apply: no reference
answer, no token count), keyed by the check's content, so a changed check runs again and an unchanged
one never. The audit reports each check's pass rate and flags ``failed_check`` on a pair whose chosen
response fails a hard check.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from prefcurate.context import RunContext
from prefcurate.rubric import Check
from prefcurate.stats import StageStats
from prefcurate.store import Store, utc_now

WORD = re.compile(r"\w+")
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?")
FENCED_JSON = re.compile(r"^```(?:json)?\s*\n(.*)\n```$", re.S)

# Candidates that lack a result of one of the checks (what this stage computes).
TODO_SQL = """
SELECT c.candidate_id, c.text, c.completion_tokens, p.metadata
FROM candidates c JOIN prompts p USING (prompt_id)
WHERE (SELECT count(*) FROM candidate_checks k WHERE k.candidate_id = c.candidate_id AND list_contains($keys, k.check_key))
      < len($keys)
ORDER BY c.candidate_id
"""


@dataclass
class ChecksStats(StageStats):
    candidates: int = 0
    results: int = 0
    failed: int = 0


def _normal(text: str, ignore_case: bool) -> str:
    text = " ".join(text.split()).strip().rstrip(".")
    return text.casefold() if ignore_case else text


def _answer(check: Check, text: str, default: re.Pattern | None) -> str | None:
    """Where the answer is: the pattern's first group (or match), else the last number (``default``), else
    the last non-empty line."""
    if check.pattern:
        found = re.search(check.pattern, text, re.S | re.M)
        return (found.group(1) if found and found.groups() else found.group(0) if found else None)
    if default is not None:
        numbers = default.findall(text)
        return numbers[-1] if numbers else None
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else None


def answer_of(check: Check, text: str) -> str | None:
    """The answer an exact_answer or numeric_answer check reads in a response, normalised so that equal
    answers compare equal (a number as a float's text, else lower-cased text without a final period);
    None when it finds none. Majority voting counts these."""
    if check.kind == "numeric_answer":
        found = _answer(check, text, NUMBER)
        try:
            return None if found is None else repr(float(found.replace(",", "")))
        except ValueError:
            return None
    found = _answer(check, text, None)
    return None if found is None else _normal(found, check.ignore_case)


def _parse_json(text: str):
    body = text.strip()
    fenced = FENCED_JSON.match(body)
    return json.loads(fenced.group(1) if fenced else body)


def evaluate(check: Check, text: str, reference: str | None = None, tokens: int | None = None) -> tuple[bool | None, str]:
    """(passed, why): None where the check does not apply to this candidate."""
    kind = check.kind
    if kind in ("regex", "not_regex"):
        found = re.search(check.pattern, text, re.S | re.M) is not None
        return found == (kind == "regex"), f"{'matches' if found else 'does not match'} {check.pattern}"
    if kind in ("json", "json_schema"):
        return _json_check(check, text)
    if kind in ("max_words", "min_words"):
        n = len(WORD.findall(text))
        return (n <= check.limit if kind == "max_words" else n >= check.limit), f"{n} words"
    if kind == "max_tokens":
        return (None, "no token count (imported)") if tokens is None else (tokens <= check.limit, f"{tokens} tokens")
    if kind in ("contains", "excludes"):
        has = _normal(check.text, check.ignore_case) in _normal(text, check.ignore_case)
        return has == (kind == "contains"), f"{'contains' if has else 'does not contain'} {check.text!r}"
    if reference is None:
        return None, "the prompt has no reference answer"
    return (_numeric if kind == "numeric_answer" else _exact)(check, text, reference)


def _json_check(check: Check, text: str) -> tuple[bool, str]:
    try:
        data = _parse_json(text)
    except ValueError as e:
        return False, f"not JSON: {str(e).splitlines()[0]}"
    if check.kind == "json":
        return True, "valid JSON"
    import jsonschema

    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(check.json_schema).iter_errors(data))
    return (True, "matches the schema") if error is None else (False, f"schema: {error.message[:200]}")


def _exact(check: Check, text: str, reference: str) -> tuple[bool, str]:
    answer = _answer(check, text, None)
    if answer is None:
        return False, "no answer found"
    same = _normal(answer, check.ignore_case) == _normal(reference, check.ignore_case)
    return same, f"answer {answer.strip()[:80]!r}, reference {reference[:80]!r}"


def _numeric(check: Check, text: str, reference: str) -> tuple[bool | None, str]:
    try:
        expected = float(reference.replace(",", ""))
    except ValueError:
        return None, f"the reference {reference[:40]!r} is not a number"
    answer = _answer(check, text, NUMBER)
    try:
        got = float(answer.replace(",", "")) if answer is not None else None
    except ValueError:
        got = None
    if got is None:
        return False, "no number found"
    return abs(got - expected) <= check.tolerance * max(1.0, abs(expected)), f"answer {got:g}, reference {expected:g}"


def run(store: Store, ctx: RunContext) -> ChecksStats:
    """Run every check of the rubric on every candidate that lacks its result."""
    rubric, stats = ctx.require_rubric(), ChecksStats()
    keys = [c.key for c in rubric.checks]
    todo = store.query(TODO_SQL, {"keys": keys})
    rows = []
    for cand in todo:
        reference = rubric.reference_in(json.loads(cand["metadata"]) if cand["metadata"] else None)
        for check in rubric.checks:
            passed, why = evaluate(check, cand["text"], reference, cand["completion_tokens"])
            rows.append({"candidate_id": cand["candidate_id"], "check_key": check.key, "name": check.name,
                         "kind": check.kind, "hard": check.hard, "passed": passed, "detail": why, "run_id": ctx.run_id,
                         "created_at": utc_now()})
            stats.failed += passed is False
    stats.candidates, stats.results = len(todo), store.insert("candidate_checks", rows)
    return stats
