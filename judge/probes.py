"""Counterfactual probes: re-judge perturbed candidates and measure how far the judge moves.

- opener_injection: "Certainly! Great question! " prepended to a pair's rejected response (when it
  has no opener); does its score rise, and does it overtake the chosen one?
- padding: content-free filler adding about half the length to the rejected response; the same.
- swap: the pair judged pairwise in both orders; do the two verdicts disagree?
- null_response: a content-free answer judged for the pair's prompt; what score does it get?
- template: both responses of the pair scored again under each of the rubric's ``variants``
  (paraphrases of its instructions); does the verdict change with the wording?

Probe judgments are stored like any other, with the probe's name, so a rerun repeats none.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from prefcurate.audit.features import opener_of
from prefcurate.context import RunContext
from prefcurate.ids import content_id
from prefcurate.judge.runner import JudgeStats, item, judge_missing, pair_items, task_for
from prefcurate.store import Store

INJECTED_OPENER = "Certainly! Great question! "
NULL_RESPONSE = "Certainly! Here is the answer."
FILLER = [
    "It is worth keeping in mind that this is an important question.",
    "There are many aspects to consider here, and each of them matters.",
    "In summary, the points above address the question that was asked.",
    "This answer has been written with care and attention to detail.",
]

# A fixed sample of this judge's pairs (any run's).
SAMPLE_SQL = """
SELECT v.pair_id, v.prompt_id, p.messages, p.metadata, v.chosen_id, v.rejected_id, v.chosen_text, v.rejected_text
FROM v_pairs v JOIN prompts p USING (prompt_id)
WHERE v.judge = ? AND v.rubric_hash = ?
ORDER BY md5(v.pair_id) LIMIT ?
"""


def template_probe(variant: str) -> str:
    """The probe name of one paraphrase: its own hash, so an edited paraphrase is judged afresh."""
    return "template:" + content_id("template", variant, length=8)


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


def run(store: Store, ctx: RunContext) -> ProbeStats:
    """Judge the perturbations of ``probes.kinds`` on a sample of ``probes.sample`` pairs."""
    rubric, probes = ctx.require_rubric(), ctx.config.probes
    pairs = store.query(SAMPLE_SQL, [ctx.judge, rubric.hash, probes.sample]) if probes.sample else []
    stats = ProbeStats(pairs=len(pairs))
    if ctx.config.judge.mode != "pairwise":  # score-shift probes need a pointwise judge
        judge_missing(store, ctx, score_probes(ctx, pairs), stats, "probing the judge")
    if "swap" in probes.kinds:
        rows = [pr | {"a_id": pr["chosen_id"], "a_text": pr["chosen_text"], "b_id": pr["rejected_id"],
                      "b_text": pr["rejected_text"], "pair_order": order, "repeat_index": 0}
                for pr in pairs for order in ("ab", "ba")]
        judge_missing(store, ctx, pair_items(ctx, rows, probe="swap"), stats, "probing order")
    return stats


def score_probes(ctx: RunContext, pairs: list[dict]) -> list:
    """The pointwise probes: each pair's rejected response with an opener injected (when it has none) or
    padded, and a content-free answer to each prompt."""
    rubric, kinds = ctx.require_rubric(), set(ctx.config.probes.kinds)
    perturbed = []  # (probe, row, candidate id, text)
    for pr in pairs:
        if "opener_injection" in kinds and opener_of(pr["rejected_text"], ctx.phrases) is None:
            perturbed.append(("opener_injection", pr, pr["rejected_id"], INJECTED_OPENER + pr["rejected_text"]))
        if "padding" in kinds:
            perturbed.append(("padding", pr, pr["rejected_id"], pad(pr["rejected_text"])))
    if "null_response" in kinds:
        perturbed += [("null_response", pr, f"null:{pid}", NULL_RESPONSE) for pid, pr in
                      {pr["prompt_id"]: pr for pr in pairs}.items()]
    items = [item(ctx, task_for(pr, rubric, (text,)), pr["prompt_id"], cand, probe=probe)
             for probe, pr, cand, text in perturbed]
    if "template" in kinds:
        items += template_items(ctx, pairs)
    return items


def template_items(ctx: RunContext, pairs: list[dict]) -> list:
    """Both responses of each pair, scored under each of the rubric's variants (once per candidate)."""
    rubric, items = ctx.require_rubric(), {}
    for variant in rubric.variants:
        for pr in pairs:
            for side in ("chosen", "rejected"):
                task = replace(task_for(pr, rubric, (pr[f"{side}_text"],)), instructions=variant)
                it = item(ctx, task, pr["prompt_id"], pr[f"{side}_id"], probe=template_probe(variant))
                items[it.judgment_id] = it
    return list(items.values())
