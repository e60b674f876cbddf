"""Stage 3, judge: score candidates (pointwise) and verify pairs (pairwise, in both orders).

Each function judges only what this judge and rubric have not judged yet (every repeat), plus
what failed with an API error last time, whose rows are then overwritten. Verdicts are stored as
they come, ``judge.batch_size`` at a time, so a crash loses at most the calls in flight and one
batch.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

from prefcurate.judge.anthropic_backend import BudgetExhausted
from prefcurate.judge.local import LocalJudge
from prefcurate.judge.rubric import Rubric, load_rubric
from prefcurate.judge.verdict import JudgeTask, Verdict

from prefcurate.config import JudgeConfig
from prefcurate.ids import judgment_id
from prefcurate.progress import track
from prefcurate.stats import StageStats
from prefcurate.store import Store

log = logging.getLogger("prefcurate")

# Pairwise verdicts name the response: a is the pair's chosen, b its rejected. In order ab the
# chosen is shown first, in ba second.
WINNER_BY_POSITION = {"ab": {"first": "a", "second": "b", "tie": "tie"},
                      "ba": {"first": "b", "second": "a", "tie": "tie"}}


@dataclass
class JudgeStats(StageStats):
    todo: int = 0
    already_judged: int = 0
    judged: int = 0
    failed: int = 0
    cost_usd: float = 0.0


@dataclass
class VerifyStats(JudgeStats):
    consistent: int = 0  # pairs whose every verdict prefers the chosen response
    inconsistent: int = 0  # verdicts disagree across orders or repeats: a tie, not a preference
    reversed: int = 0  # every verdict prefers the rejected response
    unverified: int = 0  # a verdict failed


def judge_name(cfg: JudgeConfig) -> str:
    return f"{cfg.backend}:{cfg.model}"


def make_judge(cfg: JudgeConfig, rubric: Rubric):
    if cfg.backend == "anthropic":
        from prefcurate.judge.anthropic_backend import AnthropicJudge

        return AnthropicJudge(cfg, rubric)
    if cfg.backend == "openai":
        from prefcurate.judge.openai_backend import OpenAIJudge

        return OpenAIJudge(cfg, rubric)
    return LocalJudge(cfg, rubric)


def _row(verdict: Verdict, rubric: Rubric, judge: str, run_id: str | None, **identity) -> dict:
    """A judgments row. ``identity``: prompt_id, candidate_id, candidate_b_id, mode, pair_order, repeat_index,
    and probe (the perturbation judged, if any)."""
    ok = verdict.status == "ok"
    identity = {"probe": None} | identity
    pairwise = identity["mode"] == "pairwise"
    return identity | {
        "judgment_id": judgment_id(identity["candidate_id"], judge, rubric.hash, identity["mode"],
                                   identity["candidate_b_id"], identity["pair_order"], identity["repeat_index"],
                                   identity["probe"]),
        "judge": judge, "rubric_name": rubric.name, "rubric_hash": rubric.hash,
        "scores": verdict.scores if ok and not pairwise else None,
        "overall": rubric.overall(verdict.scores) if ok and not pairwise else None,
        "winner": WINNER_BY_POSITION[identity["pair_order"]][verdict.winner] if ok and pairwise else None,
        "rationale": verdict.rationale, "raw_response": verdict.raw_response, "status": verdict.status,
        "error": verdict.error, "input_tokens": verdict.input_tokens, "output_tokens": verdict.output_tokens,
        "cache_read_tokens": verdict.cache_read_tokens, "cache_write_tokens": verdict.cache_write_tokens,
        "cost_usd": verdict.cost_usd, "latency_s": verdict.latency_s, "run_id": run_id,
    }


def _judge_all(store: Store, cfg: JudgeConfig, rubric: Rubric, todo: list[dict],
               task_of: Callable[[dict], JudgeTask], row_of: Callable[[dict, Verdict], dict],
               id_of: Callable[[dict], str], mode: str, stats: JudgeStats, label: str, show_progress: bool,
               run_id: str | None) -> None:
    """Judge every item of ``todo``; store the verdicts ``judge.batch_size`` at a time as they come."""
    if cfg.backend == "anthropic" and cfg.batch:
        _judge_by_batches(store, cfg, rubric, todo, task_of, row_of, id_of, mode, stats, run_id)
        return
    if not todo:
        return
    impl = make_judge(cfg, rubric)
    buffer: list[dict] = []
    not_started = 0
    # Rows are written by a thread of their own, so a slow insert never stalls the calls in flight.
    writes: queue.Queue[list[dict] | None] = queue.Queue()
    failure: list[BaseException] = []

    with track(len(todo), label, show_progress) as progress:
        def writer() -> None:
            while (rows := writes.get()) is not None:
                if failure:
                    continue
                try:
                    _store_verdicts(store, rows, stats)
                except BaseException as e:  # re-raised in the caller's thread below
                    failure.append(e)
                    continue
                progress.advance(len(rows))

        def sink(i: int, verdict: Verdict | None) -> None:
            nonlocal not_started
            if verdict is None:  # not started: the budget would not allow it
                not_started += 1
                return
            buffer.append(row_of(todo[i], verdict))
            if len(buffer) >= cfg.batch_size:
                writes.put(buffer[:])
                buffer.clear()

        thread = threading.Thread(target=writer, name="judgments-writer")
        thread.start()
        try:
            impl.run([task_of(item) for item in todo], sink)
        finally:  # everything judged is kept, whatever stopped the run
            writes.put(buffer[:])
            writes.put(None)
            thread.join()
    if failure:
        raise failure[0]
    if not_started:
        raise BudgetExhausted(
            f"judge.max_usd of ${cfg.max_usd:g} reached: {stats.judged + stats.failed} judgments stored "
            f"(${stats.cost_usd:.4f}), {not_started} left; raise judge.max_usd and rerun to judge them")


def _store_verdicts(store: Store, rows: list[dict], stats: JudgeStats) -> None:
    # A judgment that failed with an API error is judged again, and its row overwritten.
    store.insert("judgments", rows, replace_if="judgments.status = 'api_error'", key="judgment_id")
    stats.judged += sum(r["status"] == "ok" for r in rows)
    stats.failed += sum(r["status"] != "ok" for r in rows)
    stats.cost_usd += sum(r["cost_usd"] or 0.0 for r in rows)


def _judge_by_batches(store: Store, cfg: JudgeConfig, rubric: Rubric, todo: list[dict],
                      task_of: Callable[[dict], JudgeTask], row_of: Callable[[dict, Verdict], dict],
                      id_of: Callable[[dict], str], mode: str, stats: JudgeStats, run_id: str | None) -> None:
    """Message Batches: resume the batches an earlier run submitted, submit what is left, collect."""
    name = judge_name(cfg)
    by_id = {id_of(item): item for item in todo}
    pending = [r["batch_id"] for r in store.query(
        "SELECT batch_id FROM judge_batches WHERE judge = ? AND rubric_hash = ? AND mode = ? AND status = 'submitted' "
        "ORDER BY created_at", [name, rubric.hash, mode])]
    in_pending = {r["custom_id"] for r in store.query(
        "SELECT custom_id FROM judge_batch_requests WHERE list_contains(?, batch_id)", [pending])}
    fresh = [jid for jid in by_id if jid not in in_pending]
    if not pending and not fresh:
        return
    impl = make_judge(cfg, rubric)
    not_started = 0
    if fresh:
        batch_id, n = impl.submit_batch([task_of(by_id[j]) for j in fresh], fresh)
        not_started = len(fresh) - n
        if batch_id:
            with store.transaction():  # recorded at once: a crash from here on resumes this batch
                store.insert("judge_batches", [{"batch_id": batch_id, "judge": name, "rubric_hash": rubric.hash,
                                                "mode": mode, "n_requests": n, "status": "submitted", "run_id": run_id}])
                store.insert("judge_batch_requests", [{"batch_id": batch_id, "custom_id": j} for j in fresh[:n]])
            log.info("judge: submitted Message Batch %s with %d requests", batch_id, n)
            pending.append(batch_id)
    for batch_id in pending:
        impl.wait_batch(batch_id, on_poll=lambda b: log.info(
            "judge: batch %s %s, %d of %d processing", b.id, b.processing_status, b.request_counts.processing,
            sum(b.request_counts.model_dump().values())))
        verdicts = impl.batch_verdicts(batch_id, {j: task_of(by_id[j]) for j in by_id})
        with store.transaction():
            _store_verdicts(store, [row_of(by_id[j], v) for j, v in verdicts.items()], stats)
            store.con.execute("UPDATE judge_batches SET status = 'collected', collected_at = current_timestamp "
                              "WHERE batch_id = ?", [batch_id])
    if not_started:
        raise BudgetExhausted(
            f"judge.max_usd of ${cfg.max_usd:g} reached: {stats.judged + stats.failed} judgments stored "
            f"(${stats.cost_usd:.4f}), {not_started} left; raise judge.max_usd and rerun to judge them")


def task_for(row: dict, rubric: Rubric, responses: tuple[str, ...]) -> JudgeTask:
    """A task from a query row with the prompt's messages and metadata."""
    metadata = json.loads(row["metadata"]) if row.get("metadata") else {}
    reference = metadata.get(rubric.reference_key) if rubric.reference_key else None
    return JudgeTask(json.loads(row["messages"]), responses, reference if isinstance(reference, str) else None)


