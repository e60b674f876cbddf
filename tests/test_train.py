"""`make train-dpo SNAPSHOT=<id>`: TRL's DPOTrainer on the snapshot with a LoRA adapter, lineage
in train_runs; a tampered snapshot is refused."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml
from conftest import ROOT, context


@pytest.fixture(scope="module")
def snapshot_id(pointwise_store):
    from prefcurate.audit.flags import DEFAULT_BLOCKING
    from prefcurate.snapshot import create_snapshot
    from prefcurate.store import Store

    # The tiny random judge fails the gates and its answers are cut off at max_tokens: forced, with
    # degenerate pairs let through, as in the demo.
    ctx = context(audit={"blocking_flags": [f for f in DEFAULT_BLOCKING if f != "degenerate"]})
    with Store(pointwise_store) as store:
        return create_snapshot(store, ctx, "train-test", test_fraction=0.34, force=True).snapshot_id


def test_make_train_dpo_trains_a_lora_adapter(pointwise_store, snapshot_id, tmp_path):
    from safetensors.torch import load_file

    cfg = tmp_path / "dpo.yaml"
    cfg.write_text(yaml.safe_dump({"max_steps": 2, "per_device_train_batch_size": 2, "learning_rate": 1e-3,
                                   "output_root": str(tmp_path / "runs"), "max_length": 256, "save_steps": 1,
                                   "eval": {"samples_per_prompt": 2, "max_prompts": 4, "max_new_tokens": 8,
                                            "sft_path": str(ROOT / "data" / "sft" / "heldout.jsonl"),
                                            "every_steps": 1},
                                   "sft_mix": {"path": str(ROOT / "data" / "sft" / "mix.jsonl"), "fraction": 0.5},
                                   "merge_weights": True}))
    env = os.environ | {"PREFCURATE_DB": str(pointwise_store)}

    def train() -> dict:
        proc = subprocess.run(["make", "train-dpo", f"SNAPSHOT={snapshot_id}", f"CONFIG={cfg}", f"PY={sys.executable}"],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert "adapter: " in proc.stdout and "Evaluations (rates and drifts" in proc.stdout
        from prefcurate.store import Store

        with Store(pointwise_store) as store:
            rows = store.query("SELECT * FROM train_runs WHERE snapshot_id = ?", [snapshot_id])
        assert len(rows) == 1  # a rerun of the same snapshot and config is the same run
        return rows[0]

    run = train()
    metrics = json.loads(run["metrics"])
    assert run["status"] == "ok" and run["git_commit"] and metrics["steps"] == 2 and metrics["resumed_from"] is None
    assert metrics["base_weights"] == "float32"  # LoRA on CPU: the base as it is, in full precision
    assert metrics["eval_engine"] == "vllm"  # eval.engine auto: a vLLM engine served each evaluation's adapter
    # Before, after step 1 (eval.every_steps) and after, on the test split: before training policy and
    # reference are one model; from the second evaluation on, the sampled metrics carry their drift.
    ev = metrics["eval"]
    assert set(ev) == {"preference_accuracy", "reward_margin", "sample_length", "distinct_2", "opener_rate",
                       "heldout_sft_nll", "length_drift", "opener_drift"}
    assert list(ev["heldout_sft_nll"]) == ["before", "step 1", "after"] and list(ev["length_drift"]) == ["step 1", "after"]
    drift = ev["length_drift"]["after"]
    assert drift["ci"][0] <= drift["estimate"] <= drift["ci"][1] and drift["prompts"] == min(4, metrics["test_pairs"])
    assert metrics["status"] == "ok" and metrics["kept"] == "after" and metrics["stopped"] is None
    assert ev["reward_margin"]["before"] == 0 and ev["reward_margin"]["after"] != 0
    # The forgetting check moved: the adapter changed what the model says to the held-out prompts.
    assert ev["heldout_sft_nll"]["before"] > 0 and ev["heldout_sft_nll"]["after"] != ev["heldout_sft_nll"]["before"]
    # As many SFT rows as pairs (fraction 0.5), trained with the combined sigmoid + sft loss.
    assert metrics["train_sft_examples"] == metrics["train_pairs"] > 0
    assert json.loads(run["config"])["sft_mix"]["fraction"] == 0.5
    assert 0 < ev["sample_length"]["before"] <= 8 and 0 < ev["distinct_2"]["after"] <= 1
    adapter = tmp_path / "runs" / run["train_run_id"] / "adapter"
    weights = load_file(str(adapter / "adapter_model.safetensors"))
    lora_b = [t for name, t in weights.items() if "lora_B" in name]
    # LoRA's B matrices start at zero: non-zero values mean the training steps changed the adapter.
    assert lora_b and any(t.abs().sum() > 0 for t in lora_b)

    assert (tmp_path / "runs" / run["train_run_id"] / "merged" / "config.json").is_file()

    # The lineage, from the prompts' source file through the snapshot and its audit to the adapter.
    from typer.testing import CliRunner

    from prefcurate.cli import app

    out = CliRunner().invoke(app, ["sql", "select * from v_lineage", "--json", "--db", str(pointwise_store)]).output
    lineage = json.loads(out.strip().splitlines()[0])
    assert lineage["train_run_id"] == run["train_run_id"] and lineage["snapshot_id"] == snapshot_id
    assert json.loads(lineage["prompt_sources"]) == [str(ROOT / "data" / "prompts" / "basics.jsonl")]
    assert lineage["audit_forced"] is True and lineage["audit_passed"] is False and lineage["audit_id"]
    assert lineage["output_dir"].endswith(run["train_run_id"]) and lineage["git_commit"] == run["git_commit"]

    # Checkpoints were kept; with the last one gone, as if the run had died after step 1, a rerun resumes.
    out = tmp_path / "runs" / run["train_run_id"]
    assert {p.name for p in out.glob("checkpoint-*")} == {"checkpoint-1", "checkpoint-2"} and not (out / "kept").exists()
    shutil.rmtree(out / "checkpoint-2")
    again = json.loads(train()["metrics"])
    assert again["resumed_from"] == "checkpoint-1" and again["steps"] == 2


def test_a_rerun_after_a_snapshot_and_a_train_run_stores_no_second_audit(pointwise_store, snapshot_id, cli):
    """The audit's id depends on what it audited: adding a snapshot and a train run changes nothing the
    audit looks at, so rerunning the flow on unchanged data stores no new audit and no new flags."""
    from prefcurate.store import Store

    with Store(pointwise_store) as store:
        assert store.counts()["snapshots"] >= 1 and store.counts()["train_runs"] >= 1  # the test above trained
        config = store.scalar("SELECT config_path FROM runs WHERE command = 'run' ORDER BY started_at LIMIT 1")
        before = store.scalar("SELECT [count(*), (SELECT count(*) FROM pair_flags)] FROM audits")
    result = cli("run", config, "--db", pointwise_store, "--quiet")
    assert result.exit_code == 0, result.output
    with Store(pointwise_store) as store:
        assert store.scalar("SELECT [count(*), (SELECT count(*) FROM pair_flags)] FROM audits") == before


def test_training_that_raises_the_held_out_nll_stops_at_the_first_evaluation(pointwise_store, snapshot_id, cli,
                                                                             tmp_path):
    """DPO lowers the likelihood of the rejected answers: held out as the forgetting check, their NLL rises
    at once, and with a bound that small the run stops at its first evaluation."""
    import pyarrow.parquet as pq

    from prefcurate.store import Store

    with Store(pointwise_store) as store:
        folder = store.query("SELECT path FROM snapshots WHERE snapshot_id = ?", [snapshot_id])[0]["path"]
    rows = pq.read_table(f"{folder}/train.parquet").to_pylist()
    heldout = tmp_path / "rejected.jsonl"
    heldout.write_text("".join(json.dumps({"messages": r["prompt"] + r["rejected"]}) + "\n" for r in rows))
    cfg = tmp_path / "guarded.yaml"
    cfg.write_text(yaml.safe_dump({"max_steps": 4, "per_device_train_batch_size": 2, "learning_rate": 2e-2,
                                   "output_root": str(tmp_path / "runs"), "max_length": 256, "sft_mix": {"path": None},
                                   "eval": {"every_steps": 1, "max_nll_rise": 1e-4, "max_new_tokens": 4,
                                            "max_prompts": 2, "sft_path": str(heldout), "engine": "transformers"}}))
    result = cli("train", "dpo", "--snapshot", snapshot_id, "--config", cfg, "--db", pointwise_store)
    assert result.exit_code == 0, result.output
    assert "stopped at step 1: held-out NLL rose +" in result.output
    with Store(pointwise_store) as store:
        run = store.query("SELECT status, metrics FROM train_runs ORDER BY started_at DESC LIMIT 1")[0]
    metrics = json.loads(run["metrics"])
    assert run["status"] == "stopped" and metrics["steps"] == 1 and metrics["kept"] is None
    assert list(metrics["eval"]["heldout_sft_nll"]) == ["before", "step 1"]


def test_evaluations_can_sample_through_vllm_serving_the_adapter(pointwise_store, snapshot_id, cli, tmp_path):
    """eval.engine vllm: the answers of each evaluation come from a vLLM engine given the adapter as it is
    then (the base model before training), instead of transformers' generate."""
    cfg = tmp_path / "vllm-eval.yaml"
    cfg.write_text(yaml.safe_dump({"max_steps": 2, "per_device_train_batch_size": 2, "learning_rate": 1e-2,
                                   "output_root": str(tmp_path / "runs"), "max_length": 256, "sft_mix": {"path": None},
                                   "eval": {"engine": "vllm", "every_steps": 1, "max_new_tokens": 8, "max_prompts": 2,
                                            "samples_per_prompt": 2, "sft_path": None}}))
    from prefcurate.store import Store
    from prefcurate.train.evaluate import LORA_IDS

    first = next(LORA_IDS)
    result = cli("train", "dpo", "--snapshot", snapshot_id, "--config", cfg, "--db", pointwise_store)
    assert result.exit_code == 0, result.output
    assert next(LORA_IDS) == first + 3  # two adapters went to vLLM: after step 1, and after training
    with Store(pointwise_store) as store:
        run = store.query("SELECT output_dir, metrics FROM train_runs ORDER BY started_at DESC LIMIT 1")[0]
    ev = json.loads(run["metrics"])["eval"]
    assert list(ev["sample_length"]) == ["before", "step 1", "after"]
    assert all(0 < v <= 8 for v in ev["sample_length"].values()) and "after" in ev["opener_drift"]
    assert not os.path.exists(os.path.join(run["output_dir"], "evaluated"))  # the adapters it was given are gone


