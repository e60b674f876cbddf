"""What every judge backend is asked, and what it returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Status = Literal["ok", "parse_error", "api_error", "skipped"]
Position = Literal["first", "second", "tie"]


@dataclass(frozen=True)
class JudgeTask:
    prompt: list[dict[str, str]]  # the conversation the responses answer
    responses: tuple[str, ...]  # one: score it (pointwise); two: which is better, in the order shown (pairwise)
    reference: str | None = None  # a reference answer from the prompt's metadata, shown to the judge
    instructions: str | None = None  # a paraphrase of the rubric's instructions (the template probe); None: its own

    @property
    def pairwise(self) -> bool:
        return len(self.responses) == 2


@dataclass
class Verdict:
    status: Status
    scores: dict[str, float] | None = None  # pointwise: per criterion; None unless status is ok
    winner: Position | None = None  # pairwise: by position shown; None unless status is ok
    rationale: str | None = None
    raw_response: str | None = None  # what the judge returned, as text
    error: str | None = None  # why it is not ok
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    cost_usd: float | None = None
    latency_s: float | None = None
