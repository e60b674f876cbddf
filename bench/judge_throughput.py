"""Judge throughput: the full Claude judge stage against a local Messages-API server.

    .venv/bin/python bench/judge_throughput.py [--latency 0.2] [--levels 1,8,16,32,64,128] [--whole-run 1600]

The server (prefcurate/testing/messages_api.py) runs in a process of its own and answers after
``--latency`` seconds. At each in-flight level we measure judgments/s of the whole stage,
`prefcurate.judge.stage.run` with store writes, and report it as a ratio of (a) the ideal, in_flight / latency, and (b) a bare
`asyncio.gather` over the SDK with a semaphore at the same level, measured in the same run: on 2
cores (b) is the practical ceiling once client and server saturate the CPU. Each rate is the
median of three runs, interleaved. The judge and (b) use the SDK's aiohttp transport; a bare
gather over the SDK's default httpx transport is shown too, to say what that choice is worth.
Then a client-side rate limit set at half of the measured ceiling: achieved rate / limit. Also the
share of input tokens read from the prompt cache. Ratios, not wall times, are the result.
Targets: >= 0.9 of (a) up to 16 in flight, >= 0.9 of (b) at every level, >= 0.95 of the rate limit.

Last, the whole run: `prefcurate run` (process start to exit) judging ``--whole-run`` imported
candidates at 32 in flight, beside the judge stage alone on as many in this process, without and
with a running Prefect server (PREFECT_API_URL): what imports, set-up and Prefect add to a run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def start_server(latency: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "prefcurate.testing.messages_api", "--latency", str(latency)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    return proc, proc.stdout.readline().strip()


def make_store(folder: Path, n: int, tag: str):
    from prefcurate.generate import import_candidates
    from prefcurate.store import Store

    f = folder / f"{tag}.jsonl"
    f.write_text("".join(json.dumps({"prompt": f"Question {i}: explain topic {i} briefly.",
                                     "candidates": [f"Answer {i}: a short, careful explanation of topic {i}."]}) + "\n"
                         for i in range(n)))
    store = Store(folder / f"{tag}.duckdb")
    import_candidates(store, str(f))
    return store


def claude_judge(in_flight: int, **judge_kw) -> dict:
    return {"backend": "anthropic", "model": "claude-sonnet-4-6", "rubric": str(ROOT / "rubrics" / "helpfulness.yaml"),
            "mode": "pointwise", "concurrency": in_flight, **judge_kw}


def stage_rate(folder: Path, in_flight: int, n: int, tag: str, **judge_kw) -> tuple[float, float]:
    """Judgments/s of the judge stage, and the cache-read share of input tokens."""
    from prefcurate.config import Config
    from prefcurate.context import RunContext
    from prefcurate.judge import stage

    store = make_store(folder, n, tag)
    ctx = RunContext.of(Config.model_validate({"judge": claude_judge(in_flight, **judge_kw)}))
    start = time.perf_counter()
    stats = stage.run(store, ctx)
    elapsed = time.perf_counter() - start
    assert stats.judged == n, stats
    read, total = store.scalar("SELECT [sum(cache_read_tokens), sum(input_tokens + cache_read_tokens + "
                               "cache_write_tokens)] FROM judgments")
    store.close()
    return n / elapsed, float(read) / float(total)


def whole_run(folder: Path, n: int, in_flight: int, tag: str, env: dict) -> float:
    """Seconds from starting `prefcurate run` to its exit, judging ``n`` imported candidates."""
    import yaml

    make_store(folder, n, tag).close()
    config = folder / f"{tag}.yaml"
    config.write_text(yaml.safe_dump({"generator": {"backend": "none"}, "judge": claude_judge(in_flight),
                                      "pairs": {"min_margin": 0.0}, "probes": {"sample": 0}}))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "prefcurate.cli", "run", str(config), "--db", str(folder / f"{tag}.duckdb"),
                    "--quiet"], cwd=ROOT, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def prefect_server(folder: Path, env: dict) -> tuple[subprocess.Popen, str]:
    """`prefect server start` on a free port, once it answers."""
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                            cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/api"
    for _ in range(600):
        try:
            urllib.request.urlopen(f"{url}/health", timeout=1)
            return proc, url
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("prefect server start did not answer")


def whole_run_report(folder: Path, n: int, repeats: int) -> None:
    env = os.environ | {"PREFECT_HOME": str(folder / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                        "DO_NOT_TRACK": "1"}
    env.pop("PREFECT_API_URL", None)
    whole_run(folder, 8, 32, "warm-up", env)  # Prefect's database is created on first use
    plain = [whole_run(folder, n, 32, f"whole-{r}", env) for r in range(repeats)]
    server, url = prefect_server(folder, env)
    try:
        served = [whole_run(folder, n, 32, f"served-{r}", env | {"PREFECT_API_URL": url}) for r in range(repeats)]
    finally:
        server.terminate()
        server.wait(10)
    stage = statistics.median(n / stage_rate(folder, 32, n, f"stage-{r}")[0] for r in range(repeats))
    print(f"whole run, `prefcurate run` on {n} candidates at 32 in flight (median of {repeats}): "
          f"{statistics.median(plain):.1f} s with a temporary Prefect API, {statistics.median(served):.1f} s with a "
          f"running Prefect server; the judge stage alone: {stage:.1f} s")


def bare_rate(in_flight: int, n: int, transport: str) -> float:
    """Judgments/s of a bare asyncio.gather over the SDK, same requests, no store. ``transport``:
    "aiohttp", the one the judge uses, or "httpx", the SDK's default."""
    from anthropic import AsyncAnthropic, DefaultAioHttpClient

    from prefcurate.judge.anthropic_backend import score_tool
    from prefcurate.judge.render import pointwise_user_message, rubric_system_prompt
    from prefcurate.judge.verdict import JudgeTask
    from prefcurate.rubric import load_rubric

    rubric = load_rubric(ROOT / "rubrics" / "helpfulness.yaml")
    system = [{"type": "text", "text": rubric_system_prompt(rubric), "cache_control": {"type": "ephemeral"}}]
    tool = score_tool(rubric)

    async def go() -> float:
        gate = asyncio.Semaphore(in_flight)
        async with AsyncAnthropic(http_client=DefaultAioHttpClient() if transport == "aiohttp" else None) as client:
            async def one(i: int) -> None:
                async with gate:
                    await client.messages.create(
                        model="claude-sonnet-4-6", max_tokens=512, system=system, tools=[tool],
                        tool_choice={"type": "tool", "name": tool["name"]},
                        messages=[{"role": "user", "content": pointwise_user_message(
                            rubric, JudgeTask([{"role": "user", "content": f"Question {i}"}], (f"Answer {i}.",)))}])
            start = time.perf_counter()
            await asyncio.gather(*(one(i) for i in range(n)))
            return n / (time.perf_counter() - start)

    return asyncio.run(go())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--levels", default="1,8,16,32,64,128")
    ap.add_argument("--per-level", type=int, default=24, help="Judgments per level: this many times in_flight (at least 40).")
    ap.add_argument("--repeats", type=int, default=3,
                    help="Measure each rate this many times, interleaved, and take the median: the machine is shared.")
    ap.add_argument("--whole-run", type=int, default=1600, help="Candidates judged by the whole-run measurement (0: skip).")
    args = ap.parse_args()

    proc, url = start_server(args.latency)
    os.environ["ANTHROPIC_BASE_URL"], os.environ["ANTHROPIC_API_KEY"] = url, "sk-ant-bench"
    folder = Path(tempfile.mkdtemp(prefix="bench-judge-"))
    try:
        print(f"server {url}, latency {args.latency * 1000:.0f} ms; judgments/s (ratios are the result)")
        print(f"{'in flight':>9} {'n':>5} {'stage/s':>8} {'ideal/s':>8} {'bare/s':>8} {'httpx/s':>8} {'vs ideal':>9} {'vs bare':>8} {'cache share':>11}")
        ceiling = 0.0
        for level in (int(x) for x in args.levels.split(",")):
            n = max(40, args.per_level * level)
            runs = [(bare_rate(level, n, "aiohttp"), bare_rate(level, n, "httpx"), *stage_rate(folder, level, n, f"level{level}-{r}"))
                    for r in range(args.repeats)]
            bare, httpx, stage, cache_share = (statistics.median(column) for column in zip(*runs))
            ideal = level / args.latency
            ceiling = max(ceiling, bare)
            print(f"{level:>9} {n:>5} {stage:>8.1f} {ideal:>8.1f} {bare:>8.1f} {httpx:>8.1f} {stage / ideal:>9.3f} {stage / bare:>8.3f} {cache_share:>11.3f}")
        limit_per_s = ceiling / 2
        level = max(int(x) for x in args.levels.split(","))
        # Fifteen seconds at the limit, so the last calls' latency (not the limiter) is a small part of the window.
        n = int(limit_per_s * 15)
        rate, _ = stage_rate(folder, level, n, "limited", requests_per_minute=int(limit_per_s * 60))
        print(f"rate limit {limit_per_s * 60:.0f}/min ({limit_per_s:.1f}/s, half the ceiling) at {level} in flight: "
              f"achieved {rate:.1f}/s = {rate / limit_per_s:.3f} of the limit (target >= 0.95)")
        if args.whole_run:
            whole_run_report(folder, args.whole_run, args.repeats)
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    main()
