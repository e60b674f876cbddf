"""What every judge backend returns for one candidate."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Status = Literal["ok", "parse_error", "api_error", "skipped"]


@dataclass
class Verdict:
    status: Status
    scores: dict[str, float] | None = None  # per criterion; None unless status is ok
    rationale: str | None = None
    raw_response: str | None = None  # what the judge returned, as text
    error: str | None = None  # why it is not ok
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    cost_usd: float | None = None
    latency_s: float | None = None
