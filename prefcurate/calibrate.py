"""`prefcurate calibrate`: the judge against people, on pairs people labelled.

The configured judge (any backend) judges every labelled pair in both orders. Its verdict on a pair is
the one both orders agree on, and a tie when they disagree: a judge that flips with the order has no
preference there. Against the people's labels (a, b or tie) that gives the agreement on the pairs people
did not call a tie, Cohen's kappa over the three classes, both sides' rate of preferring the longer
response and the judge's swap consistency, each with a 95% interval that resamples prompts.

The verdicts are judgments (probe ``calibration``) whose ids derive from the pair's content, the judge
and the rubric, so a rerun, or another file with some of the same pairs, pays only for what is new.
One ``calibrations`` row is kept per judge, rubric hash and label set; the audit reads the latest one
of the store's judge, and the ``human_agreement`` and ``human_kappa`` gates read it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from prefcurate.audit.consistency import cohen_kappa
from prefcurate.audit.dataset import LabelledPair
from prefcurate.audit.intervals import mean, metric
from prefcurate.context import RunContext
from prefcurate.errors import PrefcurateError
from prefcurate.ids import content_id
from prefcurate.inputs import normalise_messages, prompt_id_for
from prefcurate.judge.render import pairwise_user_message, rubric_system_prompt
from prefcurate.judge.runner import Item, JudgeStats, judge_missing, pair_items, unjudged
from prefcurate.store import Store, utc_now

PROBE = "calibration"
LABELS = ("a", "b", "tie")
OUTPUT_TOKENS = 100  # a verdict and a sentence of rationale: what an estimate counts per call
CHARS_PER_TOKEN = 4


class ConfirmationNeeded(PrefcurateError):
    """A paid judge would be called without --yes and beyond --max-usd."""


@dataclass(frozen=True)
class Labelled:
    """A labelled pair as the judge sees it: ids derived from its content, the people's label."""

    pair: LabelledPair
    prompt_id: str
    a_id: str
    b_id: str
    items: tuple[Item, Item]  # shown a first (order ab), then b first (order ba)


def labelled_items(ctx: RunContext, pairs: list[LabelledPair], source: str = "labels") -> list[Labelled]:
    """Each labelled pair with the ids of its prompt and responses and its two judge items; a prompt that
    is not a string or a list of messages is refused naming ``source`` and its row."""
    out = []
    for p in pairs:
        messages = normalise_messages(p.prompt, source, p.where, "prompt")
        pid = prompt_id_for(messages)
        a_id, b_id = (content_id("candidate", pid, PROBE, text) for text in (p.a, p.b))
        rows = [{"prompt_id": pid, "messages": json.dumps(messages), "metadata": None, "a_id": a_id, "a_text": p.a,
                 "b_id": b_id, "b_text": p.b, "pair_order": order, "repeat_index": 0} for order in ("ab", "ba")]
        out.append(Labelled(p, pid, a_id, b_id, tuple(pair_items(ctx, rows, PROBE))))
    return out


def pending(store: Store, ctx: RunContext, labelled: list[Labelled]) -> list[Item]:
    """The verdicts not stored yet (or stored as an API error), each once."""
    wanted = {it.judgment_id: it for lab in labelled for it in lab.items}
    return unjudged(store, ctx, list(wanted.values()))


def estimate(ctx: RunContext, todo: list[Item]) -> dict:
    """Calls, tokens and cost (None: no price known, or a free backend) of judging ``todo``."""
    rubric, cfg = ctx.require_rubric(), ctx.config.judge
    system = len(rubric_system_prompt(rubric))
    tokens_in = sum(len(pairwise_user_message(rubric, it.task)) + system for it in todo) // CHARS_PER_TOKEN
    tokens_out = OUTPUT_TOKENS * len(todo)
    price = price_of(ctx)
    cost = None if price is None else (tokens_in * price.input + tokens_out * price.output) / 1e6
    if cost is not None and getattr(cfg, "batch", False):
        from prefcurate.judge.anthropic_backend import BATCH_DISCOUNT

        cost *= BATCH_DISCOUNT
    return {"calls": len(todo), "input_tokens": tokens_in, "output_tokens": tokens_out, "cost_usd": cost,
            "paid": cfg.backend == "anthropic" or cost is not None}


