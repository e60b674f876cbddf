"""Claude as the judge, through the official `anthropic` SDK.

Structured output by forced tool use: one tool whose input schema has an integer per criterion
and a short rationale. The rubric is the system prompt, marked for prompt caching, so every call
after the first reads it from the cache. Candidate text is fenced as untrusted data (see
render.py). The SDK retries 408/409/429/5xx (529 too) with backoff; an answer whose tool input is
invalid is re-asked up to ``judge.parse_retries`` times with the problem stated; after that the
judgment is stored as parse_error, and a call that still fails is stored as api_error: never a
made-up score. Concurrency, requests/min and tokens/min are bounded on the client, and no call
starts that could take the run's spend past ``judge.max_usd``.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from collections.abc import Callable

from prefcurate.config import AnthropicJudgeConfig, ModelPrice
from prefcurate.errors import ConfigError, CredentialsRefused
from prefcurate.judge.render import pairwise_user_message, pointwise_user_message, rubric_system_prompt
from prefcurate.judge.verdict import JudgeTask, Verdict
from prefcurate.rubric import Rubric

SCORE_TOOL, VERDICT_TOOL = "submit_scores", "submit_verdict"
POSITIONS = {"A": "first", "B": "second", "tie": "tie"}

# USD per million tokens (input, output, 5-minute cache write, cache read), from Anthropic's pricing
# page. A model id matches its entry exactly or with a date suffix (claude-haiku-4-5-20251001);
# `judge.prices` adds or overrides entries. A model with no price gets no cost (and no budget).
PRICES: dict[str, ModelPrice] = {
    name: ModelPrice(input=i, output=o, cache_write=w, cache_read=r)
    for name, (i, o, w, r) in {
        "claude-fable-5-1": (10, 50, 12.50, 0.25), "claude-fable-5": (10, 50, 12.50, 1.00),
        "claude-opus-5": (5, 25, 6.25, 0.50), "claude-opus-4-8": (5, 25, 6.25, 0.50),
        "claude-opus-4-7": (5, 25, 6.25, 0.50), "claude-opus-4-6": (5, 25, 6.25, 0.50),
        "claude-opus-4-5": (5, 25, 6.25, 0.50), "claude-opus-4-1": (15, 75, 18.75, 1.50),
        "claude-opus-4": (15, 75, 18.75, 1.50), "claude-sonnet-4-6": (3, 15, 3.75, 0.30),
        "claude-sonnet-4-5": (3, 15, 3.75, 0.30), "claude-sonnet-4": (3, 15, 3.75, 0.30),
        "claude-haiku-4-5": (1, 5, 1.25, 0.10), "claude-3-5-haiku": (0.80, 4, 1.00, 0.08),
    }.items()
}
DATE_SUFFIX = re.compile(r"-\d{8}$")


BATCH_DISCOUNT = 0.5  # Message Batches are billed at half the price


NO_USAGE = {"input": 0, "output": 0, "cache_read": 0, "cache_write": 0}


def usage_of(message: dict) -> dict[str, int]:
    """A Messages API answer's token counts, under the names the judgments table uses."""
    u = message.get("usage") or {}
    return {"input": u.get("input_tokens") or 0, "output": u.get("output_tokens") or 0,
            "cache_read": u.get("cache_read_input_tokens") or 0, "cache_write": u.get("cache_creation_input_tokens") or 0}


def price_for(model: str, overrides: dict[str, ModelPrice]) -> ModelPrice | None:
    table = PRICES | overrides
    return table.get(model) or table.get(DATE_SUFFIX.sub("", model))


def cost_of(usage: dict[str, int], price: ModelPrice | None) -> float | None:
    if price is None:
        return None
    return (usage["input"] * price.input + usage["output"] * price.output
            + usage["cache_write"] * price.cache_write + usage["cache_read"] * price.cache_read) / 1e6


def score_tool(rubric: Rubric) -> dict:
    lo, hi = rubric.scale.min, rubric.scale.max
    props = {c.name: {"type": "integer", "minimum": lo, "maximum": hi, "description": c.description}
             for c in rubric.criteria}
    props["rationale"] = {"type": "string", "description": "One or two sentences: why these scores."}
    return {"name": SCORE_TOOL, "description": f"Submit the response's score ({lo}-{hi}) on every criterion.",
            "input_schema": {"type": "object", "properties": props, "required": [*props]}}


