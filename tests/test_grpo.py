"""`prefcurate snapshot prompts` and `make train-grpo SNAPSHOT=<id>`: prompts with their reference answers
frozen with the rubric, and TRL's GRPOTrainer rewarded by the rubric's checks, each reward logged."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml
from conftest import ROOT, table_checksums

ARITHMETIC = ROOT / "data" / "prompts" / "arithmetic.jsonl"


@pytest.fixture(scope="module")
def grpo_config(config_dict, tmp_path_factory):
    """The tiny model's run config, judging with the arithmetic rubric (a numeric answer and a word limit)."""
    path = tmp_path_factory.mktemp("grpo") / "arithmetic.yaml"
    path.write_text(yaml.safe_dump(config_dict | {
        "judge": config_dict["judge"] | {"mode": "pointwise", "rubric": str(ROOT / "rubrics" / "arithmetic.yaml")}}))
    return path


@pytest.fixture(scope="module")
def prompts_snapshot(grpo_config, tmp_path_factory):
    """(store, snapshot id) of `prefcurate snapshot prompts` on the arithmetic prompts, heldout as the test split."""
    from typer.testing import CliRunner

    from prefcurate.cli import app

    db = tmp_path_factory.mktemp("grpo-store") / "store.duckdb"
    result = CliRunner().invoke(app, ["snapshot", "prompts", str(ARITHMETIC), "--config", str(grpo_config),
                                      "--test-split", "heldout", "--name", "arithmetic", "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert "240 prompts (192 train, 48 test; 240 with a reference answer), rubric arithmetic with checks " \
           "right_answer, brief" in result.output
    return db, result.output.strip().splitlines()[-1]


def test_a_prompts_snapshot_holds_each_prompt_with_its_reference_and_the_rubric(prompts_snapshot, grpo_config, cli):
    import pyarrow.parquet as pq

    from prefcurate.snapshot import get_snapshot
    from prefcurate.store import Store

    db, snapshot_id = prompts_snapshot
    with Store(db) as store:
        snap = get_snapshot(store, snapshot_id)
        assert store.scalar("SELECT count(*) FROM prompts") == 240  # stored, as `import prompts` would
    m = snap.manifest
    assert m["kind"] == "prompts" and m["format"] == "trl-conversational-prompt-only"
    assert m["split"] == {"by": "metadata split", "test_split": "heldout"} and m["prompt_sources"] == [str(ARITHMETIC)]
    assert [c["name"] for c in m["rubric"]["checks"]] == ["right_answer", "brief"] and len(m["generators"]) == 1
    lines = [json.loads(line) for line in ARITHMETIC.read_text().splitlines()]
    test = pq.read_table(snap.path / "test.parquet").to_pylist()
    by_text = {r["prompt"]: r for r in lines}
    assert all(by_text[r["prompt"][0]["content"]]["metadata"]["split"] == "heldout" for r in test)
    assert all(r["reference"] == by_text[r["prompt"][0]["content"]]["metadata"]["reference"] for r in test)
    # The same prompts, split and rubric: the same snapshot.
    again = cli("snapshot", "prompts", ARITHMETIC, "--config", grpo_config, "--test-split", "heldout", "--db", db)
    assert "snapshot already existed" in again.output and again.output.strip().splitlines()[-1] == snapshot_id


def test_train_grpo_rewards_each_check_and_evaluates_the_test_pass_rate(prompts_snapshot, cli, tmp_path):
    from safetensors.torch import load_file

    from prefcurate.store import Store

    db, snapshot_id = prompts_snapshot
    cfg = tmp_path / "grpo.yaml"
    cfg.write_text(yaml.safe_dump({
        "max_steps": 2, "per_device_train_batch_size": 4, "num_generations": 2, "max_completion_length": 8,
        "learning_rate": 1e-3, "max_length": 256, "output_root": str(tmp_path / "runs"), "save_steps": 1,
        "rewards": {"checks": {"brief": 0.5}, "length_penalty": {"soft_cache": 4}, "judge": 0.5},
        "eval": {"samples_per_prompt": 2, "max_prompts": 3, "max_new_tokens": 8, "engine": "transformers",
                 "sft_path": str(ROOT / "data" / "sft" / "heldout.jsonl")}}))
    result = cli("train", "grpo", "--snapshot", snapshot_id, "--config", cfg, "--db", db)
    assert result.exit_code == 0, result.output
    assert "Rewards over training" in result.output and "pass_rate" in result.output
    with Store(db) as store:
        run = store.query("SELECT * FROM train_runs WHERE snapshot_id = ?", [snapshot_id])[0]
        assert store.scalar("SELECT method FROM v_lineage WHERE train_run_id = ?", [run["train_run_id"]]) == "grpo"
    metrics = json.loads(run["metrics"])
    assert run["method"] == "grpo" and run["status"] == "ok" and metrics["steps"] == 2
    assert metrics["train_prompts"] == 192 and metrics["test_prompts"] == 48
    # One reward per check (brief at its configured weight), TRL's two penalties and the judge, each logged.
    rewards = metrics["rewards"]
    assert {k: v["weight"] for k, v in rewards.items()} == {
        "check_right_answer": 1.0, "check_brief": 0.5, "soft_overlong_punishment_reward": 1.0,
        "repetition_penalty_reward": 1.0, "judge_score": 0.5, "total": None}
    assert all(0 <= rewards[k]["mean"] <= 1 for k in ("check_right_answer", "check_brief", "judge_score"))
    assert -1 <= rewards["soft_overlong_punishment_reward"]["mean"] <= 0
    # The test prompts' pass rates before and after, each with its interval over the 3 prompts evaluated.
    ev = metrics["eval"]
    assert list(ev["pass_rate"]) == ["before", "after"] and list(ev["pass_rate_gain"]) == ["after"]
    before, after, gain = ev["pass_rate"]["before"], ev["pass_rate"]["after"], ev["pass_rate_gain"]["after"]
    assert before["prompts"] == 3 and gain["estimate"] == pytest.approx(after["estimate"] - before["estimate"])
    assert set(ev) >= {"check_right_answer", "check_brief", "sample_length", "opener_rate", "heldout_sft_nll"}
    # The kept policy's pass rate at N = 1, as the report sets it beside a best-of-n curve.
    from prefcurate.audit.report import scaling, scaling_table

    with Store(db) as store:
        row = store.query("SELECT * FROM v_grpo_pass_rates WHERE train_run_id = ?", [run["train_run_id"]])[0]
        table = scaling_table(scaling(store))
    assert (row["kept"], row["steps"], row["prompts"]) == ("after", 2, 3)
    assert row["base_pass_rate"] == before["estimate"] and row["pass_rate"] == after["estimate"]
    assert row["gain_ci"] == gain["ci"] and row["pass_rate_ci"] == after["ci"]
    assert [r[0] for r in table.rows] == ["base policy, N = 1 (GRPO's test prompts)",
                                         f"GRPO {run['train_run_id']} (2 steps, kept: after), N = 1",
                                         "GRPO's gain over the base"]
    weights = load_file(str(tmp_path / "runs" / run["train_run_id"] / "adapter" / "adapter_model.safetensors"))
    assert any(t.abs().sum() > 0 for name, t in weights.items() if "lora_B" in name)  # the steps moved the adapter


def test_each_method_refuses_the_other_ones_snapshot(prompts_snapshot, pointwise_store, cli, tmp_path):
    from prefcurate.snapshot import create_snapshot
    from prefcurate.store import Store

    db, snapshot_id = prompts_snapshot
    before = table_checksums(db)
    result = cli("train", "dpo", "--snapshot", snapshot_id, "--db", db)
    assert result.exit_code == 2
    assert "holds prompts rows (trl-conversational-prompt-only), not preference pairs" in result.output
    cfg = tmp_path / "grpo.yaml"
    cfg.write_text(yaml.safe_dump({"rewards": {"checks": {"concise": 1.0}}}))
    result = cli("train", "grpo", "--snapshot", snapshot_id, "--config", cfg, "--db", db)
    assert result.exit_code == 2
    assert "rewards.checks names ['concise'], which rubric arithmetic" in result.output
    assert "its checks are ['right_answer', 'brief']" in result.output
    assert table_checksums(db) == before  # nothing recorded
    from conftest import context

    from prefcurate.audit.flags import DEFAULT_BLOCKING

    ctx = context(audit={"blocking_flags": [f for f in DEFAULT_BLOCKING if f != "degenerate"]})  # as test_train's
    with Store(pointwise_store) as store:
        pairs = create_snapshot(store, ctx, "train-test", test_fraction=0.34, force=True).snapshot_id
    result = cli("train", "grpo", "--snapshot", pairs, "--db", pointwise_store)
    assert result.exit_code == 2 and "not prompts with reference answers: GRPO trains on a snapshot from " \
        "`prefcurate snapshot prompts`" in result.output


def test_make_train_grpo_needs_a_snapshot():
    proc = subprocess.run(["make", "train-grpo"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and "usage: make train-grpo SNAPSHOT=<id>" in proc.stdout


def test_check_rewards_and_pass_rates_agree_with_the_checks():
    from prefcurate.rubric import load_rubric
    from prefcurate.train.evaluate import Answers
    from prefcurate.train.rewards import CheckReward, PassRates

    rubric = load_rubric(ROOT / "rubrics" / "arithmetic.yaml")
    right, brief = (CheckReward(c) for c in rubric.checks)
    completions = [[{"role": "assistant", "content": text}] for text in ("22", "It is 21.", "22 " + "word " * 40)]
    ids = [[1], [1, 2, 3], [1] * 41]
    assert right(completions, ids, reference=["22", "22", "22"]) == [1.0, 0.0, 1.0]
    assert right(completions, ids, reference=[None, None, None]) == [None, None, None]  # no reference: no reward
    assert brief(completions, ids) == [1.0, 1.0, 0.0] and right.__name__ == "check_right_answer"
    # Two prompts, two answers each; only right_answer is hard: pass rate 3 of 4, clustered by prompt.
    rates = PassRates(rubric, ["22", "5"])
    first = rates(Answers([[[1], [1]], [[1], [1]]], [["22", "22 " + "word " * 40], ["5", "6"]]))
    assert first["pass_rate"]["estimate"] == 0.75 and first["check_brief"]["estimate"] == 0.75
    assert "pass_rate_gain" not in first
    second = rates(Answers([[[1], [1]], [[1], [1]]], [["22", "22"], ["5", "5"]]))
    assert second["pass_rate_gain"]["estimate"] == pytest.approx(0.25)
