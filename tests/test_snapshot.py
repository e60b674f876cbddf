"""Snapshots: pairs frozen as Parquet in TRL's conversational format, split by prompt,
checksummed, content-addressed; the id is the last line `snapshot create` prints."""

from __future__ import annotations

import json
import os

import pyarrow.parquet as pq
import pytest
from conftest import seed_scored, seeded_context

from prefcurate import pairs
from prefcurate.errors import PrefcurateError
from prefcurate.snapshot import verify_snapshot
from prefcurate.store import Store


@pytest.fixture
def paired_db(db):
    with Store(db) as store:
        # Half the rejected answers longer than the chosen, half shorter: a judge without length bias.
        seed_scored(store, {f"prompt {i}": [(f"good answer {i}", 8.0), (f"bad answer {i}" + " padded out" * (i % 2), 3.0 + i / 10)]
                            for i in range(20)})
        pairs.run(store, seeded_context())
    return db


def test_snapshot_create_list_show_verify(cli, paired_db):
    result = cli("snapshot", "create", "--name", "first", "--test-fraction", "0.3", "--db", paired_db)
    assert result.exit_code == 0, result.output
    snapshot_id = result.output.strip().splitlines()[-1]
    assert "snapshot created: 20 pairs" in result.output

    again = cli("snapshot", "create", "--test-fraction", "0.3", "--db", paired_db)
    assert again.output.strip().splitlines()[-1] == snapshot_id and "already existed" in again.output
    assert snapshot_id[:8] in cli("snapshot", "list", "--db", paired_db).output

    manifest = json.loads(cli("snapshot", "show", snapshot_id, "--db", paired_db).output)
    assert manifest["counts"]["pairs"] == 20 and manifest["counts"]["train"] + manifest["counts"]["test"] == 20
    assert manifest["rubric_hashes"] == [seeded_context().rubric.hash] and manifest["generators"] == ["vllm:test-model"]
    assert manifest["kind"] == "pairs" and cli("snapshot", "verify", snapshot_id, "--db", paired_db).exit_code == 0
    with Store(paired_db) as store:  # the snapshot's row names the run that froze it
        assert store.scalar("SELECT r.command FROM snapshots s JOIN runs r USING (run_id) WHERE snapshot_id = ?",
                            [snapshot_id]) == "snapshot create" == store.scalar(
            "SELECT command FROM runs WHERE run_id = ?", [manifest["run_id"]])


def test_snapshot_loads_into_trl_format_with_disjoint_prompts(cli, paired_db):
    from datasets import load_dataset

    snapshot_id = cli("snapshot", "create", "--test-fraction", "0.3", "--db", paired_db).output.strip().splitlines()[-1]
    folder = paired_db.parent / "snapshots" / snapshot_id
    ds = load_dataset("parquet", data_files={s: str(folder / f"{s}.parquet") for s in ("train", "test")})
    assert len(ds["train"]) + len(ds["test"]) == 20 and len(ds["test"]) > 0
    row = ds["train"][0]
    assert row["prompt"][-1]["role"] == "user" and row["chosen"] == [{"role": "assistant", "content": row["chosen"][0]["content"]}]
    assert row["chosen"][0]["content"].startswith("good") and row["rejected"][0]["content"].startswith("bad")
    assert set(row) >= {"prompt", "chosen", "rejected", "pair_id", "margin", "chosen_score", "rejected_score"}
    assert not set(ds["train"]["prompt_id"]) & set(ds["test"]["prompt_id"])