VERDICT_TOOL_SPEC = {
    "name": VERDICT_TOOL,
    "description": "Submit which response is better overall under the rubric.",
    "input_schema": {"type": "object", "properties": {
        "winner": {"type": "string", "enum": ["A", "B", "tie"], "description": "The better response, or tie."},
        "rationale": {"type": "string", "description": "One or two sentences: why."},
    }, "required": ["winner", "rationale"]},
}


def check_scores(rubric: Rubric, data) -> str | None:
    """What is wrong with a submit_scores input, or None."""
    if not isinstance(data, dict):
        return "the tool input is not an object"
    lo, hi = rubric.scale.min, rubric.scale.max
    for c in rubric.criteria:
        v = data.get(c.name)
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            return f"`{c.name}` must be an integer from {lo} to {hi}, got {json.dumps(v)}"
    return None


def check_verdict(rubric: Rubric, data) -> str | None:
    """What is wrong with a submit_verdict input, or None."""
    if not isinstance(data, dict) or data.get("winner") not in POSITIONS:
        return f"`winner` must be one of A, B, tie, got {json.dumps(data.get('winner') if isinstance(data, dict) else data)}"
    return None


def read_answer(rubric: Rubric, task: JudgeTask, data) -> tuple[str | None, dict]:
    """(problem or None, verdict fields) from a judge's structured answer (tool input or JSON)."""
    problem = (check_verdict if task.pairwise else check_scores)(rubric, data)
    if problem is not None:
        return problem, {}
    fields = {"rationale": str(data.get("rationale", ""))}
    if task.pairwise:
        fields["winner"] = POSITIONS[data["winner"]]
    else:
        fields["scores"] = {c.name: float(data[c.name]) for c in rubric.criteria}
    return None, fields


class RateLimiter:
    """At most ``per_minute`` units a minute, spread evenly: each caller reserves the next slot. No
    bursts, since a burst measured over a short window at the server reads as going over the limit."""

    def __init__(self, per_minute: float):
        self.rate = per_minute / 60.0
        self.next = time.monotonic()  # when the next unit may go
        self.lock = asyncio.Lock()

    async def take(self, amount: float) -> None:
        async with self.lock:
            now = time.monotonic()
            # A caller woken late by a busy event loop does not push every later slot back: up to a
            # tenth of a second of lateness is made up, so the average stays at the limit.
            self.next = max(self.next, now - 0.1)
            wait = self.next - now
            self.next += amount / self.rate
        if wait > 0:
            await asyncio.sleep(wait)


