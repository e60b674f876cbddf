"""API keys never leave the environment: after a whole run with a recognisable fake key (the
flow with the Claude judge against the local Messages-API server, some calls failing), the key is
in no store file, log line, manifest, report or Prefect artifact; and `prefcurate sql` cannot write."""

from __future__ import annotations

import json

from conftest import claude_config

from prefcurate.testing.messages_api import MessagesAPIServer

KEY = "sk-ant-LEAKCHECK-7f3a9c01d2e4b5"


def test_the_api_key_reaches_no_file_log_or_artifact(prefect_harness, cli, tmp_path, monkeypatch, capfd, caplog):
    from prefect.client.orchestration import get_client

    candidates = tmp_path / "candidates.jsonl"
    candidates.write_text("".join(json.dumps({"prompt": f"Question {i}?", "candidates": [f"short {i}", f"a longer answer {i}",
                                                                                         f"Certainly! answer {i}"]}) + "\n"
                                  for i in range(6)))
    config = claude_config(tmp_path / "claude.yaml", {"mode": "hybrid", "max_retries": 0, "parse_retries": 0},
                           probes={"sample": 3})
    db = tmp_path / "store.duckdb"
    with MessagesAPIServer(faults=[429, 500, "malformed"]) as server:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
        assert cli("import", "candidates", candidates, "--db", db).exit_code == 0
        result = cli("run", config, "--db", db, "--quiet")
        assert result.exit_code == 0, result.output
        assert any(KEY in str(h) for h in server.headers)  # the key was sent, so it was there to leak
    report = tmp_path / "audit.html"
    assert cli("audit", "--db", db, "--html", report).exit_code == 0
    snap = cli("snapshot", "create", "--force", "--db", db)
    if snap.exit_code == 0:  # a judge this small may leave no fit pair; the manifest is checked when there is one
        snapshot_id = snap.output.strip().splitlines()[-1]
        assert cli("snapshot", "export", snapshot_id, "--to", tmp_path / "export", "--format", "jsonl", "--db", db).exit_code == 0

    with get_client(sync_client=True) as client:
        artifacts = [a.data for a in client.read_artifacts()]
        logs = [log.message for log in client.read_logs()]
    assert artifacts and logs
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert db in files and report in files
    needle = KEY.encode()
    for path in files:
        assert needle not in path.read_bytes(), path
    out, err = capfd.readouterr()
    for text in [result.output, out, err, caplog.text, *map(str, artifacts), *logs]:
        assert KEY not in text
    from prefcurate.store import Store

    with Store(db) as store:
        # The failures were stored with their error text, and still without the key.
        assert store.scalar("SELECT count(*) FROM judgments WHERE status = 'api_error'") >= 1


def test_sql_is_read_only(cli, tmp_path):
    from conftest import table_checksums

    from prefcurate.store import Store

    db = tmp_path / "s.duckdb"
    with Store(db) as store:
        store.con.execute("INSERT INTO runs (run_id, command, started_at, status) VALUES ('r', 'x', now(), 'ok')")
    before = table_checksums(db)
    for statement in ["delete from runs", "drop table runs", "update runs set status = 'x'", "create table t (x int)",
                      "select 1; delete from runs", "attach 'other.duckdb'", "copy runs to 'out.csv'"]:
        result = cli("sql", statement, "--db", db)
        assert result.exit_code == 2 and "read-only" in result.stderr, (statement, result.output)
    assert table_checksums(db) == before and not (tmp_path / "out.csv").exists()
    assert cli("sql", "select count(*) as n from runs", "--db", db, "--json").output.strip() == '{"n": 1}'
