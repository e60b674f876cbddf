"""Stage 3, judge: score every candidate that has no judgment from this judge and rubric yet."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

from judge.local import LocalJudge, LocalVerdict
from judge.rubric import Rubric, load_rubric
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


def judge_name(cfg: JudgeConfig) -> str:
    return f"{cfg.backend}:{cfg.model}"


def judgment_id(candidate_id: str, judge: str, rubric_hash: str, mode: str = "pointwise",
                candidate_b_id: str | None = None, pair_order: str | None = None, repeat_index: int = 0,
                probe: str | None = None) -> str:
    return content_id("judgment", candidate_id, candidate_b_id, judge, rubric_hash, mode, pair_order,
                      repeat_index, probe)


def make_judge(cfg: JudgeConfig, rubric: Rubric) -> LocalJudge:
    return LocalJudge(cfg, rubric)


def _row(cand: dict, verdict: LocalVerdict | str, judge: str, rubric: Rubric, latency: float,
         run_id: str | None) -> dict:
    row = {
        "judgment_id": judgment_id(cand["candidate_id"], judge, rubric.hash),
        "prompt_id": cand["prompt_id"], "candidate_id": cand["candidate_id"], "candidate_b_id": None,
        "judge": judge, "rubric_name": rubric.name, "rubric_hash": rubric.hash, "mode": "pointwise",
        "pair_order": None, "repeat_index": 0, "probe": None, "winner": None, "rationale": None,
        "output_tokens": 0, "cache_read_tokens": None, "cache_write_tokens": None, "cost_usd": 0.0,
        "latency_s": latency, "run_id": run_id,
    }
    if isinstance(verdict, str):  # could not be judged: recorded, never given a made-up score
        return row | {"scores": None, "overall": None, "raw_response": None, "status": "skipped",
                      "error": verdict, "input_tokens": None}
    raw = {name: {"distribution": verdict.distributions[name], "score_mass": verdict.score_mass[name]}
           for name in verdict.scores}
    return row | {"scores": verdict.scores, "overall": rubric.overall(verdict.scores), "raw_response": json.dumps(raw),
                  "status": "ok", "error": None, "input_tokens": verdict.input_tokens}


def judge(store: Store, cfg: JudgeConfig, prompt_ids: list[str] | None = None, run_id: str | None = None,
          show_progress: bool = False, judge_impl: LocalJudge | None = None) -> JudgeStats:
    """Judge the candidates of ``prompt_ids`` (or all) that this judge and rubric have not judged."""
    rubric = judge_impl.rubric if judge_impl else load_rubric(cfg.rubric)
    name = judge_name(cfg)
    rows = store.query(
        """
        SELECT c.candidate_id, c.prompt_id, c.text, p.messages,
               EXISTS (SELECT 1 FROM judgments j
                       WHERE j.candidate_id = c.candidate_id AND j.judge = ? AND j.rubric_hash = ?
                         AND j.mode = 'pointwise' AND j.probe IS NULL) AS judged
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
    impl = judge_impl or make_judge(cfg, rubric)
    with track(len(todo), f"judging with {rubric.name}", show_progress) as progress:
        for start in range(0, len(todo), cfg.batch_size):
            chunk = todo[start:start + cfg.batch_size]
            began = time.perf_counter()
            verdicts = impl.judge([(json.loads(c["messages"]), c["text"]) for c in chunk])
            latency = (time.perf_counter() - began) / len(chunk)
            new_rows = [_row(c, v, name, rubric, latency, run_id) for c, v in zip(chunk, verdicts)]
            store.insert("judgments", new_rows)
            stats.judged += sum(r["status"] == "ok" for r in new_rows)
            stats.failed += sum(r["status"] != "ok" for r in new_rows)
            progress.advance(len(chunk))
    return stats