def test_tampered_snapshot_fails_verification(cli, paired_db):
    snapshot_id = cli("snapshot", "create", "--db", paired_db).output.strip().splitlines()[-1]
    train = paired_db.parent / "snapshots" / snapshot_id / "train.parquet"
    os.chmod(train, 0o644)
    data = bytearray(train.read_bytes())
    data[len(data) // 2] ^= 0x01
    train.write_bytes(bytes(data))
    with pytest.raises(PrefcurateError, match="train.parquet does not match its checksum"):
        verify_snapshot(train.parent)
    result = cli("snapshot", "verify", snapshot_id, "--db", paired_db)
    assert result.exit_code == 2 and "does not match its checksum" in result.stderr


def test_snapshot_without_pairs_or_with_unknown_id(cli, db):
    result = cli("snapshot", "create", "--db", db)
    assert result.exit_code == 2 and "no pairs to snapshot" in result.stderr
    with Store(db) as store:
        assert store.scalar("SELECT count(*) FROM runs") == 0
    result = cli("snapshot", "show", "nope", "--db", db)
    assert result.exit_code == 2 and "snapshot 'nope' not found" in result.stderr


@pytest.fixture
def biased_db(db, tmp_path, cli):
    """A judge that prefers whichever response it reads first on 40 comparisons (a wins 2 of 3 verdicts
    because it is shown first twice), and judges 20 others steadily."""
    lines = []
    for i in range(60):
        verdicts = [("ab", "a"), ("ba", "b"), ("ab", "a")] if i < 40 else [("ab", "a"), ("ba", "a")]
        lines.append({"prompt": f"q{i}", "a": f"answer one {i}", "b": f"answer two {i}", "judge": "biased",
                      "verdicts": [{"order": o, "winner": w} for o, w in verdicts]})
    f = tmp_path / "judgments.jsonl"
    f.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert cli("import", "judgments", f, "--db", db).exit_code == 0
    return db


def test_snapshot_refuses_a_judge_that_failed_the_audit_unless_forced(cli, biased_db):
    from conftest import table_checksums

    before = table_checksums(biased_db)
    result = cli("snapshot", "create", "--db", biased_db)
    assert result.exit_code == 2
    # 40 of 60 comparisons went to the first-shown response in both orders, none to the second: McNemar's
    # exact p is 2 * 0.5**40, and of the verdicts that changed with the order, the first shown won them all.
    assert "failed 3 gate(s): first_position_win_rate (0.875" in result.stderr and "swap_consistency (0.333" in result.stderr
    assert "first_position_flip_share (1.000" in result.stderr and "q=1.8e-12" in result.stderr
    assert "pass --force to snapshot anyway" in result.stderr
    assert table_checksums(biased_db) == before  # not even the audit or the run is recorded

    result = cli("snapshot", "create", "--force", "--db", biased_db)
    assert result.exit_code == 0, result.output
    assert "forced" in result.output and "20 pairs" in result.output and "40 of 60 pairs left out" in result.output
    snapshot_id = result.output.strip().splitlines()[-1]
    manifest = json.loads(cli("snapshot", "show", snapshot_id, "--db", biased_db).output)
    audit = manifest["audit"]
    assert audit["forced"] is True and audit["passed"] is False
    assert audit["failed_gates"] == ["first_position_win_rate", "first_position_flip_share", "swap_consistency"]
    assert audit["flags"]["swap_inconsistent"] == 40 and audit["pairs_excluded"] == 40
    with Store(biased_db) as store:
        assert store.scalar("SELECT audit_id FROM snapshots") == audit["audit_id"]
    folder = biased_db.parent / "snapshots" / snapshot_id
    prompts = {row["prompt"][-1]["content"] for s in ("train", "test") for row in pq.read_table(folder / f"{s}.parquet").to_pylist()}
    assert prompts == {f"q{i}" for i in range(40, 60)}  # only the steadily judged comparisons


def test_which_flags_block_is_config(cli, biased_db, tmp_path):
    import yaml

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"audit": {"blocking_flags": []}}))
    result = cli("snapshot", "create", "--force", "--config", cfg, "--db", biased_db)
    assert result.exit_code == 0 and "snapshot created: 60 pairs" in result.output
    cfg.write_text(yaml.safe_dump({"audit": {"blocking_flags": ["no_such_flag"]}}))
    result = cli("snapshot", "create", "--config", cfg, "--db", biased_db)
    assert result.exit_code == 2 and "audit.blocking_flags.0" in result.stderr


def test_snapshot_export_as_parquet_and_jsonl(cli, paired_db, tmp_path):
    from datasets import load_dataset

    snapshot_id = cli("snapshot", "create", "--test-fraction", "0.3", "--db", paired_db).output.strip().splitlines()[-1]
    result = cli("snapshot", "export", snapshot_id, "--to", tmp_path / "pq", "--db", paired_db)
    assert result.exit_code == 0, result.output
    ds = load_dataset("parquet", data_files={s: str(tmp_path / "pq" / f"{s}.parquet") for s in ("train", "test")})
    assert len(ds["train"]) + len(ds["test"]) == 20
    assert json.loads((tmp_path / "pq" / "manifest.json").read_text())["snapshot_id"] == snapshot_id

    assert cli("snapshot", "export", snapshot_id, "--to", tmp_path / "js", "--format", "jsonl", "--db", paired_db).exit_code == 0
    rows = [json.loads(line) for s in ("train", "test") for line in (tmp_path / "js" / f"{s}.jsonl").read_text().splitlines()]
    assert len(rows) == 20 and rows[0]["chosen"][0]["role"] == "assistant"
    assert load_dataset("json", data_files=str(tmp_path / "js" / "train.jsonl"))["train"][0]["prompt"][0]["role"] == "user"

    again = cli("snapshot", "export", snapshot_id, "--to", tmp_path / "js", "--format", "jsonl", "--db", paired_db)
    assert again.exit_code == 2 and "train.jsonl already exists; remove it or export --to another folder" in again.stderr
    bad = cli("snapshot", "export", snapshot_id, "--to", tmp_path / "x", "--format", "csv", "--db", paired_db)
    assert bad.exit_code == 2 and "--format 'csv': use one of parquet, jsonl" in bad.stderr


def test_snapshot_create_applies_the_flags_of_the_run_that_filled_the_store(cli, tmp_path, monkeypatch, prefect_harness):
    """Without --config, `snapshot create` audits with the config recorded by the store's latest run,
    and says so."""
    from conftest import claude_config, store_with_candidates

    from prefcurate.testing.messages_api import MessagesAPIServer

    db = store_with_candidates(tmp_path / "s.duckdb", [
        {"prompt": f"Question {i}?", "candidates": [f"Answer {i}.{k}" for k in range(4)]} for i in range(12)])
    # Only low_margin blocks, and it is raised below a margin of 4: not the defaults.
    config = claude_config(tmp_path / "claude.yaml", {"mode": "pointwise"},
                           audit={"blocking_flags": ["low_margin"], "low_margin": 4.0})
    with MessagesAPIServer() as server:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-key")
        assert cli("run", config, "--db", db, "--quiet").exit_code == 0
    with Store(db) as store:
        run_id = store.scalar("SELECT run_id FROM runs WHERE command = 'run'")
        low, total = store.scalar("SELECT [count(*) FILTER (WHERE margin < 4), count(*)] FROM pairs")
    assert 0 < low < total

    result = cli("snapshot", "create", "--force", "--db", db)
    assert result.exit_code == 0, result.output
    assert f"config: the config of run {run_id} ({config})" in result.output
    manifest = json.loads(cli("snapshot", "show", result.output.strip().splitlines()[-1], "--db", db).output)
    assert manifest["audit"]["blocking_flags"] == ["low_margin"] and manifest["audit"]["pairs_excluded"] == low
    assert manifest["counts"]["pairs"] == total - low