def _done_ids(store: Store, judge: str, rubric_hash: str, mode: str) -> set[str]:
    """Judgment ids already stored for this judge, rubric and mode (probes included) that need no new call."""
    return {r["judgment_id"] for r in store.query(
        "SELECT judgment_id FROM judgments WHERE judge = ? AND rubric_hash = ? AND mode = ? "
        "AND status <> 'api_error'", [judge, rubric_hash, mode])}


def judge(store: Store, cfg: JudgeConfig, prompt_ids: list[str] | None = None, run_id: str | None = None,
          show_progress: bool = False) -> JudgeStats:
    """Judge the candidates of ``prompt_ids`` (or all), ``judge.repeats`` times: each one scored
    (pointwise, hybrid), or every two of a prompt compared in both orders (pairwise)."""
    if cfg.mode == "pairwise":
        return _judge_all_pairs(store, cfg, prompt_ids, run_id, show_progress)
    rubric, name = load_rubric(cfg.rubric), judge_name(cfg)
    rows = store.query(
        """
        SELECT c.candidate_id, c.prompt_id, c.text, p.messages, p.metadata, r.range AS repeat_index
        FROM candidates c JOIN prompts p USING (prompt_id) CROSS JOIN range($repeats) r
        WHERE $prompt_ids IS NULL OR list_contains($prompt_ids, c.prompt_id)
        ORDER BY c.prompt_id, c.sample_index, c.candidate_id, repeat_index
        """,
        {"repeats": cfg.repeats, "prompt_ids": prompt_ids},
    )
    done = _done_ids(store, name, rubric.hash, "pointwise")
    todo = [r for r in rows if judgment_id(r["candidate_id"], name, rubric.hash, repeat_index=r["repeat_index"]) not in done]
    stats = JudgeStats(todo=len(todo), already_judged=len(rows) - len(todo))
    log.info("judge: %d judgments wanted, %d already stored, %d to do", len(rows), stats.already_judged, len(todo))

    def row_of(item: dict, verdict: Verdict) -> dict:
        return _row(verdict, rubric, name, run_id, prompt_id=item["prompt_id"], candidate_id=item["candidate_id"],
                    candidate_b_id=None, mode="pointwise", pair_order=None, repeat_index=item["repeat_index"])

    _judge_all(store, cfg, rubric, todo, lambda r: task_for(r, rubric, (r["text"],)), row_of,
               lambda r: judgment_id(r["candidate_id"], name, rubric.hash, repeat_index=r["repeat_index"]),
               "pointwise", stats, f"judging with {rubric.name}", show_progress, run_id)
    return stats


