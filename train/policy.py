"""What every training method shares: the run's plan (the snapshot checked, the policy found, the id
decided), loading the policy with its LoRA settings, saving it, and the ``train_runs`` bookkeeping.

train/dpo.py and train/grpo.py each add their own checks of the snapshot and their own trainer.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from prefcurate.errors import ConfigError, MissingDependencyError
from prefcurate.ids import content_id
from prefcurate.snapshot import PAIRS_FORMAT, Snapshot, get_snapshot, verify_snapshot
from prefcurate.store import Store
from prefcurate.train.config import TrainSettings
from prefcurate.train.sft import read_sft


@dataclass
class TrainResult:
    train_run_id: str
    output_dir: Path
    adapter_dir: Path
    metrics: dict


@dataclass
class Plan:
    """What a training run settled before anything was recorded."""

    method: str  # dpo or grpo: train_runs.method
    snapshot: Snapshot
    manifest: dict
    cfg: TrainSettings
    model_path: str
    heldout: list | None  # SFT examples of the forgetting check
    train_run_id: str
    out: Path
    on_gpu: bool
    quantization: object | None  # QLoRA's 4-bit loading (a BitsAndBytesConfig), or None
    eval_engine: str  # what samples the evaluations' answers: vllm or transformers


def plan_run(store: Store, method: str, snapshot_id: str, cfg: TrainSettings, fmt: str, what: str, made_by: str) -> Plan:
    """Check the snapshot (checksums, its format is ``fmt``, a train split), read the held-out examples
    and find every library the config needs, so that a bad one stops the run with the store as it was.
    ``what`` the rows of ``fmt`` are and ``made_by`` the command that makes them, for the error."""
    import torch

    snap = get_snapshot(store, snapshot_id)
    manifest = verify_snapshot(snap.path)
    if manifest.get("format", PAIRS_FORMAT) != fmt:
        raise ConfigError(f"snapshot {snapshot_id} holds {manifest.get('kind', 'pairs')} rows "
                          f"({manifest.get('format', PAIRS_FORMAT)}), not {what}: {method.upper()} trains on a snapshot "
                          f"from `{made_by}`")
    if snap.n_train == 0:
        raise ConfigError(f"snapshot {snapshot_id} has no train rows; make more, or give it a smaller test split")
    model_path = cfg.model or on_policy_model(manifest)
    heldout = read_sft(cfg.eval.sft_path) if cfg.eval.enabled and cfg.eval.sft_path else None
    # DPO's ids came first and stay as they were; other methods name themselves.
    train_run_id = content_id("train", *([] if method == "dpo" else [method]), snapshot_id, model_path, cfg.model_dump())
    on_gpu = torch.cuda.is_available()
    return Plan(method, snap, manifest, cfg, model_path, heldout, train_run_id, Path(cfg.output_root) / train_run_id,
                on_gpu, quantization_config(on_gpu) if cfg.lora.qlora else None, eval_engine(cfg, on_gpu))


def on_policy_model(manifest: dict) -> str:
    """The model that generated the snapshot's candidates, when there is exactly one."""
    models = sorted({g.split(":", 1)[1] for g in manifest["generators"] if ":" in g})
    if len(models) != 1:
        raise ConfigError(
            f"snapshot {manifest['snapshot_id']} has generators {manifest['generators']}; "
            "set `model:` in the training config to choose the policy"
        )
    return models[0]


def quantization_config(on_gpu: bool):
    """The 4-bit NF4 loading of QLoRA, through bitsandbytes (its CPU backend too, slower than LoRA there
    but the same code path as on a GPU)."""
    import importlib.util

    import torch

    if importlib.util.find_spec("bitsandbytes") is None:
        raise MissingDependencyError("bitsandbytes (for lora.qlora)", "pip install bitsandbytes")
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16 if on_gpu else torch.float32)


