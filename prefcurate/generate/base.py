"""What every generation backend takes and returns."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class GenRequest:
    prompt_id: str
    messages: list[dict[str, str]]
    seed: int  # per prompt: one seed shared by several prompts would share one random stream


@dataclass
class Sample:
    text: str
    finish_reason: str | None
    completion_tokens: int | None


@dataclass
class GenResult:
    prompt_id: str
    samples: list[Sample]
    prompt_tokens: int | None
    latency_s: float
    error: str | None = None  # set when the request failed after the backend's own retries
