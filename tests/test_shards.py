"""Scale-out: `prefcurate run CONFIG --shard i/n` in separate processes, each into its own store,
then `prefcurate merge`: the merged store holds what one process running everything makes."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from conftest import ROOT, child_env

from prefcurate.store import Store
from prefcurate.testing.messages_api import MessagesAPIServer

# What defines the result, without run ids, times or latencies.
CONTENT = {
    "prompts": "SELECT prompt_id, messages FROM prompts",
    "candidates": "SELECT candidate_id, prompt_id, text FROM candidates",
    "judgments": "SELECT judgment_id, status, overall, winner, probe FROM judgments",
    "pairs": "SELECT pair_id, chosen_id, rejected_id, margin FROM pairs",
}


def content(db) -> dict[str, set]:
    with Store(db) as store:
        return {t: set(store.con.execute(q).fetchall()) for t, q in CONTENT.items()}


@pytest.fixture
def shard_config(tmp_path, tiny_model):
    # transformers samples each prompt alone with its own seed, so a prompt's candidates do not depend
    # on which other prompts share its process; the judge is the local Messages-API server.
    config = tmp_path / "shards.yaml"
    config.write_text(yaml.safe_dump({
        "prompts": {"path": str(ROOT / "data" / "prompts" / "basics.jsonl"), "limit": 10},
        "generator": {"backend": "transformers", "model": str(tiny_model), "n": 2, "max_tokens": 12, "dtype": "float32"},
        "judge": {"backend": "anthropic", "model": "claude-sonnet-4-6", "rubric": str(ROOT / "rubrics" / "helpfulness.yaml"),
                  "mode": "hybrid"},
        "pairs": {"min_margin": 0.0},
    }))
    return config


def test_two_shards_merged_equal_one_process(shard_config, tmp_path, cli, monkeypatch, prefect_harness):
    with MessagesAPIServer() as server:
        shards = []
        for i in range(2):  # two processes at once, each with its own Prefect home, as on two machines
            shard_env = child_env(server, tmp_path / f"shard-{i}")
            shards.append(subprocess.Popen(
                [sys.executable, "-m", "prefcurate.cli", "run", str(shard_config), "--shard", f"{i}/2", "--quiet",
                 "--db", str(tmp_path / f"shard{i}.duckdb")],
                cwd=ROOT, env=shard_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        for proc in shards:
            out, _ = proc.communicate(timeout=600)
            assert proc.returncode == 0, out[-3000:]

        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-key")
        single = tmp_path / "single.duckdb"
        assert cli("run", shard_config, "--quiet", "--db", single).exit_code == 0

    parts = [content(tmp_path / f"shard{i}.duckdb") for i in range(2)]
    assert parts[0]["prompts"] and parts[1]["prompts"] and not parts[0]["prompts"] & parts[1]["prompts"]
    merged = tmp_path / "merged.duckdb"
    result = cli("merge", tmp_path / "shard0.duckdb", tmp_path / "shard1.duckdb", "--db", merged)
    assert result.exit_code == 0, result.output
    expected = content(single)
    assert len(expected["prompts"]) == 10 and expected["pairs"]
    assert content(merged) == expected

    # Idempotent: merging again, in either order, adds nothing.
    again = cli("merge", tmp_path / "shard1.duckdb", tmp_path / "shard0.duckdb", "--db", merged)
    assert again.exit_code == 0 and content(merged) == expected
    with Store(merged) as store:
        merges = store.query("SELECT stats FROM runs WHERE command = 'merge' ORDER BY started_at")
        assert len(merges) == 2 and '"judgments": 0' in merges[1]["stats"]
        assert store.scalar("SELECT count(*) FROM runs WHERE command = 'run'") == 2  # each shard's run, kept


def test_bad_shard_argument(cli, tmp_path):
    for bad, message in [("2/2", "--shard 2/2: i must be in 0..1 for n = 2"), ("half", "give it as i/n")]:
        result = cli("run", ROOT / "configs" / "demo.yaml", "--shard", bad, "--db", tmp_path / "x.duckdb")
        assert result.exit_code == 2 and message in result.stderr and not (tmp_path / "x.duckdb").exists()
