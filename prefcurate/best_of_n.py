"""`prefcurate best-of-n CONFIG`: more inference instead of more training, measured.

For each prompt, keep the judge's best of its first N candidates (by sample index), and, where the
rubric has an answer check (numeric_answer or exact_answer), the majority answer of those N
(self-consistency). The scaling curve says, for N = 1, 2, 4, 8, 16, how often the kept answer passes
the rubric's hard checks and what the judge scored it: whether sampling more buys what training would.
Candidates imported and judged by any backend work too; without checks that apply, pass rates are None.
Each curve is stored (``best_of_n``); the HTML report plots the latest next to GRPO's pass rate at N = 1.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from prefcurate.audit.intervals import mean, metric
from prefcurate.checks import answer_of
from prefcurate.context import RunContext
from prefcurate.ids import content_id
from prefcurate.prompts import prompt_messages
from prefcurate.store import Store, utc_now

DEFAULT_NS = (1, 2, 4, 8, 16)

# Every candidate the run's judge scored (its mean over repeats), with whether it passes every hard check of
# the rubric that applies to it (NULL: none applies), in sample order per prompt.
SCORED_SQL = """
WITH scores AS (
    SELECT candidate_id, avg(overall) AS score FROM v_scores WHERE judge = $judge AND rubric_hash = $rubric_hash GROUP BY ALL
), hard AS (
    SELECT candidate_id, bool_and(passed) FILTER (WHERE passed IS NOT NULL) AS passed
    FROM candidate_checks WHERE list_contains($keys, check_key) AND hard GROUP BY candidate_id
)
SELECT c.prompt_id, c.candidate_id, c.sample_index, c.text, s.score, h.passed,
       p.metadata->>('$.' || $reference_key) IS NOT NULL AS has_reference
FROM candidates c JOIN scores s USING (candidate_id) JOIN prompts p USING (prompt_id)
LEFT JOIN hard h USING (candidate_id)
WHERE $split IS NULL OR p.metadata->>'$.split' = $split
ORDER BY c.prompt_id, c.sample_index, c.candidate_id
"""


@dataclass(frozen=True)
class Candidate:
    candidate_id: str
    sample_index: int
    score: float
    passed: bool | None
    answer: str | None  # what the rubric's answer check reads in it, normalised; None without one
    text: str
    has_reference: bool  # its prompt has a reference answer


def candidates_by_prompt(store: Store, ctx: RunContext, split: str | None = None) -> dict[str, list[Candidate]]:
    rubric = ctx.require_rubric()
    answer_check = next((c for c in rubric.checks if c.kind in ("numeric_answer", "exact_answer")), None)
    out: dict[str, list[Candidate]] = {}
    for r in store.query(SCORED_SQL, {"judge": ctx.judge, "rubric_hash": rubric.hash, "split": split,
                                      "keys": [c.key for c in rubric.checks], "reference_key": rubric.reference_key or ""}):
        answer = answer_of(answer_check, r["text"]) if answer_check else None
        out.setdefault(r["prompt_id"], []).append(Candidate(r["candidate_id"], r["sample_index"], r["score"], r["passed"],
                                                            answer, r["text"], bool(r["has_reference"])))
    return out


def best(cands: list[Candidate]) -> Candidate:
    """The judge's choice: the highest score, the earliest sample among equals."""
    return max(cands, key=lambda c: (c.score, -c.sample_index))


def majority(cands: list[Candidate]) -> Candidate:
    """The first candidate giving the most common answer (the earliest to reach it among equals); the first
    sample when none gives an answer (it then fails the answer check, as every sample does)."""
    counts = Counter(c.answer for c in cands if c.answer is not None)
    top = max(counts.values(), default=0)
    return next((c for c in cands if c.answer is not None and counts[c.answer] == top), cands[0])


def _rate(picked: list[Candidate]) -> float | None:
    known = [c.passed for c in picked if c.passed is not None]
    return float(np.mean(known)) if known else None


def curve(by_prompt: dict[str, list[Candidate]], ns: tuple[int, ...] = DEFAULT_NS) -> list[dict]:
    """Per N: the prompts with at least N candidates, the pass rate (with its 95% bootstrap interval; one
    pick per prompt) and mean score of the judge's best of their first N, and the pass rate of the majority
    answer."""
    out = []
    for n in ns:
        groups = [cands[:n] for cands in by_prompt.values() if len(cands) >= n]
        chosen = [best(g) for g in groups]
        voted = any(c.answer is not None for g in groups for c in g)  # the rubric has an answer check
        rate = metric("pass_rate", np.array([c.passed for c in chosen if c.passed is not None], dtype=float), mean)
        out.append({"n": n, "prompts": len(groups), "pass_rate": rate["pass_rate"], "pass_rate_ci": rate["pass_rate_ci"],
                    "mean_score": float(np.mean([c.score for c in chosen])) if chosen else None,
                    "majority_pass_rate": _rate([majority(g) for g in groups]) if voted else None})
    return out


def save_curve(store: Store, ctx: RunContext, points: list[dict], split: str | None) -> int:
    """Store the curve under the run's id (``best_of_n``; the latest of each judge, rubric and split is
    ``v_best_of_n``, which the HTML report plots)."""
    now = utc_now()
    return store.insert("best_of_n", [p | {"run_id": ctx.run_id, "judge": ctx.judge, "rubric_hash": ctx.require_rubric().hash,
                                           "split": split, "created_at": now} for p in points])


def kept(cands: list[Candidate]) -> Candidate:
    """What the snapshot keeps of a prompt's samples: the majority answer where the prompt has a reference
    answer and the rubric an answer check (self-consistency), else the judge's best."""
    voted = cands[0].has_reference and any(c.answer is not None for c in cands)
    return majority(cands) if voted else best(cands)


def freeze_kept(store: Store, ctx: RunContext, by_prompt: dict[str, list[Candidate]], n: int, name: str | None = None):
    """An SFT snapshot of what is kept of each prompt's first ``n`` samples (prompts with fewer are left out)."""
    from prefcurate.snapshot import freeze_sft  # the snapshot module brings the audit: only when freezing

    picks = {pid: kept(cands[:n]) for pid, cands in by_prompt.items() if len(cands) >= n}
    messages = prompt_messages(store, list(picks))
    rows = [{"messages": messages[pid] + [{"role": "assistant", "content": c.text}], "prompt_id": pid,
             "candidate_id": c.candidate_id, "score": c.score} for pid, c in sorted(picks.items())]
    test_fraction = ctx.config.snapshot.test_fraction
    manifest = {"snapshot_id": content_id("snapshot", "best_of_n", [r["candidate_id"] for r in rows], test_fraction),
                "name": name, "kind": "best_of_n", "best_of": n, "judges": [ctx.judge],
                "rubric_hashes": [ctx.require_rubric().hash], "run_id": ctx.run_id,
                "selection": "the majority answer where the prompt has a reference and the rubric an answer check, "
                             "else the judge's highest score (earliest sample among equals)",
                "split": {"by": "sha256 of prompt_id", "test_fraction": test_fraction}}
    return freeze_sft(store, rows, manifest)
