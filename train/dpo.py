"""DPO training on a snapshot with TRL.

    make train-dpo SNAPSHOT=<id> [CONFIG=train/configs/dpo.yaml]
    prefcurate train dpo --snapshot <id> --config train/configs/dpo.yaml

Reads the snapshot's files only (verified against their checksums first), never the live pair
tables; records the run, its config and its metrics in ``train_runs``.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from prefcurate.errors import ConfigError
from prefcurate.ids import content_id
from prefcurate.snapshot import get_snapshot, verify_snapshot
from prefcurate.store import Store
from train.config import TrainConfig


@dataclass
class TrainResult:
    train_run_id: str
    output_dir: Path
    adapter_dir: Path
    metrics: dict


def on_policy_model(manifest: dict) -> str:
    """The model that generated the snapshot's candidates, when there is exactly one."""
    models = sorted({g.split(":", 1)[1] for g in manifest["generators"] if ":" in g})
    if len(models) != 1:
        raise ConfigError(
            f"snapshot {manifest['snapshot_id']} has generators {manifest['generators']}; "
            "set `model:` in the training config to choose the policy"
        )
    return models[0]


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def train_dpo(store: Store, snapshot_id: str, cfg: TrainConfig) -> TrainResult:
    import torch
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    snap = get_snapshot(store, snapshot_id)
    manifest = verify_snapshot(snap.path)
    model_path = cfg.model or on_policy_model(manifest)
    if snap.n_train == 0:
        raise ConfigError(f"snapshot {snapshot_id} has no train pairs; make more pairs or lower snapshot.test_fraction")

    train_run_id = content_id("train", snapshot_id, model_path, cfg.model_dump())
    out = Path(cfg.output_root) / train_run_id
    store.con.execute("DELETE FROM train_runs WHERE train_run_id = ?", [train_run_id])
    store.insert("train_runs", [{
        "train_run_id": train_run_id, "snapshot_id": snapshot_id, "config": cfg.model_dump(),
        "output_dir": str(out), "base_model": model_path, "metrics": None, "git_commit": _git_commit(),
        "status": "running", "started_at": _now(), "finished_at": None,
    }])

    data = {split: str(snap.path / f"{split}.parquet") for split in ("train", "test")}
    train_ds = load_dataset("parquet", data_files={"train": data["train"]}, split="train")
    on_gpu = torch.cuda.is_available()
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.bfloat16 if on_gpu else torch.float32)
    args = DPOConfig(
        output_dir=str(out),
        loss_type=[cfg.loss_type],
        beta=cfg.beta,
        label_smoothing=cfg.label_smoothing,
        learning_rate=cfg.learning_rate,
        num_train_epochs=cfg.num_train_epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        max_length=cfg.max_length,
        seed=cfg.seed,
        logging_steps=cfg.logging_steps,
        save_strategy="no",
        report_to=[],
        # bf16 and gradient checkpointing help on GPUs and only slow a CPU down.
        use_cpu=not on_gpu,
        bf16=on_gpu,
        gradient_checkpointing=on_gpu,
    )
    peft_config = None
    if cfg.lora.enabled:
        peft_config = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                                 target_modules=cfg.lora.target_modules, task_type="CAUSAL_LM")
    trainer = DPOTrainer(model=model, args=args, train_dataset=train_ds, processing_class=tokenizer,
                         peft_config=peft_config)
    try:
        result = trainer.train()
    except BaseException as e:
        store.con.execute("UPDATE train_runs SET status = 'failed', finished_at = ?, metrics = ? WHERE train_run_id = ?",
                          [_now(), json.dumps({"error": f"{type(e).__name__}: {e}"}), train_run_id])
        raise
    adapter_dir = out / ("adapter" if cfg.lora.enabled else "model")
    trainer.save_model(str(adapter_dir))
    tokenizer.save_pretrained(str(adapter_dir))
    final = next((h for h in reversed(trainer.state.log_history) if "loss" in h), {})
    metrics = {
        "train_loss": result.training_loss,
        "steps": trainer.state.global_step,
        "train_pairs": len(train_ds),
        "runtime_s": result.metrics.get("train_runtime"),
        "final_rewards_accuracy": final.get("rewards/accuracies"),
        "final_rewards_margin": final.get("rewards/margins"),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    store.con.execute("UPDATE train_runs SET status = 'ok', finished_at = ?, metrics = ? WHERE train_run_id = ?",
                      [_now(), json.dumps(metrics), train_run_id])
    return TrainResult(train_run_id, out, adapter_dir, metrics)
