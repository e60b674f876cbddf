"""Counterfactual probes: re-judge perturbed candidates and measure how far the judge moves.

- opener_injection: "Certainly! Great question! " prepended to a pair's rejected response (when it
  has no opener); does its score rise, and does it overtake the chosen one?
- padding: content-free filler adding about half the length to the rejected response; the same.
- swap: the pair judged pairwise in both orders; do the two verdicts disagree?
- null_response: a content-free answer judged for the pair's prompt; what score does it get?

Probe judgments are stored like any other, with the probe's name, so a rerun repeats none.
"""

from __future__ import annotations

from dataclasses import dataclass

from prefcurate.judge.rubric import load_rubric
from prefcurate.judge.stage import JudgeStats, _compare, _judge_all, _row, judge_name, task_for

from prefcurate.audit.features import opener_of
from prefcurate.config import Config
from prefcurate.ids import judgment_id
from prefcurate.store import Store

INJECTED_OPENER = "Certainly! Great question! "
NULL_RESPONSE = "Certainly! Here is the answer."
FILLER = [
    "It is worth keeping in mind that this is an important question.",
    "There are many aspects to consider here, and each of them matters.",
    "In summary, the points above address the question that was asked.",
    "This answer has been written with care and attention to detail.",
]

SAMPLE_SQL = """
SELECT v.pair_id, v.prompt_id, p.messages, p.metadata, v.chosen_id, v.rejected_id, v.chosen_text, v.rejected_text
FROM v_pairs v JOIN prompts p USING (prompt_id)
WHERE v.judge = ? AND v.rubric_hash = ?
ORDER BY md5(v.pair_id) LIMIT ?
"""


def pad(text: str) -> str:
    """The text with content-free sentences appended until it is about half as long again."""
    target, out, i = len(text) * 1.5, text.rstrip(), 0
    while len(out) < target or i == 0:
        out += " " + FILLER[i % len(FILLER)]
        i += 1
    return out


@dataclass
class ProbeStats(JudgeStats):
    pairs: int = 0  # pairs sampled


def run_probes(store: Store, cfg: Config, run_id: str | None = None, show_progress: bool = False) -> ProbeStats:
    """Judge the perturbations of ``cfg.probes.kinds`` on a sample of pairs."""
    jc = cfg.judge
    rubric, name = load_rubric(jc.rubric), judge_name(jc)
    pairs = store.query(SAMPLE_SQL, [name, rubric.hash, cfg.probes.sample]) if cfg.probes.sample else []
    stats = ProbeStats(pairs=len(pairs))
    kinds = set(cfg.probes.kinds)
    scoring = jc.mode != "pairwise"  # score-shift probes need a pointwise judge
    items = []
    for pr in pairs:
        if scoring and "opener_injection" in kinds and opener_of(pr["rejected_text"], cfg.audit.phrases()) is None:
            items.append(pr | {"probe": "opener_injection", "cand": pr["rejected_id"], "text": INJECTED_OPENER + pr["rejected_text"]})
        if scoring and "padding" in kinds:
            items.append(pr | {"probe": "padding", "cand": pr["rejected_id"], "text": pad(pr["rejected_text"])})
    if scoring and "null_response" in kinds:
        for prompt_id, pr in {pr["prompt_id"]: pr for pr in pairs}.items():
            items.append(pr | {"probe": "null_response", "cand": f"null:{prompt_id}", "text": NULL_RESPONSE})

    def jid(item: dict) -> str:
        return judgment_id(item["cand"], name, rubric.hash, probe=item["probe"])

    done = {r["judgment_id"] for r in store.query(
        "SELECT judgment_id FROM judgments WHERE judge = ? AND rubric_hash = ? AND probe IS NOT NULL "
        "AND status <> 'api_error'", [name, rubric.hash])}
    todo = [i for i in items if jid(i) not in done]
    stats.todo, stats.already_judged = len(todo), len(items) - len(todo)
    _judge_all(store, jc, rubric, todo, lambda i: task_for(i, rubric, (i["text"],)),
               lambda i, v: _row(v, rubric, name, run_id, prompt_id=i["prompt_id"], candidate_id=i["cand"],
                                 candidate_b_id=None, mode="pointwise", pair_order=None, repeat_index=0, probe=i["probe"]),
               jid, "pointwise", stats, "probing the judge", show_progress, run_id)
    if "swap" in kinds:
        rows = [pr | {"a_id": pr["chosen_id"], "a_text": pr["chosen_text"], "b_id": pr["rejected_id"],
                      "b_text": pr["rejected_text"], "pair_order": order, "repeat_index": 0}
                for pr in pairs for order in ("ab", "ba")]
        _compare(store, jc, rows, stats, "probing order", run_id, show_progress, probe="swap")
    return stats
