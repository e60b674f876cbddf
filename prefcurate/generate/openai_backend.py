"""Any OpenAI-compatible server (vLLM serve, SGLang, llama.cpp): async, bounded concurrency."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable

from prefcurate.config import OpenAIGeneratorConfig
from prefcurate.generate.base import GenRequest, GenResult, Sample


class OpenAIGenerator:
    def __init__(self, cfg: OpenAIGeneratorConfig):
        self.cfg = cfg
        self.name = cfg.identity

    def generate(self, requests: list[GenRequest], sink: Callable[[GenResult], None]) -> None:
        """Up to ``generator.concurrency`` requests in flight; ``sink`` gets each result as it comes."""
        asyncio.run(self._generate_all(requests, sink))

    async def _generate_all(self, requests: list[GenRequest], sink: Callable[[GenResult], None]) -> None:
        from openai import AsyncOpenAI

        client = AsyncOpenAI(base_url=self.cfg.base_url, api_key=os.environ.get(self.cfg.api_key_env, "EMPTY"),
                             timeout=self.cfg.timeout_s, max_retries=self.cfg.max_retries)
        gate = asyncio.Semaphore(self.cfg.concurrency)

        async def one(req: GenRequest) -> None:
            sink(await self._one(client, gate, req))

        async with client:
            await asyncio.gather(*(one(r) for r in requests))

    async def _one(self, client, gate: asyncio.Semaphore, req: GenRequest) -> GenResult:
        from openai import OpenAIError

        async with gate:
            start = time.perf_counter()
            try:
                resp = await client.chat.completions.create(
                    model=self.cfg.model, messages=req.messages, n=self.cfg.n,
                    temperature=self.cfg.temperature, top_p=self.cfg.top_p,
                    max_tokens=self.cfg.max_tokens, seed=req.seed,
                )
            except OpenAIError as e:  # the SDK already retried transient faults
                return GenResult(req.prompt_id, [], None, time.perf_counter() - start, f"{type(e).__name__}: {e}")
        usage = resp.usage
        # The server reports one completion-token total for all n choices; per-candidate counts are
        # only known when n == 1.
        per_choice = usage.completion_tokens if usage is not None and self.cfg.n == 1 else None
        samples = [Sample(c.message.content or "", c.finish_reason, per_choice) for c in resp.choices]
        return GenResult(req.prompt_id, samples, usage.prompt_tokens if usage else None, time.perf_counter() - start)
