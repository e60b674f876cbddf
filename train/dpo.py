"""DPO training on a snapshot with TRL.

    make train-dpo SNAPSHOT=<id> [CONFIG=train/configs/dpo.yaml]
    prefcurate train dpo --snapshot <id> --config train/configs/dpo.yaml

Reads the snapshot's files only (verified against their checksums first, and refused when its
audit failed unless it was forced), never the live pair tables; evaluates the policy on the test
split before, every ``eval.every_steps`` steps and after (train/evaluate.py), under the guards of
train/guards.py (stopped: forgetting; drifted: the judge's bias learned); checkpoints, and resumes
when rerun with the same snapshot and config; records the run, its status, config and metrics in
``train_runs``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prefcurate.errors import ConfigError, PrefcurateError
from prefcurate.snapshot import PAIRS_FORMAT
from prefcurate.store import Store
from prefcurate.train.config import TrainConfig
from prefcurate.train.evaluate import preference_metrics
from prefcurate.train.policy import (
    Plan,
    TrainResult,
    load_policy,
    lora_config,
    plan_run,
    recorded_training,
    splits,
    trainer_args,
)
from prefcurate.train.sft import mix_rows, read_sft


def resolve_loss(cfg: TrainConfig, manifest: dict) -> tuple[str, float]:
    """(loss_type, label_smoothing): as configured, or, for auto, as the snapshot's audit suggests."""
    if cfg.loss_type != "auto":
        return cfg.loss_type, cfg.label_smoothing
    noise = (manifest.get("audit") or {}).get("noise_estimate") or {}
    if not noise.get("loss_type"):
        raise ConfigError(f"loss_type auto: snapshot {manifest['snapshot_id']} has no noise estimate in its audit "
                          "(it needs repeated or two-order verdicts); set loss_type and label_smoothing yourself")
    return noise["loss_type"], noise["label_smoothing"] if noise["loss_type"] == "robust" else 0.0


@dataclass
class DPOPlan:
    """A DPO run's plan: what every method settles, and the loss and the SFT examples mixed in."""

    run: Plan
    loss_type: str
    label_smoothing: float
    mix: list | None  # SFT examples mixed in


def plan(store: Store, snapshot_id: str, cfg: TrainConfig) -> DPOPlan:
    """Check the snapshot (checksums, pairs, its audit, a train split) and read every input, so that a bad
    one stops the run with the store as it was."""
    p = plan_run(store, "dpo", snapshot_id, cfg, PAIRS_FORMAT, "preference pairs", "prefcurate snapshot create")
    audit = p.manifest.get("audit") or {}
    if audit and not audit["passed"] and not audit["forced"]:
        raise PrefcurateError(f"snapshot {snapshot_id}: its audit {audit['audit_id']} failed and it was not forced; "
                              "recreate it from a judge that passes, or with `snapshot create --force`")
    mix = read_sft(cfg.sft_mix.path) if cfg.sft_mix.path else None
    return DPOPlan(p, *resolve_loss(cfg, p.manifest), mix)


def train_dpo(store: Store, snapshot_id: str, cfg: TrainConfig) -> TrainResult:
    d = plan(store, snapshot_id, cfg)
    return recorded_training(store, d.run, lambda metrics: train(d, metrics))


def train(d: DPOPlan, metrics: dict) -> Path:
    """Train, evaluating before, every ``eval.every_steps`` steps and after under the guards; save the
    kept adapter (and merged weights); fill ``metrics``."""
    from trl import DPOTrainer

    from prefcurate.train.guards import guarded_training  # transformers: only once training starts

    p = d.run
    train_ds, test_ds, n_pairs, n_sft = datasets(d)
    tokenizer, model, base_weights = load_policy(p)
    trainer = DPOTrainer(model=model, args=dpo_args(d, n_sft), train_dataset=train_ds,
                         processing_class=tokenizer, peft_config=lora_config(p.cfg))
    guarded = guarded_training(p, trainer, tokenizer, test_ds, lambda answers: preference_metrics(trainer, test_ds))
    final = next((h for h in reversed(trainer.state.log_history) if "loss" in h), {})
    metrics.update({
        **guarded.verdict, "train_loss": guarded.result.training_loss, "steps": trainer.state.global_step,
        "train_pairs": n_pairs, "train_sft_examples": n_sft, "test_pairs": p.snapshot.n_test, "loss_type": d.loss_type,
        "base_weights": base_weights, "label_smoothing": d.label_smoothing,
        "runtime_s": guarded.result.metrics.get("train_runtime"), "final_rewards_accuracy": final.get("rewards/accuracies"),
        "final_rewards_margin": final.get("rewards/margins"), "resumed_from": guarded.resumed_from,
        "eval": guarded.evaluations, "eval_engine": guarded.engine,
    })
    return guarded.adapter_dir


def datasets(d: DPOPlan):
    """(train split with the SFT examples mixed in, test split or None, pairs, SFT examples)."""
    from datasets import Dataset, concatenate_datasets

    p = d.run
    train_ds, test_ds = splits(p)
    n_pairs = len(train_ds)
    sft_rows = mix_rows(d.mix, n_pairs, p.cfg.sft_mix.fraction, p.cfg.seed) if d.mix else []
    if not sft_rows:
        return train_ds, test_ds, n_pairs, 0
    pairs = train_ds.select_columns(["prompt", "chosen", "rejected"])
    sft = Dataset.from_list(sft_rows).cast(pairs.features)
    return concatenate_datasets([pairs, sft]).shuffle(seed=p.cfg.seed), test_ds, n_pairs, len(sft)


def dpo_args(d: DPOPlan, n_sft: int):
    from trl import DPOConfig

    cfg = d.run.cfg
    return DPOConfig(
        **trainer_args(d.run),
        loss_type=[d.loss_type] + (["sft"] if n_sft else []),
        loss_weights=[1.0, cfg.sft_mix.weight] if n_sft else None,
        beta=cfg.beta,
        label_smoothing=d.label_smoothing,
        max_length=cfg.max_length,
        precompute_ref_log_probs=cfg.precompute_ref_log_probs,
    )
