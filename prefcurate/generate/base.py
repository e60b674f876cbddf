"""What every generation backend takes and returns."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from prefcurate.config import InProcessModel


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


def context_length(cfg: InProcessModel) -> int:
    """The context a local model runs with: ``max_model_len`` if set, else the model's own."""
    return cfg.max_model_len if cfg.max_model_len is not None else _model_context(cfg.model)


@lru_cache
def _model_context(model: str) -> int:
    # Read once per model: too_long asks for every prompt.
    from transformers import AutoConfig

    return getattr(AutoConfig.from_pretrained(model), "max_position_embeddings", 8192)


def overflow(tokenizer, messages: list[dict[str, str]], limit: int) -> str | None:
    """Why a prompt cannot be generated from (its chat-formatted tokens fill the context), or None."""
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    n = len(ids["input_ids"] if hasattr(ids, "keys") else ids)
    if n >= limit:
        return f"prompt is {n} tokens, the model's context {limit} (generator.max_model_len): nothing left to generate"
    return None
