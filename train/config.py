"""Training configuration (YAML in train/configs/). Every field: default and meaning."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from prefcurate.config import load_yaml_model


class LoraSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Train a LoRA adapter (False: full fine-tuning).")
    r: int = Field(16, ge=1, description="LoRA rank.")
    alpha: int = Field(32, ge=1, description="LoRA scaling numerator (scale = alpha / r).")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA branch.")
    target_modules: str | list[str] = Field("all-linear", description="Modules to adapt; all-linear or a list of names.")
    qlora: bool = Field(False, description="QLoRA: load the base model in 4-bit NF4 (bitsandbytes) and train the "
                        "adapter on it; for memory on a GPU (on a CPU it runs, slower than LoRA).")

    @model_validator(mode="after")
    def _qlora_needs_lora(self) -> LoraSettings:
        if self.qlora and not self.enabled:
            raise ValueError("lora.qlora is true but lora.enabled is false; QLoRA trains a LoRA adapter")
        return self


class EvalSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Evaluate the policy before and after training.")
    temperature: float = Field(0.8, ge=0, description="Serving temperature of the sampled answers (length, diversity).")
    samples_per_prompt: int = Field(2, ge=1, description="Answers sampled per test prompt.")
    max_prompts: int = Field(32, ge=1, description="Test prompts sampled from, at most.")
    max_new_tokens: int = Field(64, ge=1, description="Longest sampled answer, in tokens.")
    engine: Literal["auto", "transformers", "vllm"] = Field(
        "auto", description="What samples the answers: a vLLM engine serving each evaluation's LoRA adapter (about "
        "4x faster on CPU; needs LoRA, not QLoRA), transformers' generate, or auto: vLLM where it is installed and "
        "can serve the policy on CPU (on a GPU its engine would compete with training for memory), else transformers.")
    openers: list[str] | None = Field(None, description="Phrases the opener rate counts at an answer's start "
                                      "(None: the audit's default list, e.g. \"Certainly\", \"Great question\").")
    sft_path: str | None = Field(None, description="Held-out SFT examples (JSONL of messages) whose mean NLL before "
                                 "and after is the forgetting check; None: no check.")
    every_steps: int | None = Field(None, ge=1, description="Also evaluate every this many optimiser steps: the targeted "
                                    "metrics and the held-out NLL side by side over training (None: before and after only).")
    max_nll_rise: float | None = Field(0.2, gt=0, description="Guard: stop, status stopped, when the held-out NLL (nats "
                                       "per token) rises more than this over the base's; the adapter of the last "
                                       "evaluation within it is kept (None: no guard).")
    max_length_drift: float | None = Field(0.25, gt=0, description="Guard: status drifted (exit code 3) when the mean "
                                           "sampled length rose more than this share of the base's, its 95% interval "
                                           "excluding zero (None: no guard).")
    max_opener_drift: float | None = Field(0.1, gt=0, description="Guard: status drifted (exit code 3) when the opener "
                                           "rate rose more than this (a share of answers), its 95% interval excluding "
                                           "zero (None: no guard).")


class SftMix(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str | None = Field(None, description="SFT examples (JSONL of messages) mixed in against forgetting; None: none.")
    fraction: float = Field(0.1, ge=0, lt=1, description="Share of the training rows that are SFT examples.")
    weight: float = Field(1.0, gt=0, description="Weight of the SFT loss term beside the DPO loss.")


class TrainSettings(BaseModel):
    """What every training method shares: the policy, the optimiser, LoRA, checkpoints and the evaluations."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str | None = Field(None, description="Policy to train; None: the snapshot's generator (on-policy).")
    learning_rate: float = Field(5e-6, gt=0, description="Peak learning rate.")
    num_train_epochs: float = Field(1.0, gt=0, description="Passes over the train split.")
    max_steps: int = Field(-1, description="Stop after this many optimiser steps (-1: run the epochs).")
    per_device_train_batch_size: int = Field(4, ge=1, description="Examples per device per step (DPO: pairs; "
                                             "GRPO: completions, a multiple of num_generations).")
    gradient_accumulation_steps: int = Field(1, ge=1, description="Steps accumulated per optimiser update.")
    max_length: int = Field(1024, ge=16, description="Prompt + completion tokens per example (DPO cuts longer "
                            "ones; the evaluation engine's context is this plus eval.max_new_tokens).")
    lora: LoraSettings = Field(default_factory=LoraSettings, description="LoRA adapter settings.")
    seed: int = Field(0, description="Training seed.")
    logging_steps: int = Field(1, ge=1, description="Log metrics every this many steps.")
    output_root: str = Field("runs", description="Runs are written to OUTPUT_ROOT/<train_run_id>/.")
    merge_weights: bool = Field(False, description="Also save the LoRA adapter merged into the base weights (merged/).")
    save_steps: int = Field(50, ge=1, description="Checkpoint every this many steps; a rerun with the same "
                            "snapshot and config resumes from the last one.")
    eval: EvalSettings = Field(default_factory=lambda: EvalSettings(), description="Evaluations before and after training.")

    @model_validator(mode="after")
    def _vllm_evaluation_needs_lora(self) -> TrainSettings:
        if self.eval.engine == "vllm" and (not self.lora.enabled or self.lora.qlora):
            raise ValueError("eval.engine vllm samples through the policy's LoRA adapter: it needs lora.enabled "
                             "and not lora.qlora; use eval.engine transformers")
        return self

    @model_validator(mode="after")
    def _merge_needs_full_precision(self) -> TrainSettings:
        if self.merge_weights and self.lora.qlora:
            raise ValueError("merge_weights is true with lora.qlora: a 4-bit base cannot take the merged adapter; "
                             "merge it into the full-precision model after training")
        return self


