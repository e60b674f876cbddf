"""Stage 1, prompts: store the run's prompts (read and validated with its context, before anything
was written) and decide which prompts the later stages work on. Also `prefcurate import prompts`."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

from prefcurate.context import RunContext
from prefcurate.ids import canonical_json, in_shard
from prefcurate.inputs import PromptFile, load_prompts
from prefcurate.stats import StageStats
from prefcurate.store import Store

log = logging.getLogger("prefcurate")


@dataclass
class PromptStats(StageStats):
    read: int = 0
    new: int = 0
    duplicates: int = 0
    other_shards: int = 0  # valid prompts left to the other shards (`run --shard i/n`)
    # The prompts the run's later stages work on (None: every prompt in the store).
    prompt_ids: list[str] | None = field(default=None, repr=False, metadata={"summary": False})


def run(store: Store, ctx: RunContext) -> PromptStats:
    """Store the prompts of ``prompts.path`` (those of the run's shard); with no file, the run works on
    every prompt already stored (of its shard)."""
    prompts = ctx.read_prompts()
    if prompts is None:
        log.info("prompts: prompts.path not set, using every prompt already in the store%s",
                 " of this shard" if ctx.shard else "")
        return PromptStats(prompt_ids=shard_prompt_ids(store, ctx.shard) if ctx.shard else None)
    return store_prompts(store, prompts, ctx.run_id, ctx.shard)


def import_prompts(store: Store, source: str, run_id: str | None = None) -> PromptStats:
    """`prefcurate import prompts`: validate all of ``source``, then store the prompts not already there."""
    return store_prompts(store, load_prompts(source), run_id)


def store_prompts(store: Store, file: PromptFile, run_id: str | None, shard: tuple[int, int] | None = None) -> PromptStats:
    distinct = len(file.prompts)
    prompts = [p for p in file.prompts if in_shard(p.prompt_id, shard)]
    new = store.insert("prompts", [
        {"prompt_id": p.prompt_id, "messages": canonical_json(p.messages), "prompt_text": p.text,
         "source": file.source, "source_id": p.source_id, "metadata": p.metadata, "run_id": run_id}
        for p in prompts
    ])
    return PromptStats(read=file.rows, new=new, duplicates=file.rows - distinct, other_shards=distinct - len(prompts),
                       prompt_ids=[p.prompt_id for p in prompts])


def shard_prompt_ids(store: Store, shard: tuple[int, int]) -> list[str]:
    """The ids of the stored prompts that belong to ``shard``."""
    return [r["prompt_id"] for r in store.query("SELECT prompt_id FROM prompts ORDER BY prompt_id")
            if in_shard(r["prompt_id"], shard)]


def prompt_messages(store: Store, prompt_ids: list[str] | None = None) -> dict[str, list[dict[str, str]]]:
    """prompt_id -> messages, for the given ids or all prompts in the store."""
    rows = store.query("SELECT prompt_id, messages FROM prompts WHERE $ids IS NULL OR list_contains($ids, prompt_id) "
                       "ORDER BY prompt_id", {"ids": prompt_ids})
    return {r["prompt_id"]: json.loads(r["messages"]) for r in rows}
