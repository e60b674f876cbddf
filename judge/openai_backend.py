"""A judge on any OpenAI-compatible server (vLLM serve, SGLang, ...), with JSON-schema output.

The answer is constrained to the same schema the Claude judge's tools use (an integer per
criterion, or a winner), through ``response_format={"type": "json_schema", ...}``. An invalid
answer is re-asked with the problem stated, up to ``judge.parse_retries`` times, then stored as
parse_error; a request that fails after the SDK's retries is stored as api_error.
"""

from __future__ import annotations

import asyncio
import json
import os
import time

from prefcurate.config import OpenAIJudgeConfig
from prefcurate.errors import CredentialsRefused
from prefcurate.judge.anthropic_backend import VERDICT_TOOL_SPEC, read_answer, score_tool
from prefcurate.judge.render import pairwise_user_message, pointwise_user_message, rubric_system_prompt
from prefcurate.judge.verdict import JudgeTask, Verdict
from prefcurate.rubric import Rubric


class OpenAIJudge:
    def __init__(self, cfg: OpenAIJudgeConfig, rubric: Rubric):
        self.cfg, self.rubric = cfg, rubric
        self.price = cfg.prices.get(cfg.model)
        self.system = rubric_system_prompt(rubric)
        self.schemas = {"pointwise": score_tool(rubric)["input_schema"], "pairwise": VERDICT_TOOL_SPEC["input_schema"]}

    def run(self, tasks: list[JudgeTask], sink) -> None:
        """Judge every task with up to ``judge.concurrency`` requests in flight, calling ``sink(i, verdict)``."""
        asyncio.run(self._run(tasks, sink))

    async def _run(self, tasks: list[JudgeTask], sink) -> None:
        from openai import AsyncOpenAI

        client = AsyncOpenAI(base_url=self.cfg.base_url, api_key=os.environ.get(self.cfg.api_key_env, "EMPTY"),
                             timeout=self.cfg.timeout_s, max_retries=self.cfg.max_retries)
        gate = asyncio.Semaphore(self.cfg.concurrency)

        async def one(i: int, task: JudgeTask) -> None:
            async with gate:
                sink(i, await self._one(client, task))

        async with client:
            await asyncio.gather(*(one(i, t) for i, t in enumerate(tasks)))

    async def _one(self, client, task: JudgeTask) -> Verdict:
        from openai import AuthenticationError, OpenAIError, PermissionDeniedError

        kind = "pairwise" if task.pairwise else "pointwise"
        how = "as a JSON object with the fields the schema asks for"
        user = (pairwise_user_message if task.pairwise else pointwise_user_message)(self.rubric, task, how)
        system = self.system if task.instructions is None else rubric_system_prompt(self.rubric, task.instructions)
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        fmt = {"type": "json_schema", "json_schema": {"name": f"{kind}_verdict", "schema": self.schemas[kind], "strict": True}}
        tokens_in = tokens_out = 0
        start = time.perf_counter()
        raw, problem = None, None
        for _attempt in range(1 + self.cfg.parse_retries):
            try:
                resp = await client.chat.completions.create(model=self.cfg.model, messages=messages, response_format=fmt,
                                                            max_tokens=self.cfg.max_output_tokens, temperature=0.0)
            except (AuthenticationError, PermissionDeniedError) as e:
                raise CredentialsRefused(self.cfg.base_url, self.cfg.api_key_env, e) from None
            except OpenAIError as e:  # the SDK's own retries are spent
                return self._verdict("api_error", raw, f"{type(e).__name__}: {e}", tokens_in, tokens_out, start)
            if resp.usage is not None:
                tokens_in += resp.usage.prompt_tokens
                tokens_out += resp.usage.completion_tokens
            raw = resp.model_dump_json()
            content = resp.choices[0].message.content or ""
            try:
                data = json.loads(content)
            except json.JSONDecodeError as e:
                problem = f"the answer is not JSON ({e.msg})"
            else:
                problem, fields = read_answer(self.rubric, task, data)
                if problem is None:
                    return self._verdict("ok", raw, None, tokens_in, tokens_out, start, **fields)
            messages = messages + [{"role": "assistant", "content": content},
                                   {"role": "user", "content": f"Invalid: {problem}. Answer again with valid JSON."}]
        return self._verdict("parse_error", raw, problem, tokens_in, tokens_out, start)

    def _verdict(self, status, raw, error, tokens_in, tokens_out, start, **fields) -> Verdict:
        cost = (tokens_in * self.price.input + tokens_out * self.price.output) / 1e6 if self.price else None
        return Verdict(status, raw_response=raw, error=error, input_tokens=tokens_in, output_tokens=tokens_out,
                       cost_usd=cost, latency_s=time.perf_counter() - start, **fields)
