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

import json
import logging
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from prefcurate.errors import ConfigError, MissingDependencyError, PrefcurateError
from prefcurate.ids import content_id
from prefcurate.snapshot import PAIRS_FORMAT, Snapshot, get_snapshot, verify_snapshot
from prefcurate.store import Store
from prefcurate.train.config import TrainConfig
from prefcurate.train.evaluate import (
    Answers,
    answer_metrics,
    drifts,
    phrases_of,
    preference_metrics,
    sample_answers,
    vllm_answers,
)
from prefcurate.train.sft import mix_rows, read_sft, sft_nll

log = logging.getLogger("prefcurate")


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


def resolve_loss(cfg: TrainConfig, manifest: dict) -> tuple[str, float]:
    """(loss_type, label_smoothing): as configured, or, for auto, as the snapshot's audit suggests."""
    if cfg.loss_type != "auto":
        return cfg.loss_type, cfg.label_smoothing
    noise = (manifest.get("audit") or {}).get("noise_estimate") or {}
    if not noise.get("loss_type"):
        raise ConfigError(f"loss_type auto: snapshot {manifest['snapshot_id']} has no noise estimate in its audit "
                          "(it needs repeated or two-order verdicts); set loss_type and label_smoothing yourself")
    return noise["loss_type"], noise["label_smoothing"] if noise["loss_type"] == "robust" else 0.0


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


class Evaluations:
    """The evaluations of ``cfg.eval`` on the test split and the held-out SFT answers: before training,
    every ``eval.every_steps`` steps and after, each kept under its name ("before", "step 10", "after").
    From the second on, the sampled length and opener rate also carry their drift from before, with a
    95% interval over the test prompts."""

    def __init__(self, p: Plan, trainer, tokenizer, test_ds):
        self.p, self.cfg, self.trainer, self.tokenizer, self.test_ds = p, p.cfg, trainer, tokenizer, test_ds
        self.heldout = p.heldout
        self.results: dict[str, dict] = {}  # metric -> {evaluation: value}
        self.before: Answers | None = None  # the answers sampled before training
        self.engine = p.eval_engine  # what samples them: vllm or transformers
        self.rank = next(r for r in (8, 16, 32, 64, 128, 256, 512) if r >= p.cfg.lora.r)  # the ranks vLLM serves

    def sample(self, prompts: list, when: str) -> Answers:
        """The policy's answers, by a vLLM engine given the adapter as it is now (before training, the base
        model) or by transformers."""
        e = self.cfg.eval
        llm = self.vllm() if self.engine == "vllm" else None
        if llm is None:
            return sample_answers(self.trainer.model, self.tokenizer, prompts, e, self.cfg.seed)
        adapter = None
        if self.before is not None:
            adapter = self.p.out / "evaluated" / when.replace(" ", "-")
            self.trainer.save_model(str(adapter))
        return vllm_answers(llm, prompts, e, self.cfg.seed, str(adapter) if adapter else None)

    def vllm_engine(self):
        from prefcurate.config import VLLMEngine

        return VLLMEngine(model=self.p.model_path, dtype="auto" if self.p.on_gpu else "float32",
                          max_model_len=self.cfg.max_length + self.cfg.eval.max_new_tokens,
                          enforce_eager=not self.p.on_gpu)

    def vllm(self):
        """The evaluation engine, started on first use; with ``eval.engine: auto``, None when it cannot
        start (transformers samples from then on, and the run's metrics say so)."""
        from prefcurate.generate.vllm_backend import get_llm

        try:
            return get_llm(self.vllm_engine(), max_lora_rank=self.rank)
        except Exception as exc:  # vLLM's start fails in many ways (RuntimeError, ValueError, OSError ...)
            if self.cfg.eval.engine == "vllm":
                raise
            why = " ".join(str(exc).split())[:300]  # vLLM's errors run over many lines
            log.warning("eval: vLLM could not start (%s: %s); sampling with transformers", type(exc).__name__, why)
            self.engine = "transformers"
            return None

    def __enter__(self) -> Evaluations:
        return self

    def __exit__(self, *exc) -> None:
        """Stop the evaluation engine and remove the adapters it was given."""
        if self.engine == "vllm":
            from prefcurate.generate.vllm_backend import shutdown_engine

            shutil.rmtree(self.p.out / "evaluated", ignore_errors=True)
            shutdown_engine(self.vllm_engine(), max_lora_rank=self.rank)

    def run(self, when: str) -> dict:
        e, result = self.cfg.eval, {}
        if not e.enabled:
            return result
        if self.test_ds is not None:
            prompts = [row["prompt"] for row in self.test_ds.select(range(min(e.max_prompts, len(self.test_ds))))]
            answers = self.sample(prompts, when)
            result |= preference_metrics(self.trainer, self.test_ds) | answer_metrics(answers, phrases_of(e))
            if self.before is None:
                self.before = answers
            else:
                result |= drifts(self.before, answers, phrases_of(e), self.cfg.seed)
        if self.heldout:  # the forgetting check: NLL of held-out SFT answers
            result["heldout_sft_nll"] = sft_nll(self.trainer.model, self.tokenizer, self.heldout)
        for name, value in result.items():
            self.results.setdefault(name, {})[when] = value
        return result

    def at(self, when: str) -> dict:
        """Every metric of one evaluation."""
        return {name: by[when] for name, by in self.results.items() if when in by}

    @property
    def base(self) -> dict:
        """The evaluation before training."""
        return self.at("before")


