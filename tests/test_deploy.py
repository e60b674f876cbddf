"""Schedules: `prefcurate deploy CONFIG --cron ...` serves a Prefect deployment; a triggered run
curates what is new, and a second run finds nothing new; prefect.yaml names a real flow."""

from __future__ import annotations

import inspect
import json
import os
import signal
import subprocess
import sys
import time

import yaml
from conftest import ROOT, child_env, claude_config, store_with_candidates

from prefcurate.store import Store
from prefcurate.testing.messages_api import MessagesAPIServer


def test_a_served_deployment_runs_incrementally(prefect_harness, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    db = store_with_candidates(tmp_path / "store.duckdb",
                               [{"prompt": f"Question {i}?", "candidates": [f"yes {i}", f"no, {i} times"]} for i in range(4)])
    config = claude_config(tmp_path / "nightly.yaml", {"mode": "pointwise"})
    with MessagesAPIServer() as server:
        env = child_env(server, tmp_path, PREFECT_RUNNER_POLL_FREQUENCY="1")
        served = subprocess.Popen([sys.executable, "-m", "prefcurate.cli", "deploy", str(config), "--cron", "0 2 * * *",
                                   "--name", "test-nightly", "--db", str(db)],
                                  cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  start_new_session=True)
        try:
            with get_client(sync_client=True) as client:
                deadline = time.monotonic() + 120
                while True:
                    assert served.poll() is None, served.stdout.read()[-3000:]
                    assert time.monotonic() < deadline, "the deployment never appeared"
                    try:
                        deployment = client.read_deployment_by_name("prefcurate-curate/test-nightly")
                        break
                    except Exception:  # not registered yet
                        time.sleep(0.5)
            assert deployment.schedules[0].schedule.cron == "0 2 * * *"
            assert deployment.parameters == {"config": str(config), "db": str(db)}

            first = run_deployment("prefcurate-curate/test-nightly", timeout=300, poll_interval=1)
            assert first.state.is_completed(), first.state
            second = run_deployment("prefcurate-curate/test-nightly", timeout=300, poll_interval=1)
            assert second.state.is_completed(), second.state
        finally:
            os.killpg(served.pid, signal.SIGTERM)
            served.wait(timeout=30)
    with Store(db) as store:
        runs = store.query("SELECT stats FROM runs WHERE command = 'run' ORDER BY started_at")
        assert store.scalar("SELECT count(*) FROM judgments") == 8 and store.scalar("SELECT count(*) FROM pairs") == 4
    assert len(runs) == 2
    first_stats, second_stats = (json.loads(r["stats"]) for r in runs)
    assert first_stats["judge"]["judged"] == 8 and first_stats["pairs"]["pairs_new"] == 4
    assert second_stats["judge"]["todo"] == 0 and second_stats["pairs"]["pairs_new"] == 0  # nothing new: nothing done


def test_prefect_yaml_deploys_the_curation_flow():
    from prefcurate.flows.curate import curate

    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    params = set(inspect.signature(curate.fn).parameters)
    for d in spec["deployments"]:
        path, fn = d["entrypoint"].split(":")
        assert (ROOT / path).is_file() and fn == "curate"
        assert set(d["parameters"]) <= params and (ROOT / d["parameters"]["config"]).is_file()


def test_deploy_refuses_a_bad_cron(cli, tmp_path):
    result = cli("deploy", ROOT / "configs" / "demo.yaml", "--cron", "every night", "--db", tmp_path / "x.duckdb")
    assert result.exit_code == 2 and "--cron 'every night' is not a cron expression" in result.stderr