def _compare(store: Store, cfg: JudgeConfig, rows: list[dict], stats: JudgeStats, label: str,
             run_id: str | None, show_progress: bool, probe: str | None = None) -> None:
    """Judge rows naming two responses a and b (a_id, a_text, b_id, b_text), a pair_order and a repeat,
    showing a first in order ab and b first in order ba."""
    rubric, name = load_rubric(cfg.rubric), judge_name(cfg)
    done = _done_ids(store, name, rubric.hash, "pairwise")

    def jid(r: dict) -> str:
        return judgment_id(r["a_id"], name, rubric.hash, "pairwise", r["b_id"], r["pair_order"], r["repeat_index"], probe)

    todo = [r for r in rows if jid(r) not in done]
    stats.todo += len(todo)
    stats.already_judged += len(rows) - len(todo)

    def task_of(r: dict) -> JudgeTask:
        return task_for(r, rubric, (r["a_text"], r["b_text"]) if r["pair_order"] == "ab" else (r["b_text"], r["a_text"]))

    def row_of(r: dict, verdict: Verdict) -> dict:
        return _row(verdict, rubric, name, run_id, prompt_id=r["prompt_id"], candidate_id=r["a_id"],
                    candidate_b_id=r["b_id"], mode="pairwise", pair_order=r["pair_order"], repeat_index=r["repeat_index"],
                    probe=probe)

    _judge_all(store, cfg, rubric, todo, task_of, row_of, jid, "pairwise", stats, label, show_progress, run_id)


