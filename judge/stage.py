"""Stage 3, judge: score every candidate that has no judgment from this judge and rubric yet."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from judge.anthropic_backend import BudgetExhausted
from judge.local import LocalJudge
from judge.rubric import Rubric, load_rubric
from judge.verdict import Verdict
from prefcurate.config import JudgeConfig
from prefcurate.ids import content_id
from prefcurate.progress import track
from prefcurate.stats import StageStats
from prefcurate.store import Store

log = logging.getLogger("prefcurate")


@dataclass
class JudgeStats(StageStats):
    candidates: int = 0
    already_judged: int = 0
    judged: int = 0
    failed: int = 0
    cost_usd: float = 0.0


def judge_name(cfg: JudgeConfig) -> str:
    return f"{cfg.backend}:{cfg.model}"


def judgment_id(candidate_id: str, judge: str, rubric_hash: str, mode: str = "pointwise",
                candidate_b_id: str | None = None, pair_order: str | None = None, repeat_index: int = 0,
                probe: str | None = None) -> str:
    return content_id("judgment", candidate_id, candidate_b_id, judge, rubric_hash, mode, pair_order,
                      repeat_index, probe)


def make_judge(cfg: JudgeConfig, rubric: Rubric):
    if cfg.backend == "anthropic":
        from judge.anthropic_backend import AnthropicJudge

        return AnthropicJudge(cfg, rubric)
    return LocalJudge(cfg, rubric)


def _row(cand: dict, verdict: Verdict, judge: str, rubric: Rubric, run_id: str | None) -> dict:
    ok = verdict.status == "ok"
    return {
        "judgment_id": judgment_id(cand["candidate_id"], judge, rubric.hash),
        "prompt_id": cand["prompt_id"], "candidate_id": cand["candidate_id"], "candidate_b_id": None,
        "judge": judge, "rubric_name": rubric.name, "rubric_hash": rubric.hash, "mode": "pointwise",
        "pair_order": None, "repeat_index": 0, "probe": None, "winner": None,
        "scores": verdict.scores if ok else None, "overall": rubric.overall(verdict.scores) if ok else None,
        "rationale": verdict.rationale, "raw_response": verdict.raw_response, "status": verdict.status,
        "error": verdict.error, "input_tokens": verdict.input_tokens, "output_tokens": verdict.output_tokens,
        "cache_read_tokens": verdict.cache_read_tokens, "cache_write_tokens": verdict.cache_write_tokens,
        "cost_usd": verdict.cost_usd, "latency_s": verdict.latency_s, "run_id": run_id,
    }


def judge(store: Store, cfg: JudgeConfig, prompt_ids: list[str] | None = None, run_id: str | None = None,
          show_progress: bool = False) -> JudgeStats:
    """Judge the candidates of ``prompt_ids`` (or all) that this judge and rubric have not judged yet,
    or whose judgment failed with an API error."""
    rubric = load_rubric(cfg.rubric)
    name = judge_name(cfg)
    rows = store.query(
        """
        SELECT c.candidate_id, c.prompt_id, c.text, p.messages,
               EXISTS (SELECT 1 FROM judgments j
                       WHERE j.candidate_id = c.candidate_id AND j.judge = ? AND j.rubric_hash = ?
                         AND j.mode = 'pointwise' AND j.probe IS NULL
                         AND j.status <> 'api_error') AS judged
        FROM candidates c JOIN prompts p USING (prompt_id)
        WHERE ? IS NULL OR list_contains(?, c.prompt_id)
        ORDER BY c.prompt_id, c.sample_index, c.candidate_id
        """,
        [name, rubric.hash, prompt_ids, prompt_ids],
    )
    todo = [r for r in rows if not r["judged"]]
    stats = JudgeStats(candidates=len(rows), already_judged=len(rows) - len(todo))
    log.info("judge: %d candidates, %d already judged, %d to do", stats.candidates, stats.already_judged, len(todo))
    if not todo:
        return stats
    impl = make_judge(cfg, rubric)
    with track(len(todo), f"judging with {rubric.name}", show_progress) as progress:
        for start in range(0, len(todo), cfg.batch_size):
            chunk = todo[start:start + cfg.batch_size]
            verdicts = impl.judge([(json.loads(c["messages"]), c["text"]) for c in chunk])
            # None: not started, because the budget would not allow it. Everything done is kept.
            new_rows = [_row(c, v, name, rubric, run_id) for c, v in zip(chunk, verdicts) if v is not None]
            # A judgment that failed with an API error is judged again, and its row overwritten.
            store.insert("judgments", new_rows, replace_if="judgments.status = 'api_error'", key="judgment_id")
            stats.judged += sum(r["status"] == "ok" for r in new_rows)
            stats.failed += sum(r["status"] != "ok" for r in new_rows)
            stats.cost_usd += sum(r["cost_usd"] or 0.0 for r in new_rows)
            progress.advance(len(chunk))
            if len(new_rows) < len(chunk):
                left = len(todo) - start - len(new_rows)
                raise BudgetExhausted(
                    f"judge.max_usd of ${cfg.max_usd:g} reached: {stats.judged + stats.failed} judgments stored "
                    f"(${stats.cost_usd:.4f}), {left} candidates left; raise judge.max_usd and rerun to judge them")
    return stats
