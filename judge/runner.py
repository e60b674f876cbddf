"""What every judging stage shares: the judge backend for a run, the judgments row of a verdict, and
judging a list of items with their verdicts stored as they come back.

A judgment's id derives from what was judged, by which judge and rubric, in which mode, order and
repeat, and under which probe, so every stage judges only what is missing, plus what failed with an
API error last time (whose rows are then overwritten). Verdicts are written ``judge.write_batch`` at a
time and at least twice a second, so a crash repays only the calls in flight.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from prefcurate.context import RunContext
from prefcurate.errors import BudgetExhausted
from prefcurate.ids import judgment_id
from prefcurate.judge.verdict import JudgeTask, Verdict
from prefcurate.progress import track
from prefcurate.rubric import Rubric
from prefcurate.stats import StageStats
from prefcurate.store import Store
from prefcurate.writer import BufferedWriter

log = logging.getLogger("prefcurate")

# Pairwise verdicts name the response: a is the one shown first in order ab, b the other.
WINNER_BY_POSITION = {"ab": {"first": "a", "second": "b", "tie": "tie"},
                      "ba": {"first": "b", "second": "a", "tie": "tie"}}
# Judgments that need no new call: everything stored but API errors, which are asked again.
DONE_SQL = """
SELECT judgment_id FROM judgments
WHERE judge = $judge AND rubric_hash = $rubric_hash AND mode = $mode AND status <> 'api_error'
"""
PENDING_BATCHES_SQL = """
SELECT batch_id FROM judge_batches
WHERE judge = ? AND rubric_hash = ? AND mode = ? AND status = 'submitted' ORDER BY created_at
"""


@dataclass
class JudgeStats(StageStats):
    todo: int = 0
    already_judged: int = 0
    judged: int = 0
    failed: int = 0
    cost_usd: float = 0.0


@dataclass
class Item:
    """One judgment to make: its id, what the judge is shown, and the identity of its row."""

    judgment_id: str
    task: JudgeTask
    identity: dict  # prompt_id, candidate_id, candidate_b_id, mode, pair_order, repeat_index, probe


def make_judge(ctx: RunContext):
    """The configured judge backend, with the run's rubric."""
    cfg, rubric = ctx.config.judge, ctx.require_rubric()
    if cfg.backend == "anthropic":
        from prefcurate.judge.anthropic_backend import AnthropicJudge

        return AnthropicJudge(cfg, rubric)
    if cfg.backend == "openai":
        from prefcurate.judge.openai_backend import OpenAIJudge

        return OpenAIJudge(cfg, rubric)
    from prefcurate.judge.local import LocalJudge

    return LocalJudge(cfg, rubric)


def item(ctx: RunContext, task: JudgeTask, prompt_id: str, candidate_id: str, candidate_b_id: str | None = None,
         pair_order: str | None = None, repeat_index: int = 0, probe: str | None = None) -> Item:
    """An item judging ``candidate_id`` (pointwise) or ``candidate_id`` against ``candidate_b_id`` shown in
    ``pair_order`` (pairwise), with this run's judge and rubric."""
    mode = "pairwise" if task.pairwise else "pointwise"
    jid = judgment_id(candidate_id, ctx.judge, ctx.require_rubric().hash, mode, candidate_b_id, pair_order,
                      repeat_index, probe)
    return Item(jid, task, {"prompt_id": prompt_id, "candidate_id": candidate_id, "candidate_b_id": candidate_b_id,
                            "mode": mode, "pair_order": pair_order, "repeat_index": repeat_index, "probe": probe})


def task_for(row: dict, rubric: Rubric, responses: tuple[str, ...]) -> JudgeTask:
    """A task from a query row with the prompt's messages and metadata."""
    metadata = json.loads(row["metadata"]) if row.get("metadata") else {}
    reference = metadata.get(rubric.reference_key) if rubric.reference_key else None
    return JudgeTask(json.loads(row["messages"]), responses, reference if isinstance(reference, str) else None)


def pair_items(ctx: RunContext, rows: list[dict], probe: str | None = None) -> list[Item]:
    """Items for rows naming two responses a and b (a_id, a_text, b_id, b_text), a pair_order and a
    repeat_index: a is shown first in order ab, b first in order ba."""
    rubric = ctx.require_rubric()
    return [item(ctx, task_for(r, rubric, (r["a_text"], r["b_text"]) if r["pair_order"] == "ab" else
                               (r["b_text"], r["a_text"])),
                 r["prompt_id"], r["a_id"], r["b_id"], r["pair_order"], r["repeat_index"], probe) for r in rows]


def judgment_row(ctx: RunContext, it: Item, verdict: Verdict) -> dict:
    rubric = ctx.require_rubric()
    ok, pairwise = verdict.status == "ok", it.identity["mode"] == "pairwise"
    return it.identity | {
        "judgment_id": it.judgment_id, "judge": ctx.judge, "rubric_name": rubric.name, "rubric_hash": rubric.hash,
        "scores": verdict.scores if ok and not pairwise else None,
        "overall": rubric.overall(verdict.scores) if ok and not pairwise else None,
        "winner": WINNER_BY_POSITION[it.identity["pair_order"]][verdict.winner] if ok and pairwise else None,
        "rationale": verdict.rationale, "raw_response": verdict.raw_response, "status": verdict.status,
        "error": verdict.error, "input_tokens": verdict.input_tokens, "output_tokens": verdict.output_tokens,
        "cache_read_tokens": verdict.cache_read_tokens, "cache_write_tokens": verdict.cache_write_tokens,
        "cost_usd": verdict.cost_usd, "latency_s": verdict.latency_s, "run_id": ctx.run_id,
    }


