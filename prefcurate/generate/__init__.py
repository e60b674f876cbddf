"""Stage 2, generate: N candidates per prompt, or candidates made elsewhere imported from JSONL.

Only prompts without candidates for this generator and these sampling parameters are sent to the
model, and what comes back is stored as it comes (each chunk of prompts, and at least twice a
second), so a rerun (or a run after a crash) repeats only the prompts that were in flight.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from prefcurate.config import GeneratorConfig
from prefcurate.context import RunContext
from prefcurate.errors import InputError
from prefcurate.generate.base import GenRequest, GenResult
from prefcurate.ids import canonical_json, content_id
from prefcurate.inputs import normalise_messages, prompt_id_for, read_jsonl
from prefcurate.progress import track
from prefcurate.prompts import prompt_messages
from prefcurate.stats import StageStats
from prefcurate.store import Store
from prefcurate.writer import BufferedWriter

log = logging.getLogger("prefcurate")
CANDIDATE_KEYS = {"prompt", "candidates", "generator", "finish_reasons"}
FINISH_REASONS = ("stop", "length")  # what an imported candidate may say of how it ended
# Prompts that already have candidates from this generator with these sampling parameters.
DONE_SQL = "SELECT DISTINCT prompt_id FROM candidates WHERE generator = ? AND CAST(params AS VARCHAR) = ?"


@dataclass
class GenerateStats(StageStats):
    prompts: int = 0
    already_done: int = 0
    generated: int = 0
    candidates_new: int = 0
    failed: int = 0
    skipped_too_long: int = 0  # prompts that fill the model's context: recorded in `skips`, not sent
    first_error: str | None = None


def make_generator(cfg: GeneratorConfig):
    if cfg.backend == "vllm":
        from prefcurate.generate.vllm_backend import VLLMGenerator

        return VLLMGenerator(cfg)
    if cfg.backend == "transformers":
        from prefcurate.generate.hf_backend import HFGenerator

        return HFGenerator(cfg)
    from prefcurate.generate.openai_backend import OpenAIGenerator

    return OpenAIGenerator(cfg)


def sampling_key(cfg: GeneratorConfig) -> str:
    """The sampling parameters that define a candidate, as canonical JSON."""
    return canonical_json({"n": cfg.n, "temperature": cfg.temperature, "top_p": cfg.top_p,
                           "max_tokens": cfg.max_tokens, "seed": cfg.seed})


def prompt_seed(base_seed: int, prompt_id: str) -> int:
    return int(content_id("seed", base_seed, prompt_id)[:8], 16)


def _candidate_rows(result: GenResult, generator: str, params: str, run_id: str | None) -> list[dict]:
    return [
        {
            "candidate_id": content_id("candidate", result.prompt_id, generator, params, i),
            "prompt_id": result.prompt_id,
            "sample_index": i,
            "text": s.text,
            "finish_reason": s.finish_reason,
            "prompt_tokens": result.prompt_tokens,
            "completion_tokens": s.completion_tokens,
            "latency_s": result.latency_s,
            "generator": generator,
            "params": params,
            "run_id": run_id,
        }
        for i, s in enumerate(result.samples)
    ]


def run(store: Store, ctx: RunContext) -> GenerateStats:
    """Sample ``generator.n`` candidates for every prompt of the run that lacks them."""
    cfg = ctx.config.generator
    generator = make_generator(cfg)
    params = sampling_key(cfg)
    messages = prompt_messages(store, ctx.prompt_ids)
    done = {r["prompt_id"] for r in store.query(DONE_SQL, [generator.name, params])}
    todo = [pid for pid in messages if pid not in done]
    stats = GenerateStats(prompts=len(messages), already_done=len(messages) - len(todo))
    log.info("generate: %d prompts, %d already have candidates, %d to do", stats.prompts, stats.already_done, len(todo))

    def write(rows: list[dict]) -> None:
        stats.candidates_new += store.insert("candidates", rows)

    def sink(result: GenResult) -> None:
        if result.error:  # nothing stored: the next run asks again
            log.warning("generate: prompt %s failed: %s", result.prompt_id, result.error)
            stats.first_error = stats.first_error or result.error
            stats.failed += 1
        else:
            writer.add(_candidate_rows(result, generator.name, params, ctx.run_id))
            stats.generated += 1

    with track(len(todo), f"generating {cfg.n} per prompt", ctx.show_progress) as progress, \
            BufferedWriter(write, cfg.chunk_size * cfg.n) as writer:
        for start in range(0, len(todo), cfg.chunk_size):
            chunk = todo[start:start + cfg.chunk_size]
            skips = _too_long(generator, chunk, messages, ctx.run_id)
            stats.skipped_too_long += len(skips)
            store.insert("skips", skips)
            skipped = {s["prompt_id"] for s in skips}
            requests = [GenRequest(pid, messages[pid], prompt_seed(cfg.seed, pid)) for pid in chunk if pid not in skipped]
            if requests:
                generator.generate(requests, sink)
            writer.flush()  # the chunk is stored before the next one starts
            progress.advance(len(chunk))
    return stats


def _too_long(generator, prompt_ids: list[str], messages: dict, run_id: str | None) -> list[dict]:
    """`skips` rows for the prompts the generator cannot take (backends that know their context)."""
    check = getattr(generator, "too_long", None)
    rows = []
    for pid in prompt_ids if check else []:
        if reason := check(messages[pid]):
            log.warning("generate: prompt %s skipped: %s", pid, reason)
            rows.append({"prompt_id": pid, "stage": "generate", "generator": generator.name, "reason": reason,
                         "run_id": run_id})
    return rows


@dataclass
class ImportStats(StageStats):
    lines: int = 0
    prompts_new: int = 0
    candidates_new: int = 0


def import_candidates(store: Store, path: str, run_id: str | None = None) -> ImportStats:
    """Store candidates made elsewhere: JSONL lines ``{"prompt", "candidates": [str], "generator"}``, and
    optionally ``"finish_reasons"``: "stop" or "length" per candidate, so that the audit can flag answers
    cut off at the token limit (without it a candidate's finish_reason is "imported")."""
    prompt_rows, candidate_rows = {}, []
    rows = read_jsonl(Path(path)) if Path(path).is_file() else None
    if rows is None:
        raise InputError(path, None, "file not found")
    if not rows:
        raise InputError(path, None, "no candidates found", "add one JSON object per line")
    for lineno, obj in rows:
        if not isinstance(obj, dict):
            raise InputError(path, lineno, "each line must be a JSON object with `prompt` and `candidates`")
        unknown = set(obj) - CANDIDATE_KEYS
        if unknown:
            raise InputError(path, lineno, f"unknown field(s) {sorted(unknown)}",
                             "allowed: prompt, candidates, generator, finish_reasons")
        if "prompt" not in obj:
            raise InputError(path, lineno, "missing `prompt` (a string or a list of messages)")
        messages = normalise_messages(obj["prompt"], path, lineno, "prompt")
        texts = obj.get("candidates")
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise InputError(path, lineno, "`candidates` must be a non-empty list of strings")
        generator = obj.get("generator", "imported")
        if not isinstance(generator, str) or not generator:
            raise InputError(path, lineno, "`generator` must be a non-empty string")
        finish = _finish_reasons(obj, len(texts), path, lineno)
        pid = prompt_id_for(messages)
        prompt_rows[pid] = {"prompt_id": pid, "messages": canonical_json(messages), "prompt_text": messages[-1]["content"],
                            "source": str(path), "source_id": None, "metadata": None, "run_id": run_id}
        params = canonical_json({"imported": True})
        for i, text in enumerate(texts):
            candidate_rows.append({
                "candidate_id": content_id("candidate", pid, generator, text, i),
                "prompt_id": pid, "sample_index": i, "text": text, "finish_reason": finish[i],
                "prompt_tokens": None, "completion_tokens": None, "latency_s": None,
                "generator": generator, "params": params, "run_id": run_id,
            })
    with store.transaction():
        stats = ImportStats(lines=len(rows), prompts_new=store.insert("prompts", list(prompt_rows.values())))
        stats.candidates_new = store.insert("candidates", candidate_rows)
    return stats


def _finish_reasons(obj: dict, n: int, path: str, lineno: int) -> list[str]:
    given = obj.get("finish_reasons")
    if given is None:
        return ["imported"] * n
    if not isinstance(given, list) or len(given) != n or not all(r in FINISH_REASONS for r in given):
        raise InputError(path, lineno, f"`finish_reasons` must give one of {', '.join(FINISH_REASONS)} for each of "
                         f"the {n} candidates", "or leave it out")
    return given