@dataclass
class Plan:
    """What a training run settled before anything was recorded."""

    snapshot: Snapshot
    manifest: dict
    cfg: TrainConfig
    model_path: str
    loss_type: str
    label_smoothing: float
    mix: list | None  # SFT examples mixed in
    heldout: list | None  # SFT examples of the forgetting check
    train_run_id: str
    out: Path
    on_gpu: bool
    quantization: object | None  # QLoRA's 4-bit loading (a BitsAndBytesConfig), or None
    eval_engine: str  # what samples the evaluations' answers: vllm or transformers


def plan(store: Store, snapshot_id: str, cfg: TrainConfig) -> Plan:
    """Check the snapshot (checksums, audit, a train split), read every input and find every library the
    config needs, so that a bad one stops the run with the store as it was."""
    import torch

    snap = get_snapshot(store, snapshot_id)
    manifest = verify_snapshot(snap.path)
    if manifest.get("format", PAIRS_FORMAT) != PAIRS_FORMAT:
        raise ConfigError(f"snapshot {snapshot_id} holds {manifest['format']} rows ({manifest.get('kind', 'not pairs')}), "
                          "not preference pairs: DPO trains on a snapshot from `prefcurate snapshot create`")
    audit = manifest.get("audit") or {}
    if audit and not audit["passed"] and not audit["forced"]:
        raise PrefcurateError(f"snapshot {snapshot_id}: its audit {audit['audit_id']} failed and it was not forced; "
                              "recreate it from a judge that passes, or with `snapshot create --force`")
    model_path = cfg.model or on_policy_model(manifest)
    if snap.n_train == 0:
        raise ConfigError(f"snapshot {snapshot_id} has no train pairs; make more pairs or lower snapshot.test_fraction")
    mix = read_sft(cfg.sft_mix.path) if cfg.sft_mix.path else None
    heldout = read_sft(cfg.eval.sft_path) if cfg.eval.enabled and cfg.eval.sft_path else None
    train_run_id = content_id("train", snapshot_id, model_path, cfg.model_dump())
    on_gpu = torch.cuda.is_available()
    return Plan(snap, manifest, cfg, model_path, *resolve_loss(cfg, manifest), mix, heldout, train_run_id,
                Path(cfg.output_root) / train_run_id, on_gpu, quantization_config(on_gpu) if cfg.lora.qlora else None,
                eval_engine(cfg, on_gpu))


def eval_engine(cfg: TrainConfig, on_gpu: bool) -> str:
    """``eval.engine``, with auto settled: vLLM where it is installed and can serve the policy's adapter
    on CPU (on a GPU its engine would compete with training for memory), else transformers."""
    import importlib.util

    if cfg.eval.engine != "auto":
        return cfg.eval.engine
    servable = cfg.lora.enabled and not cfg.lora.qlora and not on_gpu
    return "vllm" if servable and importlib.util.find_spec("vllm") is not None else "transformers"


@contextmanager
def recorded_train_run(store: Store, p: Plan) -> Iterator[dict]:
    """A ``train_runs`` row, running for the block, then ok (or the guards' ``status`` in the yielded dict:
    stopped, drifted) with the metrics put in that dict, or failed with the error, whatever the exception."""
    store.execute("DELETE FROM train_runs WHERE train_run_id = ?", [p.train_run_id])  # a rerun resumes the run
    store.insert("train_runs", [{
        "train_run_id": p.train_run_id, "snapshot_id": p.snapshot.snapshot_id, "config": p.cfg.model_dump(),
        "output_dir": str(p.out), "base_model": p.model_path, "metrics": None, "git_commit": _git_commit(),
        "status": "running", "started_at": _now(), "finished_at": None,
    }])
    metrics: dict = {}
    finish = "UPDATE train_runs SET status = ?, finished_at = ?, metrics = ? WHERE train_run_id = ?"
    try:
        yield metrics
    except BaseException as e:
        store.execute(finish, ["failed", _now(), json.dumps({"error": f"{type(e).__name__}: {e}"}), p.train_run_id])
        raise
    store.execute(finish, [metrics.get("status", "ok"), _now(), json.dumps(metrics), p.train_run_id])