def test_eval_engine_auto_is_vllm_where_it_can_serve_the_adapter_and_falls_back_to_transformers(caplog, tmp_path):
    from types import SimpleNamespace

    from prefcurate.train.config import TrainConfig
    from prefcurate.train.evaluate import Evaluations
    from prefcurate.train.policy import eval_engine

    assert eval_engine(TrainConfig(), on_gpu=False) == "vllm"
    assert eval_engine(TrainConfig(), on_gpu=True) == "transformers"  # the engine would compete for GPU memory
    assert eval_engine(TrainConfig(lora={"enabled": False}), on_gpu=False) == "transformers"
    assert eval_engine(TrainConfig(eval={"engine": "transformers"}), on_gpu=False) == "transformers"

    def evaluations(engine: str) -> Evaluations:
        cfg = TrainConfig(eval={"engine": engine})
        p = SimpleNamespace(cfg=cfg, heldout=None, eval_engine="vllm", model_path=str(tmp_path), on_gpu=False)
        return Evaluations(p, trainer=None, tokenizer=None, test_ds=None)

    auto = evaluations("auto")
    with caplog.at_level("WARNING", logger="prefcurate"):
        assert auto.vllm() is None
    assert auto.engine == "transformers" and "vLLM could not start" in caplog.text  # a folder without a model
    assert "Invalid repository ID or local directory" in caplog.text
    with pytest.raises(Exception, match="Invalid repository ID or local directory"):  # asked for by name: the run fails
        evaluations("vllm").vllm()


