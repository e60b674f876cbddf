"""A local server that speaks the Anthropic Messages API wire protocol, on 127.0.0.1.

Claude's API cannot be reached from CI, so the tests and benchmarks point the real `anthropic`
SDK at this server through ``ANTHROPIC_BASE_URL``. It is plain HTTP/1.1 with keep-alive on an
asyncio socket server (a large listen backlog, so bursts are accepted and the judge, not the
server, is what gets measured), and it can inject what production throws at a client: latency,
429/529/500 answers, dropped connections, slow answers past the client's timeout, and malformed
tool input.

    with MessagesAPIServer(latency_s=0.2) as server:
        os.environ["ANTHROPIC_BASE_URL"] = server.url
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

FENCE = re.compile(r"<(response-[0-9a-f]+)>\n(.*?)\n</\1>", re.S)  # lazy: two equal responses share a tag
Scorer = Callable[[dict], dict]


def fenced_texts(body: dict) -> list[str]:
    """The responses a judge request fenced, in the order shown (from its first user turn)."""
    message = next(m for m in body["messages"] if m["role"] == "user")
    content = message["content"]
    text = content if isinstance(content, str) else " ".join(
        b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")
    found = [m.group(2) for m in FENCE.finditer(text)]
    if not found:
        raise ValueError("no fenced response in the request")
    return found


def fenced_candidate(body: dict) -> str:
    """The one response a pointwise request fenced."""
    return fenced_texts(body)[0]


def tool_schema(body: dict) -> dict:
    forced = body["tool_choice"]["name"]
    return next(t for t in body["tools"] if t["name"] == forced)


def text_quality(text: str) -> int:
    """The default judge's opinion of a text: a number that depends on the text alone."""
    return int(hashlib.sha256(f"quality:{text}".encode()).hexdigest(), 16) % 1000


def hashed_scorer(body: dict) -> dict:
    """A default judge without biases: scores and verdicts that depend only on the responses' text,
    never on their order or length."""
    schema = tool_schema(body)["input_schema"]
    if "winner" in schema["properties"]:
        qa, qb = (text_quality(t) for t in fenced_texts(body))
        return {"winner": "A" if qa > qb else "B" if qb > qa else "tie", "rationale": "compared by the local test server"}
    text = fenced_candidate(body)
    out = {}
    for name, spec in schema["properties"].items():
        if spec.get("type") == "integer":
            lo, hi = spec["minimum"], spec["maximum"]
            out[name] = lo + int(hashlib.sha256(f"{name}:{text}".encode()).hexdigest(), 16) % (hi - lo + 1)
    out["rationale"] = "scored by the local test server"
    return out