def unjudged(store: Store, ctx: RunContext, items: list[Item]) -> list[Item]:
    """The items (all of one mode) with no stored judgment yet, or only an API error."""
    mode = items[0].identity["mode"] if items else "pointwise"
    done = {r["judgment_id"] for r in store.query(
        DONE_SQL, {"judge": ctx.judge, "rubric_hash": ctx.require_rubric().hash, "mode": mode})}
    return [it for it in items if it.judgment_id not in done]


def judge_missing(store: Store, ctx: RunContext, items: list[Item], stats: JudgeStats, label: str) -> None:
    """Judge the items that have no stored judgment yet (or only an API error), counting into ``stats``."""
    mode = items[0].identity["mode"] if items else "pointwise"
    todo = unjudged(store, ctx, items)
    stats.todo += len(todo)
    stats.already_judged += len(items) - len(todo)
    log.info("%s: %d judgments wanted, %d already stored, %d to do", label, len(items), len(items) - len(todo), len(todo))
    cfg = ctx.config.judge
    if cfg.backend == "anthropic" and cfg.batch:
        judge_by_batches(store, ctx, todo, mode, stats)
    elif todo:
        judge_online(store, ctx, todo, stats, label)


def store_verdicts(store: Store, rows: list[dict], stats: JudgeStats) -> None:
    # A judgment that failed with an API error is judged again, and its row overwritten.
    store.insert("judgments", rows, replace_if="judgments.status = 'api_error'", key="judgment_id")
    stats.judged += sum(r["status"] == "ok" for r in rows)
    stats.failed += sum(r["status"] != "ok" for r in rows)
    stats.cost_usd += sum(r["cost_usd"] or 0.0 for r in rows)


def judge_online(store: Store, ctx: RunContext, todo: list[Item], stats: JudgeStats, label: str) -> None:
    """Judge every item through the backend's own concurrency, storing verdicts as they come."""
    impl = make_judge(ctx)
    not_started = 0
    with track(len(todo), label, ctx.show_progress) as progress:
        def write(rows: list[dict]) -> None:
            store_verdicts(store, rows, stats)
            progress.advance(len(rows))

        with BufferedWriter(write, ctx.config.judge.write_batch) as writer:
            def sink(i: int, verdict: Verdict | None) -> None:
                nonlocal not_started
                if verdict is None:  # not started: the budget would not allow it
                    not_started += 1
                else:
                    writer.add([judgment_row(ctx, todo[i], verdict)])

            impl.run([it.task for it in todo], sink)  # everything judged is kept, whatever stops the run
    if not_started:
        raise budget_exhausted(ctx, stats, not_started)


def budget_exhausted(ctx: RunContext, stats: JudgeStats, left: int) -> BudgetExhausted:
    return BudgetExhausted(
        f"judge.max_usd of ${ctx.config.judge.max_usd:g} reached: {stats.judged + stats.failed} judgments stored "
        f"(${stats.cost_usd:.4f}), {left} left; raise judge.max_usd and rerun to judge them")


def judge_by_batches(store: Store, ctx: RunContext, todo: list[Item], mode: str, stats: JudgeStats) -> None:
    """Message Batches: resume the batches an earlier run submitted, submit what is left, collect."""
    rubric_hash = ctx.require_rubric().hash
    by_id = {it.judgment_id: it for it in todo}
    pending = [r["batch_id"] for r in store.query(PENDING_BATCHES_SQL, [ctx.judge, rubric_hash, mode])]
    in_pending = {r["custom_id"] for r in store.query(
        "SELECT custom_id FROM judge_batch_requests WHERE list_contains(?, batch_id)", [pending])}
    fresh = [jid for jid in by_id if jid not in in_pending]
    if not pending and not fresh:
        return
    impl = make_judge(ctx)
    not_started = 0
    if fresh:
        batch_id, n = impl.submit_batch([by_id[j].task for j in fresh], fresh)
        not_started = len(fresh) - n
        if batch_id:
            with store.transaction():  # recorded at once: a crash from here on resumes this batch
                store.insert("judge_batches", [{"batch_id": batch_id, "judge": ctx.judge, "rubric_hash": rubric_hash,
                                                "mode": mode, "n_requests": n, "status": "submitted",
                                                "run_id": ctx.run_id}])
                store.insert("judge_batch_requests", [{"batch_id": batch_id, "custom_id": j} for j in fresh[:n]])
            log.info("judge: submitted Message Batch %s with %d requests", batch_id, n)
            pending.append(batch_id)
    for batch_id in pending:
        impl.wait_batch(batch_id, on_poll=lambda b: log.info(
            "judge: batch %s %s, %d of %d processing", b.id, b.processing_status, b.request_counts.processing,
            sum(b.request_counts.model_dump().values())))
        verdicts = impl.batch_verdicts(batch_id, {j: it.task for j, it in by_id.items()})
        with store.transaction():
            store_verdicts(store, [judgment_row(ctx, by_id[j], v) for j, v in verdicts.items()], stats)
            store.execute("UPDATE judge_batches SET status = 'collected', collected_at = current_timestamp "
                          "WHERE batch_id = ?", [batch_id])
    if not_started:
        raise budget_exhausted(ctx, stats, not_started)