def _judge_all_pairs(store: Store, cfg: JudgeConfig, prompt_ids: list[str] | None, run_id: str | None,
                     show_progress: bool) -> JudgeStats:
    """Pairwise mode: every two candidates of a prompt, in both orders and every repeat."""
    rows = store.query(
        """
        SELECT a.prompt_id, p.messages, p.metadata, a.candidate_id AS a_id, a.text AS a_text,
               b.candidate_id AS b_id, b.text AS b_text, o.pair_order, r.range AS repeat_index
        FROM candidates a JOIN candidates b ON b.prompt_id = a.prompt_id AND a.candidate_id < b.candidate_id
        JOIN prompts p ON p.prompt_id = a.prompt_id
        CROSS JOIN (VALUES ('ab'), ('ba')) o(pair_order) CROSS JOIN range($repeats) r
        WHERE $prompt_ids IS NULL OR list_contains($prompt_ids, a.prompt_id)
        ORDER BY a.prompt_id, a_id, b_id, repeat_index, o.pair_order
        """,
        {"repeats": cfg.repeats, "prompt_ids": prompt_ids},
    )
    stats = JudgeStats()
    _compare(store, cfg, rows, stats, "comparing candidates in both orders", run_id, show_progress)
    return stats


def verify_pairs(store: Store, cfg: JudgeConfig, prompt_ids: list[str] | None = None, run_id: str | None = None,
                 show_progress: bool = False) -> VerifyStats:
    """Hybrid mode: judge each pair of ``prompt_ids`` (or all) pairwise in both orders, every repeat."""
    rubric, name = load_rubric(cfg.rubric), judge_name(cfg)
    rows = store.query(
        """
        SELECT pr.pair_id, pr.prompt_id, p.messages, p.metadata, pr.chosen_id AS a_id, ch.text AS a_text,
               pr.rejected_id AS b_id, rj.text AS b_text, o.pair_order, r.range AS repeat_index
        FROM pairs pr JOIN prompts p USING (prompt_id)
        JOIN candidates ch ON ch.candidate_id = pr.chosen_id
        JOIN candidates rj ON rj.candidate_id = pr.rejected_id
        CROSS JOIN (VALUES ('ab'), ('ba')) o(pair_order) CROSS JOIN range($repeats) r
        WHERE pr.judge = $judge AND pr.rubric_hash = $rubric_hash
          AND ($prompt_ids IS NULL OR list_contains($prompt_ids, pr.prompt_id))
        ORDER BY pr.pair_id, repeat_index, o.pair_order
        """,
        {"repeats": cfg.repeats, "prompt_ids": prompt_ids, "judge": name, "rubric_hash": rubric.hash},
    )
    stats = VerifyStats()
    _compare(store, cfg, rows, stats, "verifying pairs in both orders", run_id, show_progress)
    pair_ids = sorted({r["pair_id"] for r in rows})
    outcome = {r["verdict"]: r["n"] for r in store.query(
        "SELECT verdict, count(*) AS n FROM v_pair_verdicts WHERE judge = ? AND rubric_hash = ? "
        "AND list_contains(?, pair_id) GROUP BY verdict", [name, rubric.hash, pair_ids])}
    stats.consistent, stats.inconsistent = outcome.get("consistent", 0), outcome.get("inconsistent", 0)
    stats.reversed, stats.unverified = outcome.get("reversed", 0), outcome.get("failed", 0)
    return stats