def price_of(ctx: RunContext):
    """The judge model's price per million tokens, or None (local judges; models without a known price)."""
    cfg = ctx.config.judge
    if cfg.backend == "anthropic":
        from prefcurate.judge.anthropic_backend import price_for

        return price_for(cfg.model, cfg.prices)
    return cfg.prices.get(cfg.model) if cfg.backend == "openai" else None


def check_spend(spend: dict, yes: bool, max_usd: float | None) -> None:
    """Refuse a paid judge's calls (an ``estimate``) unless --yes, or unless the estimate is within --max-usd."""
    if not spend["calls"] or not spend["paid"] or yes:
        return
    cost = spend["cost_usd"]
    if max_usd is not None and cost is not None and cost <= max_usd:
        return
    calls = (f"calibrate would make {spend['calls']} judge calls ({spend['input_tokens']:,} input and about "
             f"{spend['output_tokens']:,} output tokens)")
    if cost is None:
        raise ConfirmationNeeded(f"{calls} at a cost unknown (no price known for the model: add it under "
                                 "judge.prices); pass --yes to run them")
    over = f", more than --max-usd {max_usd:g}" if max_usd is not None else ""
    raise ConfirmationNeeded(f"{calls}, about ${cost:.2f}{over}; pass --yes to run them, or --max-usd above the estimate")


@dataclass(frozen=True)
class Plan:
    """What a calibration will do: the context it judges with, the labelled pairs, the calls to make and
    their estimate (calls, tokens, cost)."""

    ctx: RunContext
    labelled: list[Labelled]
    todo: list[Item]
    estimate: dict


def plan(store: Store, ctx: RunContext, pairs: list[LabelledPair], max_usd: float | None = None,
         source: str = "labels") -> Plan:
    """The calls a calibration on ``pairs`` needs (what is stored is not asked again) and their estimate;
    ``max_usd`` also caps what Claude may spend."""
    if max_usd is not None and ctx.config.judge.backend == "anthropic":
        judge = ctx.config.judge.model_copy(update={"max_usd": max_usd})
        ctx = ctx.model_copy(update={"config": ctx.config.model_copy(update={"judge": judge})})
    labelled = labelled_items(ctx, pairs, source)
    todo = pending(store, ctx, labelled)
    return Plan(ctx, labelled, todo, estimate(ctx, todo))


def run_calibration(store: Store, planned: Plan, source: str) -> dict:
    """Make the planned calls, then measure, store and return the calibration."""
    ctx, stats = planned.ctx, JudgeStats()
    judge_missing(store, ctx, planned.todo, stats, "calibrate")
    result = calibration_metrics(planned.labelled, verdicts_of(store, planned.labelled))
    result |= {"judge": ctx.judge, "rubric_hash": ctx.require_rubric().hash, "source": source,
               "calls": stats.judged + stats.failed, "cost_usd_this_run": stats.cost_usd}
    save(store, ctx, planned.labelled, result)
    return result


def verdicts_of(store: Store, labelled: list[Labelled]) -> dict[str, dict]:
    """The stored verdicts of the labelled pairs, by judgment id."""
    ids = [it.judgment_id for lab in labelled for it in lab.items]
    return {r["judgment_id"]: r for r in store.query(
        "SELECT judgment_id, status, winner, cost_usd FROM judgments WHERE list_contains(?, judgment_id)", [ids])}


def judge_label(ab: dict | None, ba: dict | None) -> str | None:
    """The judge's label of a pair from its verdicts in both orders (winner a or b names the response, not
    the position): the one they agree on, a tie when they disagree; None when either is missing or failed."""
    if not ab or not ba or ab["status"] != "ok" or ba["status"] != "ok":
        return None
    return ab["winner"] if ab["winner"] == ba["winner"] else "tie"


def calibration_kappa(rows: np.ndarray) -> float:
    """Cohen's kappa of the judge (column 0) and people (column 1), labels coded 0, 1, 2 (a, b, tie)."""
    return cohen_kappa(rows[:, 0], rows[:, 1])