def train_dpo(store: Store, snapshot_id: str, cfg: TrainConfig) -> TrainResult:
    p = plan(store, snapshot_id, cfg)
    with recorded_train_run(store, p) as metrics:
        adapter_dir = train(p, metrics)
        (p.out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return TrainResult(p.train_run_id, p.out, adapter_dir, metrics)


def train(p: Plan, metrics: dict) -> Path:
    """Train, evaluating before, every ``eval.every_steps`` steps and after under the guards; save the
    kept adapter (and merged weights); fill ``metrics``."""
    from transformers.trainer_utils import get_last_checkpoint
    from trl import DPOTrainer

    from prefcurate.train.guards import Guard

    train_ds, test_ds, n_pairs, n_sft = datasets(p)
    tokenizer, model, base_weights = load_policy(p)
    trainer = DPOTrainer(model=model, args=dpo_args(p, n_sft), train_dataset=train_ds,
                         processing_class=tokenizer, peft_config=lora_config(p.cfg))
    with Evaluations(p, trainer, tokenizer, test_ds) as evaluations:  # its vLLM engine stops with the block
        evaluations.run("before")
        guard = Guard(evaluations, p.out / "kept")
        trainer.add_callback(guard)
        # A rerun of the same snapshot and config has the same id and output folder: it resumes.
        resume = get_last_checkpoint(str(p.out)) if p.out.is_dir() else None
        if resume:
            log.info("train: resuming %s from %s", p.train_run_id, resume)
        result = trainer.train(resume_from_checkpoint=resume)
        if p.cfg.eval.enabled and not guard.stopped:
            guard.check("after", final=True)
        guard.restore_kept(trainer.model)
        adapter_dir = save(p, trainer, tokenizer)
        guard.clean_up()
    final = next((h for h in reversed(trainer.state.log_history) if "loss" in h), {})
    metrics.update({
        **guard.verdict(),
        "train_loss": result.training_loss, "steps": trainer.state.global_step, "train_pairs": n_pairs,
        "train_sft_examples": n_sft, "test_pairs": p.snapshot.n_test, "loss_type": p.loss_type,
        "base_weights": base_weights, "label_smoothing": p.label_smoothing,
        "runtime_s": result.metrics.get("train_runtime"), "final_rewards_accuracy": final.get("rewards/accuracies"),
        "final_rewards_margin": final.get("rewards/margins"), "resumed_from": Path(resume).name if resume else None,
        "eval": evaluations.results, "eval_engine": evaluations.engine if p.cfg.eval.enabled else None,
    })
    return adapter_dir


def save(p: Plan, trainer, tokenizer) -> Path:
    """The policy's adapter (or weights), and the adapter merged into the base when asked."""
    adapter_dir = p.out / ("adapter" if p.cfg.lora.enabled else "model")
    trainer.save_model(str(adapter_dir))
    tokenizer.save_pretrained(str(adapter_dir))
    if p.cfg.merge_weights and p.cfg.lora.enabled:
        trainer.model.merge_and_unload().save_pretrained(str(p.out / "merged"))
        tokenizer.save_pretrained(str(p.out / "merged"))
    return adapter_dir


def datasets(p: Plan):
    """(train split with the SFT examples mixed in, test split or None, pairs, SFT examples)."""
    from datasets import Dataset, concatenate_datasets, load_dataset

    files = {split: str(p.snapshot.path / f"{split}.parquet") for split in ("train", "test")}
    train_ds = load_dataset("parquet", data_files={"train": files["train"]}, split="train")
    test_ds = load_dataset("parquet", data_files={"test": files["test"]}, split="test") if p.snapshot.n_test else None
    n_pairs = len(train_ds)
    sft_rows = mix_rows(p.mix, n_pairs, p.cfg.sft_mix.fraction, p.cfg.seed) if p.mix else []
    if not sft_rows:
        return train_ds, test_ds, n_pairs, 0
    pairs = train_ds.select_columns(["prompt", "chosen", "rejected"])
    sft = Dataset.from_list(sft_rows).cast(pairs.features)
    return concatenate_datasets([pairs, sft]).shuffle(seed=p.cfg.seed), test_ds, n_pairs, len(sft)


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


def dpo_args(p: Plan, n_sft: int):
    from trl import DPOConfig

    cfg, on_gpu = p.cfg, p.on_gpu
    return DPOConfig(
        output_dir=str(p.out),
        loss_type=[p.loss_type] + (["sft"] if n_sft else []),
        loss_weights=[1.0, cfg.sft_mix.weight] if n_sft else None,
        beta=cfg.beta,
        label_smoothing=p.label_smoothing,
        learning_rate=cfg.learning_rate,
        num_train_epochs=cfg.num_train_epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        max_length=cfg.max_length,
        precompute_ref_log_probs=cfg.precompute_ref_log_probs,
        seed=cfg.seed,
        logging_steps=cfg.logging_steps,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        report_to=[],
        # bf16 and gradient checkpointing help on GPUs and only slow a CPU down.
        use_cpu=not on_gpu,
        bf16=on_gpu,
        gradient_checkpointing=on_gpu,
    )


def lora_config(cfg: TrainConfig):
    if not cfg.lora.enabled:
        return None
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      target_modules=cfg.lora.target_modules, task_type="CAUSAL_LM")
