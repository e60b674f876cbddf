"""Snapshots: pairs frozen as Parquet in TRL's conversational format, split by prompt,
checksummed, content-addressed; the id is the last line `snapshot create` prints."""

from __future__ import annotations

import json
import os

import pytest
from conftest import JUDGE, RUBRIC_HASH, seed_scored

from prefcurate.config import PairsConfig
from prefcurate.errors import PrefcurateError
from prefcurate.pairs import build_pairs
from prefcurate.snapshot import verify_snapshot
from prefcurate.store import Store


@pytest.fixture
def paired_db(db):
    with Store(db) as store:
        seed_scored(store, {f"prompt {i}": [(f"good answer {i}", 8.0), (f"bad answer {i}", 3.0 + i / 10)]
                            for i in range(20)})
        build_pairs(store, PairsConfig(), JUDGE, RUBRIC_HASH)
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
    assert manifest["rubric_hashes"] == [RUBRIC_HASH] and manifest["generators"] == ["vllm:test-model"]
    assert cli("snapshot", "verify", snapshot_id, "--db", paired_db).exit_code == 0


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