def calibration_metrics(labelled: list[Labelled], verdicts: dict[str, dict]) -> dict:
    """n, agreement, kappa, judge_p_longer, human_p_longer, swap_consistency (each with _ci, _n, _clusters,
    _se), the confusion counts and the cost, over the pairs with both verdicts."""
    judged, failed = [], 0
    for lab in labelled:
        ab, ba = (verdicts.get(it.judgment_id) for it in lab.items)
        label = judge_label(ab, ba)
        if label is None:
            failed += 1
        else:
            judged.append((lab, label, ab["winner"] == ba["winner"]))
    code = {label: i for i, label in enumerate(LABELS)}
    judge = np.array([code[j] for _, j, _ in judged], dtype=int)
    human = np.array([code[lab.pair.label] for lab, _, _ in judged], dtype=int)
    longer = np.array([np.sign(len(lab.pair.a) - len(lab.pair.b)) for lab, _, _ in judged])  # 1: a is longer
    prompts = np.array([lab.prompt_id for lab, _, _ in judged], dtype=object)
    out = {"n": len(judged), "n_failed": failed}
    sided = human != code["tie"]
    out |= metric("agreement", (judge[sided] == human[sided]).astype(float), mean, clusters=prompts[sided])
    out |= metric("kappa", np.column_stack([judge, human]), calibration_kappa, clusters=prompts)
    for who, picks in (("judge", judge), ("human", human)):
        decided = (picks != code["tie"]) & (longer != 0)
        chose_a = picks[decided] == code["a"]
        out |= metric(f"{who}_p_longer", (chose_a == (longer[decided] > 0)).astype(float), mean, clusters=prompts[decided])
    out |= metric("swap_consistency", np.array([same for _, _, same in judged], dtype=float), mean, clusters=prompts)
    out["confusion"] = {h: {j: int(np.sum((human == code[h]) & (judge == code[j]))) for j in LABELS} for h in LABELS}
    out["cost_usd"] = sum(v["cost_usd"] or 0.0 for v in verdicts.values())  # each judgment once: equal pairs share theirs
    return out


def save(store: Store, ctx: RunContext, labelled: list[Labelled], result: dict) -> None:
    labels_hash = content_id("labels", [(lab.prompt_id, lab.a_id, lab.b_id, lab.pair.label) for lab in labelled])
    result["labels_hash"] = labels_hash
    result["calibration_id"] = cid = content_id("calibration", result["judge"], result["rubric_hash"], labels_hash)
    store.insert("calibrations", [{
        "calibration_id": cid, "judge": result["judge"], "rubric_hash": result["rubric_hash"], "labels_hash": labels_hash,
        "source": result["source"], "n": result["n"], "agreement": result["agreement"], "kappa": result["kappa"],
        "cost_usd": result["cost_usd"], "metrics": result, "run_id": ctx.run_id, "created_at": utc_now(),
    }], replace_if="true", key="calibration_id")


# The judge and rubric that made most of the store's pairs: the judge a snapshot's pairs come from.
STORE_JUDGE_SQL = "SELECT judge, rubric_hash FROM pairs GROUP BY ALL ORDER BY count(*) DESC, judge LIMIT 1"


def store_calibration(store: Store) -> dict:
    """The latest calibration of the store's judge (same judge and rubric hash): its numbers, or n 0 and
    what to run when there is none."""
    judges = store.query(STORE_JUDGE_SQL)
    if not judges:
        return {"judge": None, "rubric_hash": None, "n": 0, "how": "no pairs yet: nothing to calibrate"}
    judge, rubric_hash = judges[0]["judge"], judges[0]["rubric_hash"]
    rows = store.query("SELECT metrics FROM calibrations WHERE judge = ? AND rubric_hash = ? "
                       "ORDER BY created_at DESC LIMIT 1", [judge, rubric_hash])
    if not rows:
        return {"judge": judge, "rubric_hash": rubric_hash, "n": 0,
                "how": f"no calibration of {judge} with rubric {rubric_hash}: run `prefcurate calibrate CONFIG --labels "
                       "FILE` with the config that made the pairs (README: \"Calibrate the judge against people\")"}
    return json.loads(rows[0]["metrics"])