class TrainConfig(TrainSettings):
    """DPO on a pairs snapshot (train/configs/dpo.yaml)."""

    loss_type: Literal["sigmoid", "hinge", "ipo", "robust", "auto"] = Field(
        "sigmoid", description="DPO loss; auto: what the snapshot's audit suggests (robust with label_smoothing "
        "set to its noise estimate, or sigmoid when the estimate is below 0.01).")
    beta: float = Field(0.1, gt=0, description="Strength of the KL anchor to the reference model.")
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="Assumed label-noise rate (robust loss; auto sets it).")
    sft_mix: SftMix = Field(default_factory=SftMix, description="SFT data mixed into training against forgetting.")
    precompute_ref_log_probs: bool = Field(False, description="Compute the reference model's log-probabilities once "
                                           "before training, so it need not stay in memory (TRL).")


class LengthPenalty(BaseModel):
    model_config = ConfigDict(extra="forbid")

    weight: float = Field(1.0, ge=0, description="Weight of TRL's soft overlong punishment (0: off): 0 up to "
                          "max_completion_length - soft_cache tokens, falling to -1 at max_completion_length.")
    soft_cache: int = Field(8, ge=0, description="The tokens before max_completion_length over which the penalty grows.")


class RepetitionPenalty(BaseModel):
    model_config = ConfigDict(extra="forbid")

    weight: float = Field(1.0, ge=0, description="Weight of TRL's repetition penalty (0: off): the share of a "
                          "completion's token n-grams that repeat, times max_penalty.")
    ngram_size: int = Field(3, ge=1, description="Size of the token n-grams counted.")
    max_penalty: float = Field(-1.0, le=0, description="The penalty of a completion of nothing but repeats.")


class RewardSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    checks: dict[str, float] = Field(default_factory=dict, description="Weight of each rubric check's reward, by "
                                     "check name (a check not named weighs 1; 0 leaves it out). A check's reward "
                                     "is 1 when it passes, 0 when it fails, none where it does not apply.")
    length_penalty: LengthPenalty = Field(default_factory=LengthPenalty, description="Against reward hacking by length.")
    repetition_penalty: RepetitionPenalty = Field(default_factory=RepetitionPenalty,
                                                  description="Against degenerate, repeating completions.")
    judge: float = Field(0.0, ge=0, description="Weight of the local judge's score, scaled to 0..1 (0: off); the "
                         "judge of the run that made the snapshot, with its rubric.")

    def weight_of(self, check: str) -> float:
        """The weight of a rubric check's reward: as named in ``checks``, else 1."""
        return self.checks.get(check, 1.0)


class GRPOTrainConfig(TrainSettings):
    """GRPO on a prompts snapshot, rewarded by the rubric's checks (train/configs/grpo.yaml)."""

    num_generations: int = Field(8, ge=2, description="Completions sampled per prompt: the group whose rewards are "
                                 "compared.")
    per_device_train_batch_size: int = Field(16, ge=1, description="Completions per device per step: a multiple of "
                                             "num_generations (16: two prompts' groups of 8).")
    max_completion_length: int = Field(64, ge=1, description="Longest completion sampled in training, in tokens.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature of the training completions.")
    beta: float = Field(0.0, ge=0, description="KL anchor to the base model (0: none, TRL's default; the forgetting "
                        "guard watches the held-out NLL instead).")
    rewards: RewardSettings = Field(default_factory=RewardSettings, description="The reward functions and their weights.")

    @model_validator(mode="after")
    def _whole_groups(self) -> GRPOTrainConfig:
        if self.per_device_train_batch_size % self.num_generations:
            raise ValueError(f"per_device_train_batch_size {self.per_device_train_batch_size} is not a multiple of "
                             f"num_generations {self.num_generations}: a step takes whole groups of completions")
        return self


def load_train_config(path: str | Path) -> TrainConfig:
    return load_yaml_model(path, TrainConfig, "pass --config train/configs/dpo.yaml or another training config")


def load_grpo_config(path: str | Path) -> GRPOTrainConfig:
    return load_yaml_model(path, GRPOTrainConfig, "pass --config train/configs/grpo.yaml or another GRPO config")
