"""Input files: JSONL, Parquet or a datasets-loadable source, read row by row and validated, with
errors that name the file, the line and the fix. Prompts, candidates, judgments, SFT examples and
preference datasets are all read through here."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefcurate.errors import InputError
from prefcurate.ids import content_id

ROLES = {"system", "user", "assistant"}
PROMPT_KEYS = {"prompt", "messages", "id", "metadata"}


@dataclass
class Prompt:
    prompt_id: str
    messages: list[dict[str, str]]
    source_id: str | None = None
    metadata: dict[str, Any] | None = None

    @property
    def text(self) -> str:
        return self.messages[-1]["content"]


def normalise_messages(value: Any, path: str, where: int | None, key: str, last_role: str = "user") -> list[dict[str, str]]:
    """A prompt as chat messages: a string becomes one user message; whitespace is trimmed. The last
    message must be ``last_role``'s (a prompt ends with the user; an SFT example with the answer)."""
    if isinstance(value, str):
        value = [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise InputError(path, where, f"`{key}` must be a non-empty string or a list of messages")
    messages = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or set(m) - {"role", "content"} or "role" not in m or "content" not in m:
            raise InputError(path, where, f"`{key}[{i}]` must be an object with exactly `role` and `content`")
        role, content = m["role"], m["content"]
        if role not in ROLES:
            raise InputError(path, where, f"`{key}[{i}].role` is {role!r}; use one of system, user, assistant")
        if not isinstance(content, str) or not content.strip():
            raise InputError(path, where, f"`{key}[{i}].content` is empty; every message needs text")
        messages.append({"role": role, "content": content.strip()})
    if messages[-1]["role"] != last_role:
        raise InputError(path, where, f"the last message of `{key}` must be from the {last_role}, "
                                      f"it is {messages[-1]['role']!r}")
    return messages


def prompt_id_for(messages: list[dict[str, str]]) -> str:
    return content_id("prompt", messages)


def parse_prompt(obj: Any, path: str, where: int | None) -> Prompt:
    """One input row as a Prompt, or an InputError naming the row and what to fix."""
    if not isinstance(obj, dict):
        raise InputError(path, where, "each line must be a JSON object with `prompt` or `messages`")
    unknown = set(obj) - PROMPT_KEYS
    if unknown:
        raise InputError(path, where, f"unknown field(s) {sorted(unknown)}", "allowed: prompt, messages, id, metadata")
    if ("prompt" in obj) == ("messages" in obj):
        raise InputError(path, where, "give exactly one of `prompt` (a string) or `messages` (a list)")
    key = "prompt" if "prompt" in obj else "messages"
    messages = normalise_messages(obj[key], path, where, key)
    metadata = obj.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise InputError(path, where, "`metadata` must be an object")
    source_id = obj.get("id")
    if source_id is not None and not isinstance(source_id, (str, int)):
        raise InputError(path, where, "`id` must be a string or an integer")
    return Prompt(prompt_id_for(messages), messages, None if source_id is None else str(source_id), metadata)


def read_jsonl(path: Path) -> list[tuple[int, Any]]:
    """(line number, parsed object) for each non-blank line; errors name the line."""
    rows = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise InputError(path, lineno, f"not valid UTF-8 (byte {e.start})", "save the file as UTF-8") from None
            if not line.strip():
                continue
            try:
                rows.append((lineno, json.loads(line)))
            except json.JSONDecodeError as e:
                raise InputError(path, lineno, f"invalid JSON: {e.msg} at column {e.colno}") from None
    return rows


def read_rows(source: str, split: str = "train") -> list[tuple[int, Any]]:
    """Rows of a JSONL file, a Parquet file or a datasets-loadable source, numbered from 1."""
    path = Path(source)
    suffix = path.suffix.lower()
    if suffix in {".jsonl", ".json", ".ndjson"}:
        if not path.is_file():
            raise InputError(source, None, "file not found")
        return read_jsonl(path)
    if suffix == ".parquet":
        if not path.is_file():
            raise InputError(source, None, "file not found")
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        return [(i, _drop_nulls(row)) for i, row in enumerate(table.to_pylist(), start=1)]
    try:
        import datasets

        ds = datasets.load_dataset(source, split=split)
    except Exception as e:  # datasets raises many types; all mean "could not load this source"
        raise InputError(source, None, f"cannot load as a dataset: {str(e).splitlines()[0]}",
                         "give a .jsonl or .parquet file, or a datasets-loadable path") from None
    return [(i, _drop_nulls(row)) for i, row in enumerate(ds, start=1)]


def _drop_nulls(row: dict) -> dict:
    # Columnar formats give every column to every row; a null there means "not given".
    return {k: v for k, v in row.items() if v is not None}


@dataclass
class PromptFile:
    source: str
    prompts: list[Prompt]  # distinct (by id), the first occurrence winning
    rows: int  # rows read: the difference is duplicates


def load_prompts(source: str, split: str = "train", limit: int | None = None,
                 where: dict[str, str] | None = None) -> PromptFile:
    """The prompts of ``source`` whose metadata has the values of ``where`` (all when None), at most ``limit``
    of them; every row read is validated (without a filter, only the first ``limit`` are read)."""
    rows = read_rows(source, split)
    if limit is not None and not where:
        rows = rows[:limit]
    if not rows:
        raise InputError(source, None, "no prompts found", "add one JSON object per line")
    prompts = [parse_prompt(obj, source, line) for line, obj in rows]
    if where:
        prompts = [p for p in prompts if all(str((p.metadata or {}).get(k)) == str(v) for k, v in where.items())]
        if not prompts:
            raise InputError(source, None, f"no prompt's metadata matches prompts.where {where}",
                             "check the metadata keys and values, or drop prompts.where")
        prompts = prompts[:limit]
    seen: dict[str, Prompt] = {}
    for p in prompts:
        seen.setdefault(p.prompt_id, p)
    return PromptFile(str(source), list(seen.values()), len(prompts))
