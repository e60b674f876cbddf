"""`prefcurate review`: people label the store's pairs, and their labels say how far to trust the judge.

This module is the part without a web server: which pairs to show (a sample stratified over flagged and
unflagged pairs and over margins, so a few dozen labels say something about the whole store), which
one a reviewer sees next, how a label is checked and stored (``human_labels``: one row per pair and
reviewer, in the pair's terms: the person preferred the ``chosen`` response, the ``rejected`` one, called
a ``tie``, or skipped it), the judge's agreement with people and people's with each other, and the
labels as JSONL. review_app.py serves it as a page.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from prefcurate.audit.intervals import mean, metric, ratio
from prefcurate.errors import InputError, PrefcurateError
from prefcurate.ids import content_id, unit_interval
from prefcurate.store import Store, utc_now

if TYPE_CHECKING:
    from prefcurate.audit.dataset import LabelledPair

Strategy = Literal["stratified", "random"]
LABELS = ("chosen", "rejected", "tie", "skip")
MAX_NOTE, MAX_REVIEWER = 2000, 100

# The sample: by default one pair from each stratum (flagged by the latest audit or not, times the
# quartile of its margin) in turn, each stratum in a seeded random order; "random" ignores the strata.
SAMPLE_SQL = """
WITH flagged AS (SELECT DISTINCT pair_id FROM v_flags WHERE blocks),
strata AS (
    SELECT pair_id, pair_id IN (SELECT pair_id FROM flagged) AS flagged, ntile(4) OVER (ORDER BY margin, pair_id) AS quartile
    FROM pairs
)
SELECT pair_id FROM (
    SELECT pair_id, row_number() OVER (PARTITION BY CASE WHEN $stratified THEN (flagged, quartile) END
                                       ORDER BY hash(pair_id, $seed)) AS turn
    FROM strata
)
ORDER BY turn, hash(pair_id, $seed) LIMIT $n
"""
PAIR_SQL = """
SELECT pr.pair_id, p.messages, v.chosen_text, v.rejected_text
FROM pairs pr JOIN v_pairs v USING (pair_id) JOIN prompts p ON p.prompt_id = pr.prompt_id
WHERE pr.pair_id = ?
"""


class LabelRefused(PrefcurateError):
    """A label the page may not store: an unknown pair, an unknown label, a note too long."""


@dataclass(frozen=True)
class Shown:
    """A pair as a reviewer sees it: the prompt, and its two responses left and right."""

    pair_id: str
    messages: list[dict]
    left: str
    right: str
    shown_left: str  # "chosen" or "rejected": which response is on the left


def sample_pairs(store: Store, n: int, strategy: Strategy = "stratified", seed: int = 0) -> list[str]:
    """``n`` pair ids to label (every pair when the store has fewer)."""
    return [r["pair_id"] for r in store.query(SAMPLE_SQL, {"n": n, "seed": seed, "stratified": strategy == "stratified"})]


def chosen_left(pair_id: str, reviewer: str) -> bool:
    """Whether the chosen response goes on the left: a coin per pair and reviewer, the same on every visit."""
    return unit_interval(f"review:{pair_id}:{reviewer}") < 0.5


def labelled_by(store: Store, reviewer: str, pair_ids: list[str]) -> set[str]:
    return {r["pair_id"] for r in store.query(
        "SELECT pair_id FROM human_labels WHERE reviewer = ? AND list_contains(?, pair_id)", [reviewer, pair_ids])}


def next_pair(store: Store, sample: list[str], reviewer: str) -> Shown | None:
    """The first pair of the sample this reviewer has not labelled, or None when none is left."""
    done = labelled_by(store, reviewer, sample)
    todo = next((p for p in sample if p not in done), None)
    return None if todo is None else show(store, todo, reviewer)


def show(store: Store, pair_id: str, reviewer: str) -> Shown:
    r = store.query(PAIR_SQL, [pair_id])[0]
    left = chosen_left(pair_id, reviewer)
    return Shown(pair_id, json.loads(r["messages"]), r["chosen_text"] if left else r["rejected_text"],
                 r["rejected_text"] if left else r["chosen_text"], "chosen" if left else "rejected")


def clean_reviewer(reviewer: str) -> str:
    name = " ".join(reviewer.split())
    if not name or len(name) > MAX_REVIEWER:
        raise LabelRefused(f"a reviewer's name must have 1 to {MAX_REVIEWER} characters")
    return name


def record_label(store: Store, sample: list[str], pair_id: str, reviewer: str, side: str, note: str = "") -> str:
    """Store a reviewer's label of a pair from the side they picked (left, right, tie or skip) and return it in
    the pair's terms (chosen, rejected, tie or skip). The pair must be in the sample; relabelling replaces."""
    reviewer = clean_reviewer(reviewer)
    if pair_id not in sample:
        raise LabelRefused(f"pair {pair_id!r} is not among the pairs under review")
    if side not in ("left", "right", "tie", "skip"):
        raise LabelRefused(f"label {side!r} is none of left, right, tie, skip")
    if len(note) > MAX_NOTE:
        raise LabelRefused(f"a note may have at most {MAX_NOTE} characters")
    shown_left = "chosen" if chosen_left(pair_id, reviewer) else "rejected"
    other = "rejected" if shown_left == "chosen" else "chosen"
    label = {"left": shown_left, "right": other}.get(side, side)
    store.insert("human_labels", [{"label_id": content_id("human label", pair_id, reviewer), "pair_id": pair_id,
                                   "reviewer": reviewer, "label": label, "shown_left": shown_left,
                                   "note": note.strip() or None, "created_at": utc_now()}],
                 replace_if="true", key="label_id")
    return label