def _tokens(text: str) -> int:
    return max(1, len(text) // 4)


class MessagesAPIServer:
    """``faults``: answers to give to the next requests, in order, before any random ones: an HTTP
    status (429, 500, 529, ...), "drop" (close the connection), "slow" (answer after ``slow_s``),
    "malformed" (tool input missing a criterion) or "not_json" (a 200 whose body is an HTML page, as
    from a misconfigured proxy). ``fault_rate``: the chance of a random fault from
    ``random_faults`` for every later request. ``api_key``: if set, any other key is refused with a 401."""

    def __init__(self, scorer: Scorer = hashed_scorer, latency_s: float = 0.0, faults: list | None = None,
                 fault_rate: float = 0.0, random_faults: tuple = (429, 529, 500, "drop", "slow", "malformed"),
                 slow_s: float = 5.0, seed: int = 0, backlog: int = 2048, batch_delay_s: float = 0.0,
                 batch_outcomes: dict[str, str] | None = None, api_key: str | None = None):
        self.scorer, self.latency_s, self.slow_s, self.backlog = scorer, latency_s, slow_s, backlog
        self.api_key = api_key
        self.faults = list(faults or [])
        self.fault_rate, self.random_faults, self.rng = fault_rate, random_faults, random.Random(seed)
        self.requests: list[dict] = []  # every request body received, in order
        self.headers: list[dict] = []  # and its headers
        self.arrivals: list[float] = []  # and when it came (time.monotonic)
        self.answers: Counter = Counter()  # what was answered: 200, 429, "drop", ...
        self.answered_at: list[float] = []  # when each 200 answer to a Messages call was sent (time.monotonic)
        self.verdicts: list[tuple[dict, dict]] = []  # (request body, tool input) of every answer with a verdict
        self._cached: set[str] = set()
        # Message Batches: id -> {"requests", "created", "results"}; a batch ends batch_delay_s after it
        # is created; batch_outcomes maps a custom_id to "errored", "expired" or "canceled".
        self.batches: dict[str, dict] = {}
        self.batch_delay_s, self.batch_outcomes = batch_delay_s, dict(batch_outcomes or {})
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server = None
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self.port = 0

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> MessagesAPIServer:
        self._thread = threading.Thread(target=self._run, daemon=True, name="messages-api")
        self._thread.start()
        self._ready.wait(10)
        return self

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", 0, backlog=self.backlog))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        self._loop.close()

    def stop(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    async def _shutdown(self) -> None:
        self._server.close()
        handlers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in handlers:  # open keep-alive connections
            t.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)

    def __enter__(self) -> MessagesAPIServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- HTTP ----------------------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ":" in ln)}
                body = await reader.readexactly(int(headers.get("content-length", 0)))
                status, payload, extra = await self._answer(method, path, headers, body)
                if status == "drop":
                    break
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                reason = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 429: "Too Many Requests",
                          500: "Internal Server Error", 529: "Overloaded"}.get(status, "Error")
                head_out = [f"HTTP/1.1 {status} {reason}", "content-type: application/json",
                            f"content-length: {len(data)}", f"request-id: req_{uuid.uuid4().hex[:12]}",
                            *(f"{k}: {v}" for k, v in extra.items())]
                writer.write(("\r\n".join(head_out) + "\r\n\r\n").encode() + data)
                await writer.drain()
                if status == 200 and path == "/v1/messages":
                    self.answered_at.append(time.monotonic())
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    def _next_fault(self):
        with self._lock:
            if self.faults:
                return self.faults.pop(0)
            if self.fault_rate and self.rng.random() < self.fault_rate:
                return self.rng.choice(self.random_faults)
        return None

    async def _answer(self, method: str, path: str, headers: dict, raw: bytes) -> tuple[Any, Any, dict]:
        path = path.split("?")[0]
        if path.startswith("/v1/messages/batches"):
            return self._batches(method, path, raw)
        if method != "POST" or path != "/v1/messages":
            return 404, _error("not_found_error", f"{method} {path} is not served here"), {}
        body = json.loads(raw)
        with self._lock:
            self.requests.append(body)
            self.headers.append(headers)
            self.arrivals.append(time.monotonic())
        if self.api_key is not None and headers.get("x-api-key") != self.api_key:
            return 401, _error("authentication_error", "invalid x-api-key"), {}
        fault = self._next_fault()
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        if isinstance(fault, int):
            self.answers[fault] += 1
            kind = {429: "rate_limit_error", 529: "overloaded_error"}.get(fault, "api_error")
            return fault, _error(kind, f"injected {fault}"), {"retry-after-ms": "10", "x-should-retry": "true"}
        if fault == "drop":
            self.answers["drop"] += 1
            return "drop", {}, {}
        if fault == "not_json":
            self.answers["not_json"] += 1
            return 200, b"<html><body>502 Bad Gateway</body></html>", {}
        if fault == "slow":
            self.answers["slow"] += 1
            await asyncio.sleep(self.slow_s)
        tool_input = self.scorer(body)
        if fault == "malformed":
            self.answers["malformed"] += 1
            tool_input = {k: v for k, v in list(tool_input.items())[1:]}  # a criterion goes missing
        else:
            self.answers[200] += 1
        with self._lock:
            self.verdicts.append((body, tool_input))
        return 200, self._message(body, tool_input), {}

    def _message(self, body: dict, tool_input: dict) -> dict:
        system = body.get("system") or []
        blocks = [system] if isinstance(system, str) else system
        cached_text = "".join(b["text"] for b in blocks if isinstance(b, dict) and b.get("cache_control"))
        other_text = "".join(b["text"] for b in blocks if isinstance(b, dict) and not b.get("cache_control"))
        other_text += json.dumps(body["messages"]) + json.dumps(body.get("tools", []))
        cache_read = cache_write = 0
        if cached_text:
            key = hashlib.sha256((body["model"] + cached_text).encode()).hexdigest()
            with self._lock:
                hit = key in self._cached
                self._cached.add(key)
            if hit:
                cache_read = _tokens(cached_text)
            else:
                cache_write = _tokens(cached_text)
        return {
            "id": f"msg_{uuid.uuid4().hex[:24]}", "type": "message", "role": "assistant", "model": body["model"],
            "content": [{"type": "tool_use", "id": f"toolu_{uuid.uuid4().hex[:24]}",
                         "name": body["tool_choice"]["name"], "input": tool_input}],
            "stop_reason": "tool_use", "stop_sequence": None,
            "usage": {"input_tokens": _tokens(other_text), "output_tokens": _tokens(json.dumps(tool_input)),
                      "cache_creation_input_tokens": cache_write, "cache_read_input_tokens": cache_read},
        }


    # -- Message Batches -----------------------------------------------------------------------
    def _batches(self, method: str, path: str, raw: bytes) -> tuple[Any, Any, dict]:
        parts = path.strip("/").split("/")  # v1 messages batches [id] [results]
        if method == "POST" and len(parts) == 3:
            body = json.loads(raw)
            batch_id = f"msgbatch_{uuid.uuid4().hex[:24]}"
            with self._lock:
                self.batches[batch_id] = {"requests": body["requests"], "created": time.monotonic(), "results": None}
                self.requests.extend(r["params"] for r in body["requests"])
            return 200, self._batch_json(batch_id), {}
        batch = self.batches.get(parts[3]) if len(parts) >= 4 else None
        if method != "GET" or batch is None:
            return 404, _error("not_found_error", f"{method} {path} is not served here"), {}
        if len(parts) == 4:
            return 200, self._batch_json(parts[3]), {}
        if batch["results"] is None:
            return 404, _error("not_found_error", "the batch has not ended"), {}
        return 200, "".join(json.dumps(r) + "\n" for r in batch["results"]).encode(), {}

    def _batch_json(self, batch_id: str) -> dict:
        batch = self.batches[batch_id]
        ended = time.monotonic() - batch["created"] >= self.batch_delay_s
        if ended and batch["results"] is None:
            batch["results"] = [self._batch_result(r) for r in batch["requests"]]
        counts = Counter(r["result"]["type"] for r in batch["results"] or [])
        stamp = "2026-11-30T00:00:00Z"
        return {
            "id": batch_id, "type": "message_batch", "processing_status": "ended" if ended else "in_progress",
            "request_counts": {"processing": 0 if ended else len(batch["requests"]), "succeeded": counts["succeeded"],
                               "errored": counts["errored"], "canceled": counts["canceled"], "expired": counts["expired"]},
            "created_at": stamp, "expires_at": stamp, "ended_at": stamp if ended else None, "archived_at": None,
            "cancel_initiated_at": None,
            "results_url": f"{self.url}/v1/messages/batches/{batch_id}/results" if ended else None,
        }

    def _batch_result(self, request: dict) -> dict:
        outcome = self.batch_outcomes.get(request["custom_id"], "succeeded")
        self.answers[f"batch {outcome}"] += 1
        if outcome == "succeeded":
            result = {"type": "succeeded", "message": self._message(request["params"], self.scorer(request["params"]))}
        elif outcome == "errored":
            result = {"type": "errored", "error": {"type": "error", "error": {"type": "invalid_request_error",
                                                                              "message": "injected batch error"}}}
        else:
            result = {"type": outcome}
        return {"custom_id": request["custom_id"], "result": result}


def _error(kind: str, message: str) -> dict:
    return {"type": "error", "error": {"type": kind, "message": message}}


def main() -> None:
    """Serve until killed, in a process of its own: `python -m prefcurate.testing.messages_api --latency 0.2`.
    Prints the URL on its first line."""
    import argparse
    import signal

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--latency", type=float, default=0.0, help="Seconds before each answer.")
    ap.add_argument("--fault-rate", type=float, default=0.0, help="Share of requests answered with a fault.")
    args = ap.parse_args()
    server = MessagesAPIServer(latency_s=args.latency, fault_rate=args.fault_rate).start()
    print(server.url, flush=True)
    signal.sigwait({signal.SIGINT, signal.SIGTERM})
    server.stop()


if __name__ == "__main__":
    main()
