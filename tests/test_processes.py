"""The processes of a run: a `prefcurate run` killed with SIGKILL leaves no process of its own behind
(its temporary Prefect API dies with it), and a run judged by an API loads no model library."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import ROOT, child_env, claude_config, store_with_candidates

from prefcurate.testing.messages_api import MessagesAPIServer


def descendants(pid: int) -> set[int]:
    """The processes below ``pid``, from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_run_killed_with_sigkill_leaves_no_process_behind(tmp_path):
    db = store_with_candidates(tmp_path / "store.duckdb", [
        {"prompt": f"Question {i}?", "candidates": [f"Answer {i}.{k}" for k in range(3)]} for i in range(30)])
    config = claude_config(tmp_path / "claude.yaml", {"mode": "pointwise", "concurrency": 2})
    with MessagesAPIServer(latency_s=0.2) as server:
        env = child_env(server, tmp_path)
        del env["PREFECT_API_URL"]  # the run starts its own temporary Prefect API
        proc = subprocess.Popen([sys.executable, "-m", "prefcurate.cli", "run", str(config), "--quiet", "--db", str(db)],
                                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 180
        while not server.requests:  # judging: Prefect's API is up
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        below = descendants(proc.pid)
        assert below  # the temporary Prefect API, at least
        proc.send_signal(signal.SIGKILL)  # the run alone, as an OOM kill would
        proc.wait()
        deadline = time.monotonic() + 15
        while (left := {pid for pid in below if alive(pid)}) and time.monotonic() < deadline:
            time.sleep(0.1)
    for pid in left:  # not to leave them to the next test either
        os.kill(pid, signal.SIGKILL)
    assert not left, f"left behind: {[Path(f'/proc/{p}/cmdline').read_bytes()[:200] for p in left]}"


def test_a_run_judged_by_an_api_loads_no_model_library(tmp_path, prefect_harness):
    db = store_with_candidates(tmp_path / "store.duckdb", [{"prompt": "Hi?", "candidates": ["Hello!", "Hi there."]}])
    config = claude_config(tmp_path / "claude.yaml", {"mode": "pointwise"})
    script = ("import sys\nfrom prefcurate.cli import main\n"
              f"sys.argv = ['prefcurate', 'run', {str(config)!r}, '--quiet', '--db', {str(db)!r}]\n"
              "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
              "print('loaded:', sorted(m for m in ('torch', 'transformers', 'vllm', 'trl', 'peft') if m in sys.modules))\n")
    with MessagesAPIServer() as server:
        done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=child_env(server, tmp_path),
                              capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "loaded: []"
