"""Crash safety: `prefcurate run` killed with SIGKILL mid-judging or mid-verification, then run
again, ends with exactly the rows of an uninterrupted run, and pays again only for calls that were
in flight; a snapshot killed while being written leaves nothing visible. One writer per store."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import pytest
import yaml
from conftest import ROOT, child_env, claude_config, store_with_candidates

from prefcurate.store import Store
from prefcurate.testing.messages_api import MessagesAPIServer

N_PROMPTS, N_CANDIDATES = 8, 3


@pytest.fixture
def claude_run(tmp_path, prefect_harness):
    """A store with imported candidates, a config judging them with Claude (hybrid), and a way to run
    `prefcurate run` on it in a process of its own."""
    db = store_with_candidates(tmp_path / "store.duckdb", [
        {"prompt": f"Question {i}: name a colour.", "candidates": [f"Blue, number {i}.", f"I think red {i}", f"green {i} " * (i + 1)]}
        for i in range(N_PROMPTS)])
    config = claude_config(tmp_path / "claude.yaml", {"mode": "hybrid", "concurrency": 2, "write_batch": 1})

    def start(server: MessagesAPIServer) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "prefcurate.cli", "run", str(config), "--quiet", "--db", str(db)],
                                cwd=ROOT, env=child_env(server, tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)

    return db, start


def bodies(requests: list[dict]) -> list[str]:
    return [json.dumps(r, sort_keys=True) for r in requests]


def stored(db) -> dict[str, int]:
    with Store(db) as store:
        return {"judgments": store.scalar("SELECT count(*) FROM judgments WHERE status = 'ok'"),
                "pairwise": store.scalar("SELECT count(*) FROM judgments WHERE mode = 'pairwise'"),
                "pairs": store.scalar("SELECT count(*) FROM pairs"),
                "rows": store.scalar("SELECT count(*) FROM judgments")}


@pytest.mark.parametrize("kill_after", [N_PROMPTS * N_CANDIDATES // 2, N_PROMPTS * N_CANDIDATES + 3],
                         ids=["mid-judging", "mid-verification"])
def test_sigkill_then_rerun_loses_nothing_and_repays_only_calls_in_flight(claude_run, kill_after):
    db, start = claude_run
    with MessagesAPIServer(latency_s=0.05) as server:
        proc = start(server)
        deadline = time.monotonic() + 120
        while len(server.requests) < kill_after:
            assert proc.poll() is None, proc.stdout.read()[-2000:]
            assert time.monotonic() < deadline, "the run never reached the kill point"
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        sent_before = bodies(server.requests)
        at_kill = stored(db)  # the killed process's lock and DuckDB's are gone with it
        assert 0 < at_kill["rows"] < len(sent_before) + 1

        rerun = start(server)
        out, _ = rerun.communicate(timeout=300)
        assert rerun.returncode == 0, out[-3000:]
        sent_after = bodies(server.requests)[len(sent_before):]
    final = stored(db)
    # Every candidate scored once, every pair verified in both orders, nothing twice.
    assert final["judgments"] == final["rows"] == N_PROMPTS * N_CANDIDATES + 2 * final["pairs"]
    assert final["pairs"] == N_PROMPTS
    # Paid twice: only calls that had been sent but not stored when the process died.
    repaid = set(sent_after) & set(sent_before)
    assert len(repaid) <= len(sent_before) - at_kill["rows"]
    assert len(sent_before) + len(sent_after) - len(repaid) == final["rows"]


def test_a_run_killed_before_a_full_write_batch_repays_only_its_last_second(tmp_path, prefect_harness):
    """Verdicts are written every judge.write_batch (64) and at least twice a second: a run killed after
    fewer finished calls than one batch has stored all but its last moments."""
    n_prompts, per_prompt = 40, 4
    db = store_with_candidates(tmp_path / "store.duckdb", [
        {"prompt": f"Question {i}: name a fruit.", "candidates": [f"Fruit {i}.{k}: a pear." for k in range(per_prompt)]}
        for i in range(n_prompts)])
    config = claude_config(tmp_path / "claude.yaml", {"mode": "pointwise", "concurrency": 4})
    run = [sys.executable, "-m", "prefcurate.cli", "run", str(config), "--quiet", "--db", str(db)]
    with MessagesAPIServer(latency_s=0.15) as server:
        proc = subprocess.Popen(run, cwd=ROOT, env=child_env(server, tmp_path), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 120
        while len(server.answered_at) < 42:  # fewer than one write batch of 64
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.005)
        killed_at = time.monotonic()
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        finished_a_second_before = sum(t <= killed_at - 1.0 for t in server.answered_at)
        asked_before = len(server.requests)
        assert stored(db)["judgments"] >= finished_a_second_before > 0

        rerun = subprocess.run(run, cwd=ROOT, env=child_env(server, tmp_path), capture_output=True, text=True)
        assert rerun.returncode == 0, rerun.stdout[-3000:]
        asked_again = len(server.requests) - asked_before
    assert stored(db)["judgments"] == n_prompts * per_prompt
    assert asked_again <= n_prompts * per_prompt - finished_a_second_before


def test_a_snapshot_killed_while_being_written_leaves_nothing_visible(tmp_path):
    from conftest import seed_scored

    db = tmp_path / "store.duckdb"
    with Store(db) as store:
        seed_scored(store, {f"prompt {i}": [(f"good {i}", 8.0), (f"bad {i}" + " long" * (i % 2), 2.0)] for i in range(10)})
        from conftest import seeded_context

        from prefcurate import pairs

        pairs.run(store, seeded_context())
    # The process dies between writing the files and renaming the folder into place.
    status, output = run_and_die("import prefcurate.snapshot as s\ns.os.replace = die\n", ["snapshot", "create", "--db", str(db)])
    assert status == -signal.SIGKILL, output
    visible = [p.name for p in (tmp_path / "snapshots").iterdir() if not p.name.startswith(".")]
    assert visible == []
    with Store(db) as store:
        assert store.scalar("SELECT count(*) FROM snapshots") == 0
        assert store.scalar("SELECT count(*) FROM runs WHERE command = 'snapshot create'") == 0

    again = subprocess.run([sys.executable, "-m", "prefcurate.cli", "snapshot", "create", "--db", str(db)],
                           cwd=ROOT, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    snapshot_id = again.stdout.strip().splitlines()[-1]
    assert [p.name for p in (tmp_path / "snapshots").iterdir()] == [snapshot_id]  # the dead run's leftovers are gone
    assert subprocess.run([sys.executable, "-m", "prefcurate.cli", "snapshot", "verify", snapshot_id, "--db", str(db)],
                          cwd=ROOT, capture_output=True).returncode == 0


def test_a_second_writer_fails_fast_while_a_run_holds_the_store(claude_run, cli, tmp_path):
    db, start = claude_run
    with MessagesAPIServer(latency_s=0.2) as server:
        proc = start(server)
        deadline = time.monotonic() + 120
        while not server.requests:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        prompts = tmp_path / "p.jsonl"
        prompts.write_text('{"prompt": "another question"}\n')
        began = time.monotonic()
        result = cli("import", "prompts", prompts, "--db", db)
        assert result.exit_code == 2 and "in use by another prefcurate process" in result.stderr, result.output
        assert time.monotonic() - began < 5  # fails at once, does not wait
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out[-3000:]
    assert stored(db)["pairs"] == N_PROMPTS  # the run finished undisturbed
    assert cli("import", "prompts", prompts, "--db", db).exit_code == 0  # and the store is free again


def test_one_call_in_five_failing_ends_in_scores_or_recorded_errors_and_a_rerun_retries_only_those(tmp_path):
    from conftest import context

    from prefcurate.generate import import_candidates
    from prefcurate.judge.stage import run as judge

    f = tmp_path / "c.jsonl"
    f.write_text("".join(json.dumps({"prompt": f"Question {i}?", "candidates": [f"answer {i}.{k}" for k in range(5)]}) + "\n"
                         for i in range(12)))
    cfg = context(judge={"backend": "anthropic", "model": "claude-sonnet-4-6", "mode": "pointwise", "concurrency": 8,
                         "max_retries": 1, "parse_retries": 0, "timeout_s": 0.5})
    with Store(tmp_path / "s.duckdb") as store, pytest.MonkeyPatch.context() as mp:
        import_candidates(store, str(f))
        mp.setenv("ANTHROPIC_API_KEY", "sk-ant-test-key")
        # 429, 529, 500, dropped connections, answers slower than the timeout, malformed tool input.
        with MessagesAPIServer(faults=[429, 529, 500, "drop", "slow", "malformed"], fault_rate=0.2, slow_s=2.0) as faulty:
            mp.setenv("ANTHROPIC_BASE_URL", faulty.url)
            stats = judge(store, cfg)
        assert {k for k in faulty.answers if k != 200} >= {429, 529, 500, "drop", "slow", "malformed"}
        rows = store.query("SELECT status, error, overall FROM judgments")
        assert len(rows) == 60 and stats.judged + stats.failed == 60  # every judgment completed or recorded
        failed = [r for r in rows if r["status"] != "ok"]
        assert failed and stats.failed == len(failed)
        assert all(r["error"] and r["overall"] is None for r in failed)  # the error text, never a made-up score
        api_errors = sum(r["status"] == "api_error" for r in failed)

        with MessagesAPIServer() as healthy:
            mp.setenv("ANTHROPIC_BASE_URL", healthy.url)
            again = judge(store, cfg)
        assert len(healthy.requests) == api_errors == again.todo  # only the API errors are asked again
        assert store.scalar("SELECT count(*) FROM judgments WHERE status = 'api_error'") == 0


# Run the CLI in a child process that SIGKILLs itself at a chosen point (the patch), as a crash would.
DIE = "import os, signal\ndef die(*a, **k):\n    os.kill(os.getpid(), signal.SIGKILL)\n"


def run_and_die(patch: str, args: list[str], env: dict | None = None) -> tuple[int, str]:
    """(exit status, output). The child's own children (Prefect's temporary server) die with it."""
    script = f"{DIE}{patch}\nimport sys\nfrom prefcurate.cli import main\nsys.argv = ['prefcurate', *{args!r}]\nmain()\n"
    with tempfile.TemporaryFile("w+") as out:  # not a pipe: an orphan holding it open would block the read
        proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
        proc.wait(timeout=600)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out.seek(0)
        return proc.returncode, out.read()


def curation_config(folder, tiny_model):
    # transformers samples each prompt with its own seed, so a rerun's candidates are the ones an
    # uninterrupted run would have made.
    config = folder / "c.yaml"
    config.write_text(yaml.safe_dump({
        "prompts": {"path": str(ROOT / "data" / "prompts" / "basics.jsonl"), "limit": 12},
        "generator": {"backend": "transformers", "model": str(tiny_model), "n": 2, "max_tokens": 6, "dtype": "float32",
                      "chunk_size": 4},
        "judge": {"backend": "anthropic", "model": "claude-sonnet-4-6", "rubric": str(ROOT / "rubrics" / "helpfulness.yaml"),
                  "mode": "pointwise", "concurrency": 4},
        "pairs": {"min_margin": 0.0},
        "probes": {"sample": 0},
    }))
    return config


def curated_rows(path) -> dict[str, list]:
    with Store(path) as store:
        return {t: sorted(store.con.execute(q).fetchall()) for t, q in {
            "candidates": "SELECT candidate_id, text FROM candidates",
            "judgments": "SELECT judgment_id, overall FROM judgments WHERE status = 'ok'",
            "pairs": "SELECT pair_id, margin FROM pairs"}.items()}


@pytest.fixture(scope="module")
def uninterrupted(tiny_model, tmp_path_factory, prefect_harness):
    """The rows of a run that nothing interrupted (the judge's scores depend only on the request)."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    with MessagesAPIServer() as server:
        done = subprocess.run([sys.executable, "-m", "prefcurate.cli", "run", str(curation_config(folder, tiny_model)),
                               "--quiet", "--db", str(folder / "clean.duckdb")],
                              cwd=ROOT, env=child_env(server, folder), capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:]
    return curated_rows(folder / "clean.duckdb")


@pytest.mark.parametrize("point", ["mid-generation", "mid-pairs"])
def test_sigkill_mid_generation_or_pair_building_then_rerun(point, tmp_path, tiny_model, uninterrupted, prefect_harness):
    config = curation_config(tmp_path, tiny_model)
    patch = {
        # The second chunk of prompts dies in the model, after the first chunk's candidates were stored.
        "mid-generation": "import prefcurate.generate.hf_backend as hf\n"
                          "real = hf.HFGenerator.generate\ncalls = []\n"
                          "def generate(self, requests, sink):\n"
                          "    calls.append(1)\n"
                          "    return die() if len(calls) == 2 else real(self, requests, sink)\n"
                          "hf.HFGenerator.generate = generate\n",
        # Pairs die half inserted, inside their transaction.
        "mid-pairs": "import prefcurate.store as st\nreal = st.Store.insert\n"
                     "def insert(self, table, rows, *a, **k):\n"
                     "    if table != 'pairs':\n"
                     "        return real(self, table, rows, *a, **k)\n"
                     "    self.con.execute('BEGIN TRANSACTION')\n"
                     "    real(self, table, rows[: len(rows) // 2])\n"
                     "    die()\n"
                     "st.Store.insert = insert\n",
    }[point]
    db = tmp_path / "killed.duckdb"
    with MessagesAPIServer() as server:
        status, output = run_and_die(patch, ["run", str(config), "--quiet", "--db", str(db)], child_env(server, tmp_path))
        assert status == -signal.SIGKILL, output[-3000:]
        with Store(db) as store:
            at_kill = store.counts()
        if point == "mid-generation":
            assert at_kill["candidates"] == 8 and at_kill["judgments"] == 0  # the first chunk: 4 prompts x 2
        else:
            assert at_kill["candidates"] == 24 and at_kill["pairs"] == 0  # the half-inserted pairs rolled back
        done = subprocess.run([sys.executable, "-m", "prefcurate.cli", "run", str(config), "--quiet", "--db", str(db)],
                              cwd=ROOT, env=child_env(server, tmp_path), capture_output=True, text=True)
        assert done.returncode == 0, done.stdout[-3000:]
    assert curated_rows(db) == uninterrupted and uninterrupted["pairs"]