class AnthropicJudge:
    def __init__(self, cfg: AnthropicJudgeConfig, rubric: Rubric):
        if not os.environ.get("ANTHROPIC_API_KEY"):
            raise ConfigError("judge.backend is anthropic but ANTHROPIC_API_KEY is not set; export it first")
        self.cfg, self.rubric = cfg, rubric
        self.price = price_for(cfg.model, cfg.prices)
        if cfg.max_usd is not None and self.price is None:
            raise ConfigError(f"judge.max_usd is set but no price is known for {cfg.model!r}; "
                              "add it under judge.prices (USD per million tokens)")
        self.system = [{"type": "text", "text": rubric_system_prompt(rubric), "cache_control": {"type": "ephemeral"}}]
        self.score_tool = score_tool(rubric)
        self.spent = 0.0  # this judge's spend so far, across calls of judge()
        self.reserved = 0.0

    # -- budget --------------------------------------------------------------------------------
    def _worst_case(self, request_chars: int) -> float:
        if self.price is None:
            return 0.0
        # Upper bounds: about 3 characters a token, the whole prompt billed as a cache write,
        # every allowed output token used, for the first ask and each re-ask.
        tokens_in = request_chars / 3 + len(self.system[0]["text"]) / 3
        per_call = (tokens_in * max(self.price.input, self.price.cache_write) + self.cfg.max_output_tokens * self.price.output) / 1e6
        return per_call * (1 + self.cfg.parse_retries)

    # -- calls ---------------------------------------------------------------------------------
    def run(self, tasks: list[JudgeTask], sink) -> None:
        """Judge every task with up to ``judge.concurrency`` calls in flight, calling ``sink(i, verdict)``
        as each one completes (verdict None: not started, the budget would not allow it)."""
        asyncio.run(self._run(tasks, sink))

    async def _run(self, tasks: list[JudgeTask], sink) -> None:
        from anthropic import AsyncAnthropic, DefaultAioHttpClient

        # aiohttp, not the default httpx transport: httpx's connection pool spends CPU per request
        # that grows with the connections open, and took about half the client's time at 128 in
        # flight (bench/judge_throughput.py measures both).
        client = AsyncAnthropic(max_retries=self.cfg.max_retries, timeout=self.cfg.timeout_s,
                                http_client=DefaultAioHttpClient())
        gate = asyncio.Semaphore(self.cfg.concurrency)
        rpm = RateLimiter(self.cfg.requests_per_minute) if self.cfg.requests_per_minute else None
        tpm = RateLimiter(self.cfg.tokens_per_minute) if self.cfg.tokens_per_minute else None

        async def one(i: int, task: JudgeTask) -> None:
            sink(i, await self._one(client, gate, rpm, tpm, task))

        async with client:
            await asyncio.gather(*(one(i, t) for i, t in enumerate(tasks)))

    def _request(self, task: JudgeTask) -> tuple[str, dict]:
        """(user message, tool) for a task."""
        if task.pairwise:
            return pairwise_user_message(self.rubric, task), VERDICT_TOOL_SPEC
        return pointwise_user_message(self.rubric, task), self.score_tool

    def _params(self, messages: list[dict], tool: dict, task: JudgeTask) -> dict:
        # No sampling parameters: SDK 2.x's Messages API no longer takes them.
        system = self.system if task.instructions is None else [
            {"type": "text", "text": rubric_system_prompt(self.rubric, task.instructions), "cache_control": {"type": "ephemeral"}}]
        return {"model": self.cfg.model, "max_tokens": self.cfg.max_output_tokens, "system": system,
                "messages": messages, "tools": [tool], "tool_choice": {"type": "tool", "name": tool["name"]}}

    def _read(self, message: dict, tool: dict, task: JudgeTask) -> tuple[str | None, dict, dict | None]:
        """(problem or None, verdict fields, the tool call) from a Messages API answer, as JSON."""
        call = next((b for b in message.get("content") or []
                     if b.get("type") == "tool_use" and b.get("name") == tool["name"]), None)
        if call is None:
            return f"no {tool['name']} tool call", {}, None
        problem, fields = read_answer(self.rubric, task, call.get("input"))
        return problem, fields, call

    async def _one(self, client, gate, rpm, tpm, task: JudgeTask) -> Verdict | None:
        from anthropic import APIError, AuthenticationError, PermissionDeniedError

        user, tool = self._request(task)
        messages = [{"role": "user", "content": user}]
        async with gate:
            worst = self._worst_case(len(user))
            if self.cfg.max_usd is not None and self.spent + self.reserved + worst > self.cfg.max_usd:
                return None
            self.reserved += worst
            usage_total = NO_USAGE
            start = time.perf_counter()
            raw, problem = None, None
            try:
                for _attempt in range(1 + self.cfg.parse_retries):
                    if rpm:
                        await rpm.take(1)
                    if tpm:
                        await tpm.take(len(user) / 3 + self.cfg.max_output_tokens)
                    try:
                        # The body as sent, read as JSON here: the SDK's typed Message costs client CPU
                        # that limits throughput at high concurrency, and the body is what is stored.
                        answer = await client.messages.with_raw_response.create(**self._params(messages, tool, task))
                        raw = await answer.text()
                        message = json.loads(raw)
                        if not isinstance(message, dict):
                            raise ValueError(f"a JSON {type(message).__name__}")
                    except (AuthenticationError, PermissionDeniedError) as e:
                        raise CredentialsRefused(str(client.base_url), "ANTHROPIC_API_KEY", e) from None
                    except APIError as e:  # the SDK's own retries are spent
                        return self._verdict("api_error", raw, f"{type(e).__name__}: {e}", usage_total, start)
                    except ValueError as e:  # judged again next run, like any API error
                        return self._verdict("api_error", raw, f"the answer is not a Messages API JSON object: {e}",
                                             usage_total, start)
                    usage = usage_of(message)
                    usage_total = {k: usage_total[k] + usage[k] for k in usage}
                    problem, fields, call = self._read(message, tool, task)
                    if problem is None:
                        return self._verdict("ok", raw, None, usage_total, start, **fields)
                    # Re-ask with the problem stated, as the tool result of the bad call.
                    messages = messages + [
                        {"role": "assistant", "content": message.get("content") or []},
                        {"role": "user", "content": [{
                            "type": "tool_result", "tool_use_id": call["id"], "is_error": True,
                            "content": f"Invalid: {problem}. Call {tool['name']} again, correctly.",
                        }] if call is not None else f"Call the {tool['name']} tool."},
                    ]
                return self._verdict("parse_error", raw, problem, usage_total, start)
            finally:
                self.reserved -= worst
                self.spent += cost_of(usage_total, self.price) or 0.0

    # -- Message Batches -----------------------------------------------------------------------
    def submit_batch(self, tasks: list[JudgeTask], custom_ids: list[str]) -> tuple[str | None, int]:
        """Submit as many tasks as the budget allows as one Message Batch: (batch id, how many)."""
        from anthropic import Anthropic

        requests = []
        for task, custom_id in zip(tasks, custom_ids):
            user, tool = self._request(task)
            worst = self._worst_case(len(user)) * BATCH_DISCOUNT
            if self.cfg.max_usd is not None and self.spent + self.reserved + worst > self.cfg.max_usd:
                break
            self.reserved += worst
            requests.append({"custom_id": custom_id, "params": self._params([{"role": "user", "content": user}], tool, task)})
        if not requests:
            return None, 0
        with Anthropic(max_retries=self.cfg.max_retries, timeout=self.cfg.timeout_s) as client:
            batch = client.messages.batches.create(requests=requests)
        return batch.id, len(requests)

    def wait_batch(self, batch_id: str, on_poll: Callable[[object], None] | None = None) -> None:
        """Poll until the batch has ended, backing off from judge.batch_poll_s to 5 minutes."""
        from anthropic import Anthropic

        delay = self.cfg.batch_poll_s
        with Anthropic(max_retries=self.cfg.max_retries, timeout=self.cfg.timeout_s) as client:
            while (batch := client.messages.batches.retrieve(batch_id)).processing_status != "ended":
                if on_poll:
                    on_poll(batch)
                time.sleep(delay)
                delay = min(delay * 1.5, 300.0)

    def batch_verdicts(self, batch_id: str, tasks: dict[str, JudgeTask]) -> dict[str, Verdict]:
        """The verdicts of an ended batch, by custom id, for the tasks given (others are skipped)."""
        from anthropic import Anthropic

        verdicts = {}
        with Anthropic(max_retries=self.cfg.max_retries, timeout=self.cfg.timeout_s) as client:
            for item in client.messages.batches.results(batch_id):
                task = tasks.get(item.custom_id)
                if task is None:
                    continue
                result = item.result
                if result.type != "succeeded":  # errored, expired or canceled: judged again next run
                    detail = result.error.error.message if result.type == "errored" else ""
                    verdicts[item.custom_id] = Verdict("api_error", error=f"batch request {result.type}: {detail}".strip(": "),
                                                       input_tokens=0, output_tokens=0, cost_usd=0.0)
                    continue
                message = result.message.model_dump(mode="json")
                usage = usage_of(message)
                cost = cost_of(usage, self.price)
                cost = cost * BATCH_DISCOUNT if cost is not None else None
                self.spent += cost or 0.0
                problem, fields, _ = self._read(message, self._request(task)[1], task)
                # No re-ask inside a batch: an invalid answer is a parse_error.
                verdicts[item.custom_id] = Verdict(
                    "ok" if problem is None else "parse_error", raw_response=json.dumps(message), error=problem,
                    input_tokens=usage["input"], output_tokens=usage["output"], cache_read_tokens=usage["cache_read"],
                    cache_write_tokens=usage["cache_write"], cost_usd=cost, **fields)
        self.reserved = 0.0
        return verdicts

    def _verdict(self, status, raw, error, usage, start, rationale=None, scores=None, winner=None) -> Verdict:
        return Verdict(status, scores=scores, winner=winner, rationale=rationale, raw_response=raw, error=error,
                       input_tokens=usage["input"], output_tokens=usage["output"],
                       cache_read_tokens=usage["cache_read"], cache_write_tokens=usage["cache_write"],
                       cost_usd=cost_of(usage, self.price), latency_s=time.perf_counter() - start)