def eval_engine(cfg: TrainSettings, on_gpu: bool) -> str:
    """``eval.engine``, with auto settled: vLLM where it is installed and can serve the policy's adapter
    on CPU (on a GPU its engine would compete with training for memory), else transformers."""
    import importlib.util

    if cfg.eval.engine != "auto":
        return cfg.eval.engine
    servable = cfg.lora.enabled and not cfg.lora.qlora and not on_gpu
    return "vllm" if servable and importlib.util.find_spec("vllm") is not None else "transformers"


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def recorded_training(store: Store, p: Plan, train: Callable[[dict], Path]) -> TrainResult:
    """Run ``train(metrics)`` (it fills ``metrics`` and returns the adapter's folder) as a ``train_runs``
    row: running, then ok (or the guards' ``status`` in the metrics: stopped, drifted) with the metrics,
    or failed with the error, whatever the exception. The metrics also go to ``metrics.json``."""
    store.execute("DELETE FROM train_runs WHERE train_run_id = ?", [p.train_run_id])  # a rerun resumes the run
    store.insert("train_runs", [{
        "train_run_id": p.train_run_id, "snapshot_id": p.snapshot.snapshot_id, "method": p.method,
        "config": p.cfg.model_dump(), "output_dir": str(p.out), "base_model": p.model_path, "metrics": None,
        "git_commit": git_commit(), "status": "running", "started_at": now(), "finished_at": None,
    }])
    metrics: dict = {}
    finish = "UPDATE train_runs SET status = ?, finished_at = ?, metrics = ? WHERE train_run_id = ?"
    try:
        adapter_dir = train(metrics)
    except BaseException as e:
        store.execute(finish, ["failed", now(), json.dumps({"error": f"{type(e).__name__}: {e}"}), p.train_run_id])
        raise
    (p.out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    store.execute(finish, [metrics.get("status", "ok"), now(), json.dumps(metrics), p.train_run_id])
    return TrainResult(p.train_run_id, p.out, adapter_dir, metrics)


def splits(p: Plan):
    """The snapshot's train split and its test split (None when it has no test rows), as datasets."""
    from datasets import load_dataset

    def split(name: str):
        return load_dataset("parquet", data_files={name: str(p.snapshot.path / f"{name}.parquet")}, split=name)

    return split("train"), split("test") if p.snapshot.n_test else None


def load_policy(p: Plan):
    """(tokenizer, model, how the base weights were loaded: "float32", "4-bit nf4", ...)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    on_gpu, quantization = p.on_gpu, p.quantization
    tokenizer = AutoTokenizer.from_pretrained(p.model_path)
    model = AutoModelForCausalLM.from_pretrained(p.model_path, dtype=torch.bfloat16 if on_gpu else torch.float32,
                                                 quantization_config=quantization)
    # As loaded, for the lineage: QLoRA's base is 4-bit.
    base_weights = (f"4-bit {quantization.bnb_4bit_quant_type}" if getattr(model, "is_loaded_in_4bit", False)
                    else str(model.dtype).removeprefix("torch."))
    if quantization is not None:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=on_gpu)
    return tokenizer, model, base_weights


def lora_config(cfg: TrainSettings):
    if not cfg.lora.enabled:
        return None
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      target_modules=cfg.lora.target_modules, task_type="CAUSAL_LM")


def save(p: Plan, trainer, tokenizer) -> Path:
    """The policy's adapter (or weights), and the adapter merged into the base when asked."""
    adapter_dir = p.out / ("adapter" if p.cfg.lora.enabled else "model")
    trainer.save_model(str(adapter_dir))
    tokenizer.save_pretrained(str(adapter_dir))
    if p.cfg.merge_weights and p.cfg.lora.enabled:
        trainer.model.merge_and_unload().save_pretrained(str(p.out / "merged"))
        tokenizer.save_pretrained(str(p.out / "merged"))
    return adapter_dir


def trainer_args(p: Plan) -> dict:
    """The arguments of TRL's configs that every method sets the same way."""
    cfg, on_gpu = p.cfg, p.on_gpu
    return dict(
        output_dir=str(p.out), learning_rate=cfg.learning_rate, num_train_epochs=cfg.num_train_epochs,
        max_steps=cfg.max_steps, per_device_train_batch_size=cfg.per_device_train_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps, seed=cfg.seed, logging_steps=cfg.logging_steps,
        save_strategy="steps", save_steps=cfg.save_steps, report_to=[],
        # bf16 and gradient checkpointing help on GPUs and only slow a CPU down.
        use_cpu=not on_gpu, bf16=on_gpu, gradient_checkpointing=on_gpu,
    )