def test_vllm_evaluation_needs_a_lora_policy():
    from pydantic import ValidationError

    from prefcurate.train.config import TrainConfig

    with pytest.raises(ValidationError, match="eval.engine vllm samples through the policy's LoRA adapter"):
        TrainConfig(lora={"enabled": False}, eval={"engine": "vllm"})


def test_loss_type_auto_takes_the_audits_noise_estimate(pointwise_store, snapshot_id, cli, tmp_path):
    from prefcurate.train.config import TrainConfig
    from prefcurate.train.dpo import resolve_loss

    noisy = {"snapshot_id": "s", "audit": {"noise_estimate": {"loss_type": "robust", "label_smoothing": 0.12}}}
    assert resolve_loss(TrainConfig(loss_type="auto"), noisy) == ("robust", 0.12)
    clean = {"snapshot_id": "s", "audit": {"noise_estimate": {"loss_type": "sigmoid", "label_smoothing": 0.0}}}
    assert resolve_loss(TrainConfig(loss_type="auto"), clean) == ("sigmoid", 0.0)
    # The tiny pointwise judge made no repeated verdicts: nothing to estimate from.
    cfg = tmp_path / "auto.yaml"
    cfg.write_text(yaml.safe_dump({"loss_type": "auto"}))
    result = cli("train", "dpo", "--snapshot", snapshot_id, "--config", cfg, "--db", pointwise_store)
    assert result.exit_code == 2 and "loss_type auto: snapshot" in result.stderr and "no noise estimate" in result.stderr


