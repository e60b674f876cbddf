"""The openai backend against a real OpenAI-compatible server: vLLM's own, on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from conftest import context

from prefcurate import generate
from prefcurate.judge.stage import run as judge
from prefcurate.prompts import import_prompts
from prefcurate.store import Store


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def vllm_server(tiny_model, tmp_path_factory):
    port = _free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(tiny_model),
           "--served-model-name", "tiny", "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32",
           "--enforce-eager", "--max-model-len", "2048", "--no-enable-chunked-prefill",
           "--max-num-batched-tokens", "8192"]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 240
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError("vLLM server did not start:\n" + log.read_text()[-3000:]) from None
                time.sleep(1)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_openai_backend_generates_against_a_vllm_server(vllm_server, tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text("".join(json.dumps({"prompt": t}) + "\n" for t in ["Name a fruit.", "Say hello.", "Count to 3."]))
    settings = {"backend": "openai", "model": "tiny", "base_url": vllm_server, "n": 2, "max_tokens": 12, "concurrency": 2}
    with Store(tmp_path / "s.duckdb") as store:
        ids = import_prompts(store, str(f)).prompt_ids
        stats = generate.run(store, context(generator=settings).scoped(ids))
        assert (stats.generated, stats.candidates_new, stats.failed) == (3, 6, 0)
        rows = store.query("SELECT * FROM candidates")
        assert all(r["generator"] == "openai:tiny" and r["finish_reason"] in {"stop", "length"} for r in rows)
        assert all(r["prompt_tokens"] > 0 and r["latency_s"] > 0 for r in rows)
        assert generate.run(store, context(generator=settings).scoped(ids)).generated == 0


def test_openai_backend_counts_failures_and_stores_nothing_for_them(vllm_server, tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps({"prompt": "Name a fruit."}) + "\n")
    settings = {"backend": "openai", "model": "no-such-model", "base_url": vllm_server, "n": 1, "max_tokens": 4}
    with Store(tmp_path / "s.duckdb") as store:
        ids = import_prompts(store, str(f)).prompt_ids
        stats = generate.run(store, context(generator=settings).scoped(ids))
        assert (stats.generated, stats.failed) == (0, 1) and "NotFoundError" in stats.first_error
        assert store.scalar("SELECT count(*) FROM candidates") == 0


def test_openai_judge_with_json_schema_output(vllm_server, tmp_path):
    from prefcurate.generate import import_candidates

    f = tmp_path / "c.jsonl"
    f.write_text(json.dumps({"prompt": "Capital of France?", "candidates": ["Paris.", "Lyon."]}) + "\n")
    cfg = context(judge={"backend": "openai", "model": "tiny", "base_url": vllm_server, "mode": "pointwise",
                         "max_output_tokens": 96})
    with Store(tmp_path / "s.duckdb") as store:
        import_candidates(store, str(f))
        stats = judge(store, cfg)
        rows = store.query("SELECT status, scores, overall, error, raw_response, input_tokens FROM judgments")
    assert stats.judged + stats.failed == 2
    # The schema constrains the tiny random model's output; whatever it says is stored, never made up.
    for r in rows:
        assert r["status"] in {"ok", "parse_error"} and r["input_tokens"] > 0 and r["raw_response"]
        if r["status"] == "ok":
            assert set(json.loads(r["scores"])) == {"correctness", "task_completion", "clarity"}
        else:
            assert r["overall"] is None and r["error"]


def test_a_refused_key_stops_the_openai_judge(tmp_path):
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from prefcurate.errors import CredentialsRefused
    from prefcurate.generate import import_candidates

    class Refuse(BaseHTTPRequestHandler):  # an OpenAI-compatible server with another key
        def do_POST(self):
            body = json.dumps({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}}).encode()
            self.send_response(401)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    f = tmp_path / "c.jsonl"
    f.write_text(json.dumps({"prompt": "Capital of France?", "candidates": ["Paris.", "Lyon."]}) + "\n")
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    cfg = context(judge={"backend": "openai", "model": "tiny", "base_url": url, "mode": "pointwise"})
    try:
        with Store(tmp_path / "s.duckdb") as store:
            import_candidates(store, str(f))
            with pytest.raises(CredentialsRefused, match=r"refused the key in \$OPENAI_API_KEY \(401: Incorrect API key"):
                judge(store, cfg)
            assert store.scalar("SELECT count(*) FROM judgments") == 0
    finally:
        server.shutdown()