def judge_said(store: Store, pair_id: str) -> dict:
    """What the judge decided on a pair and what the latest audit flagged on it (shown once a person has
    labelled it)."""
    return store.query("SELECT margin, judge, chosen_score, rejected_score, (SELECT string_agg(flag, ', ' ORDER BY flag) "
                       "FROM v_flags f WHERE f.pair_id = pr.pair_id) AS flags FROM pairs pr WHERE pair_id = ?", [pair_id])[0]


# Every label that takes a side or calls a tie, with its prompt (the bootstrap's cluster).
LABELS_SQL = """
SELECT h.pair_id, h.reviewer, h.label, pr.prompt_id FROM human_labels h JOIN pairs pr USING (pair_id)
WHERE h.label <> 'skip' ORDER BY h.pair_id, h.reviewer
"""


def review_agreement(store: Store) -> dict:
    """judge_agreement: the share of people's labels that took a side and took the judge's (chosen); and
    reviewer_agreement: over pairs two or more people labelled, the share of pairs of their labels that
    agree (a tie agrees only with a tie); each with its interval, resampling prompts."""
    rows = store.query(LABELS_SQL)
    sided = [r for r in rows if r["label"] != "tie"]
    out = {"n_labels": len(rows), "n_pairs": len({r["pair_id"] for r in rows}),
           "n_reviewers": len({r["reviewer"] for r in rows})}
    out |= metric("judge_agreement", np.array([r["label"] == "chosen" for r in sided], dtype=float), mean,
                  clusters=np.array([r["prompt_id"] for r in sided], dtype=object))
    by_pair: dict[str, list[dict]] = {}
    for r in rows:
        by_pair.setdefault(r["pair_id"], []).append(r)
    shared = [labels for labels in by_pair.values() if len(labels) >= 2]
    units = np.array([_agreeing_pairs([r["label"] for r in labels]) for labels in shared], dtype=float).reshape(-1, 2)
    out |= metric("reviewer_agreement", units, ratio, clusters=np.array([ls[0]["prompt_id"] for ls in shared], dtype=object))
    return out


def _agreeing_pairs(labels: list[str]) -> tuple[int, int]:
    """(pairs of labels that agree, pairs of labels) among one pair's labels."""
    n = len(labels)
    return sum(k * (k - 1) // 2 for k in (labels.count(x) for x in set(labels))), n * (n - 1) // 2


EXPORT_SQL = """
SELECT h.pair_id, p.messages, v.chosen_text AS chosen, v.rejected_text AS rejected, h.label, h.reviewer, h.shown_left,
       h.note, h.created_at, pr.judge, pr.margin
FROM human_labels h JOIN pairs pr USING (pair_id) JOIN v_pairs v USING (pair_id) JOIN prompts p ON p.prompt_id = pr.prompt_id
ORDER BY h.created_at, h.pair_id, h.reviewer
"""


def export_labels(store: Store, path: str) -> int:
    """Write every label as a JSON line (prompt messages, chosen and rejected text, label, reviewer, ...), readable
    by `calibrate --prompt-col prompt --a-col chosen --b-col rejected --label-col label --a-wins chosen --b-wins
    rejected --tie tie` once the skips are left out; return how many were written."""
    rows = store.query(EXPORT_SQL)
    try:
        with open(path, "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps({"prompt": json.loads(r.pop("messages")), **r}, default=str, ensure_ascii=False) + "\n")
    except OSError as e:
        raise InputError(path, None, f"cannot write the labels: {e.strerror}") from None
    return len(rows)


def reviewed_pairs(store: Store) -> list[LabelledPair]:
    """Each labelled pair once, with the label most of its reviewers gave (a tie when the most given are
    level), as `calibrate --from-reviews` reads them: a is the chosen response."""
    from prefcurate.audit.dataset import LabelledPair

    by_pair: dict[str, dict] = {}
    for r in store.query(EXPORT_SQL):
        if r["label"] != "skip":
            by_pair.setdefault(r["pair_id"], r | {"labels": []})["labels"].append(r["label"])
    out = []
    for where, r in enumerate(by_pair.values(), 1):
        counts = {x: r["labels"].count(x) for x in ("chosen", "rejected", "tie")}
        top = max(counts.values())
        winners = [x for x, k in counts.items() if k == top]
        label = {"chosen": "a", "rejected": "b"}.get(winners[0], "tie") if len(winners) == 1 else "tie"
        out.append(LabelledPair(json.loads(r["messages"]), r["chosen"], r["rejected"], label, where))
    return out