def test_tampered_snapshot_is_refused(pointwise_store, snapshot_id, cli, tmp_path):
    from prefcurate.store import Store

    with Store(pointwise_store) as store:
        folder = store.query("SELECT path FROM snapshots WHERE snapshot_id = ?", [snapshot_id])[0]["path"]
    test_file = os.path.join(folder, "test.parquet")
    os.chmod(test_file, 0o644)
    original = open(test_file, "rb").read()
    try:
        with open(test_file, "r+b") as f:
            f.seek(len(original) // 2)
            f.write(bytes([original[len(original) // 2] ^ 0xFF]))
        result = cli("train", "dpo", "--snapshot", snapshot_id, "--db", pointwise_store)
        assert result.exit_code == 2
        assert "test.parquet does not match its checksum" in result.stderr
    finally:
        with open(test_file, "wb") as f:
            f.write(original)


def test_the_opener_rate_counts_answers_that_open_with_a_configured_opener():
    from prefcurate.audit.features import Phrases
    from prefcurate.train.evaluate import opener_rate

    answers = ["Certainly! Paris.", "**Great question!** It is Paris.", "Paris.", "Surely it is Paris."]
    assert opener_rate(answers, Phrases()) == 0.5  # "Surely" is not "Sure"
    assert opener_rate(answers, Phrases(["paris"])) == 0.25
    assert opener_rate([], Phrases()) is None


def test_sft_rows_teach_only_the_sft_term():
    from prefcurate.train.sft import mix_rows

    rows = mix_rows([[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]], n_pairs=9, fraction=0.25,
                    seed=0)
    assert len(rows) == 3 and all(r["chosen"] == r["rejected"] == [{"role": "assistant", "content": "a"}] for r in rows)
    assert len(mix_rows([[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]], 4, 0.1, 0)) == 1
    assert mix_rows([[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]], 4, 0.0, 0) == []


def test_a_bad_sft_file_stops_training_before_anything_is_recorded(pointwise_store, snapshot_id, cli, tmp_path):
    from conftest import table_checksums

    bad = tmp_path / "sft.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "q"}]}\n')
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump({"sft_mix": {"path": str(bad)}}))
    before = table_checksums(pointwise_store)
    result = cli("train", "dpo", "--snapshot", snapshot_id, "--config", cfg, "--db", pointwise_store)
    assert result.exit_code == 2
    assert f"{bad}:1: the last message of `messages` must be from the assistant, it is 'user'" in result.stderr
    assert table_checksums(pointwise_store) == before


def test_qlora_trains_an_adapter_on_a_4bit_base(pointwise_store, snapshot_id, cli, tmp_path):
    from safetensors.torch import load_file

    # bitsandbytes' CPU backend runs the same 4-bit NF4 path as a GPU, only slower.
    cfg = tmp_path / "qlora.yaml"
    cfg.write_text(yaml.safe_dump({"lora": {"qlora": True}, "max_steps": 1, "per_device_train_batch_size": 2,
                                   "learning_rate": 1e-3, "max_length": 256, "output_root": str(tmp_path / "runs"),
                                   "eval": {"enabled": False}}))
    result = cli("train", "dpo", "--snapshot", snapshot_id, "--config", cfg, "--db", pointwise_store)
    assert result.exit_code == 0, result.output
    from prefcurate.store import Store

    with Store(pointwise_store) as store:
        run = store.query("SELECT * FROM train_runs WHERE json_extract(config, '$.lora.qlora') = 'true'")[0]
    metrics = json.loads(run["metrics"])
    assert run["status"] == "ok" and metrics["base_weights"] == "4-bit nf4" and metrics["steps"] == 1
    weights = load_file(str(tmp_path / "runs" / run["train_run_id"] / "adapter" / "adapter_model.safetensors"))
    assert any(t.abs().sum() > 0 for name, t in weights.items() if "lora_B" in name)


def test_qlora_needs_lora(pointwise_store, snapshot_id, cli, tmp_path):
    from conftest import table_checksums

    cfg = tmp_path / "qlora.yaml"
    cfg.write_text(yaml.safe_dump({"lora": {"qlora": True, "enabled": False}}))
    before = table_checksums(pointwise_store)
    result = cli("train", "dpo", "--snapshot", snapshot_id, "--config", cfg, "--db", pointwise_store)
    assert result.exit_code == 2 and "QLoRA trains a LoRA adapter" in result.stderr
    assert table_checksums(pointwise_store) == before
