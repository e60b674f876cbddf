"""`make train-dpo SNAPSHOT=<id>`: TRL's DPOTrainer on the snapshot with a LoRA adapter, lineage
in train_runs; a tampered snapshot is refused."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml
from conftest import ROOT


@pytest.fixture(scope="module")
def snapshot_id(pointwise_store):
    from prefcurate.config import AuditConfig
    from prefcurate.snapshot import create_snapshot
    from prefcurate.store import Store

    # The tiny random judge fails the gates and its answers are cut off at max_tokens: forced, with
    # degenerate pairs let through, as in the demo.
    audit = AuditConfig(blocking_flags=[f for f in AuditConfig().blocking_flags if f != "degenerate"])
    with Store(pointwise_store) as store:
        return create_snapshot(store, "train-test", test_fraction=0.34, audit=audit, force=True).snapshot_id


def test_make_train_dpo_trains_a_lora_adapter(pointwise_store, snapshot_id, tmp_path):
    from safetensors.torch import load_file

    cfg = tmp_path / "dpo.yaml"
    cfg.write_text(yaml.safe_dump({"max_steps": 2, "per_device_train_batch_size": 2, "learning_rate": 1e-3,
                                   "output_root": str(tmp_path / "runs"), "max_length": 256}))
    env = os.environ | {"PREFCURATE_DB": str(pointwise_store)}
    proc = subprocess.run(["make", "train-dpo", f"SNAPSHOT={snapshot_id}", f"CONFIG={cfg}", f"PY={sys.executable}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "adapter: " in proc.stdout

    from prefcurate.store import Store

    with Store(pointwise_store) as store:
        run = store.query("SELECT * FROM train_runs WHERE snapshot_id = ?", [snapshot_id])[0]
    assert run["status"] == "ok" and run["git_commit"] and "steps" in run["metrics"]
    adapter = tmp_path / "runs" / run["train_run_id"] / "adapter"
    weights = load_file(str(adapter / "adapter_model.safetensors"))
    lora_b = [t for name, t in weights.items() if "lora_B" in name]
    # LoRA's B matrices start at zero: non-zero values mean the training steps changed the adapter.
    assert lora_b and any(t.abs().sum() > 0 for t in lora_b)


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
