"""The run configuration: pydantic models loaded from YAML.

Every field carries its default and a one-line meaning where it is declared; the YAML key,
the Python attribute and (where a command exposes it) the CLI flag share one name.
Unknown keys are refused, so a typo is an error naming its path, not a silently ignored knob.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from prefcurate.audit.features import CLOSERS, OPENERS, Phrases
from prefcurate.audit.flags import DEFAULT_BLOCKING, Flag
from prefcurate.errors import ConfigError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class PromptsConfig(_Section):
    path: str | None = Field(None, description="JSONL or Parquet file, or a datasets-loadable path/name.")
    split: str = Field("train", description="Split to read when `path` is a datasets-loadable dataset.")
    limit: int | None = Field(None, ge=1, description="Read at most this many prompts (None: all).")


class LocalModelConfig(_Section):
    """Settings shared by every stage that runs a model in this process (vLLM or transformers)."""

    model: str = Field(".cache/tiny-model", description="Model directory (or hub name where a hub is reachable).")
    dtype: str = Field("auto", description="Weights dtype for local models: auto, float32, bfloat16, float16.")
    max_model_len: int | None = Field(None, ge=16, description="vLLM context length (None: the model's own).")
    enforce_eager: bool = Field(False, description="vLLM: skip graph capture (starts twice as fast on CPU).")
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1, description="vLLM: share of GPU memory it may take.")


class ServerConfig(_Section):
    """Settings shared by stages that call a model server (the openai generator, the API judges)."""

    base_url: str | None = Field(None, description="openai backends: server URL, e.g. http://127.0.0.1:8000/v1 "
                                 "(anthropic: ANTHROPIC_BASE_URL instead).")
    api_key_env: str = Field("OPENAI_API_KEY", description="openai backends: environment variable holding the key.")
    concurrency: int = Field(16, ge=1, description="Requests in flight at once.")
    timeout_s: float = Field(120.0, gt=0, description="Seconds before a request counts as failed (and is retried).")
    max_retries: int = Field(2, ge=0, description="SDK retries of 408/409/429/5xx answers and timeouts, then a failure.")


class GeneratorConfig(LocalModelConfig, ServerConfig):
    backend: Literal["vllm", "transformers", "openai", "none"] = Field(
        "vllm", description="vllm (in-process), transformers (CPU, small models), openai (a server), none (import only)."
    )
    n: int = Field(4, ge=1, le=64, description="Candidates sampled per prompt.")
    temperature: float = Field(0.8, ge=0, description="Sampling temperature.")
    top_p: float = Field(0.95, gt=0, le=1, description="Nucleus sampling mass.")
    max_tokens: int = Field(128, ge=1, description="Most new tokens per candidate.")
    seed: int = Field(0, description="Base seed; each prompt gets its own seed derived from it and the prompt id.")
    chunk_size: int = Field(32, ge=1, description="Prompts per model call and store write: a crash loses at most one chunk.")


class ModelPrice(_Section):
    input: float = Field(description="USD per million input tokens.")
    output: float = Field(description="USD per million output tokens.")
    cache_write: float = Field(description="USD per million tokens written to the prompt cache.")
    cache_read: float = Field(description="USD per million tokens read from the prompt cache.")


class JudgeConfig(LocalModelConfig, ServerConfig):
    backend: Literal["local", "anthropic", "openai"] = Field(
        "local", description="local: a model in this process scores by token probabilities; anthropic: Claude; "
        "openai: any OpenAI-compatible server (vLLM serve) with JSON-schema output."
    )
    engine: Literal["vllm", "transformers"] = Field("vllm", description="local backend: what runs the judge model.")
    rubric: str = Field("rubrics/helpfulness.yaml", description="Rubric YAML file; its content hash is part of every judgment's id.")
    mode: Literal["pointwise", "pairwise", "hybrid"] = Field(
        "hybrid", description="pointwise: scores rank each group; pairwise: every two candidates compared in both "
        "orders, ranked by win share (disagreeing orders are a tie); hybrid: pointwise, then each chosen/rejected "
        "pair judged in both orders, and only pairs preferred in every order and repeat are snapshotted."
    )
    repeats: int = Field(1, ge=1, le=10, description="Times each judgment is repeated, for the consistency audit "
                         "(a local judge is deterministic: repeats only matter for sampling judges).")
    batch_size: int = Field(64, ge=1, description="Candidates judged per store write (local: per engine call).")
    requests_per_minute: int | None = Field(None, ge=1, description="anthropic: client-side request limit (None: none).")
    tokens_per_minute: int | None = Field(None, ge=1, description="anthropic: client-side token limit, estimated (None: none).")
    parse_retries: int = Field(2, ge=0, description="API judges: re-asks when the answer is invalid, then parse_error.")
    max_output_tokens: int = Field(512, ge=16, description="API judges: most tokens the judge may answer with.")
    max_usd: float | None = Field(None, gt=0, description="anthropic: no call starts that could take this run's spend past it.")
    batch: bool = Field(False, description="anthropic: judge through the Message Batches API (half price, results within 24 h).")
    batch_poll_s: float = Field(30.0, gt=0, description="anthropic batch: first wait between polls; backs off to 5 minutes.")
    prices: dict[str, ModelPrice] = Field(default_factory=dict, description="Price per model id prefix; adds to or overrides the built-in table.")


class PairsConfig(_Section):
    strategy: Literal["best_worst"] = Field("best_worst", description="best_worst: top-scored vs bottom-scored candidate per prompt.")
    min_margin: float = Field(0.5, ge=0, description="Drop pairs whose score difference is below this (ties always dropped).")
    length_balance: bool = Field(False, description="Choose each rejected candidate (among those at least min_margin "
                                 "below the chosen) so the dataset's p_chosen_longer moves toward 0.5.")


class ProbesConfig(_Section):
    sample: int = Field(50, ge=0, description="Pairs (and their prompts) probed per run; 0: no probes.")
    kinds: list[Literal["opener_injection", "padding", "swap", "null_response"]] = Field(
        default_factory=lambda: ["opener_injection", "padding", "swap", "null_response"],
        description="Perturbations re-judged: an opener prepended, content-free padding, the pair in both "
        "orders, a content-free answer.")


class GateThreshold(_Section):
    min: float | None = Field(None, description="The metric must not lie below this.")
    max: float | None = Field(None, description="The metric must not lie above this.")


class AuditConfig(_Section):
    gates: dict[str, GateThreshold] = Field(default_factory=dict, description="Overrides of the default gate "
                                            "thresholds, by gate name (see the README).")
    openers: list[str] = Field(default_factory=lambda: list(OPENERS), description="Phrases that count as a "
                               "flattering opener, matched case-insensitively at the start after markdown emphasis.")
    closers: list[str] = Field(default_factory=lambda: list(CLOSERS), description="Phrases that count as a stock "
                               "closer near the end (\"I hope this helps\").")
    blocking_flags: list[Flag] = Field(default_factory=lambda: list(DEFAULT_BLOCKING), description="Flags that keep "
                                       "a pair out of snapshots (every flag is reported either way).")
    low_margin: float = Field(1.0, ge=0, description="A pair whose margin (in its scores' units) is below this is "
                              "flagged low_margin.")
    duplicate_jaccard: float = Field(0.9, gt=0, le=1, description="Chosen and rejected whose word-trigram Jaccard "
                                     "similarity reaches this are flagged duplicate.")
    repetition_max: float = Field(0.5, gt=0, le=1, description="A response of 12+ words whose share of repeated word "
                                  "trigrams reaches this is a repetition loop (flagged degenerate).")

    def phrases(self) -> Phrases:
        return Phrases(self.openers, self.closers)


class SnapshotConfig(_Section):
    test_fraction: float = Field(0.1, ge=0, lt=1, description="Share of prompts (by prompt-id hash) held out as the test split.")


class Config(_Section):
    name: str = Field("prefcurate", description="Run name, recorded with every run.")
    prompts: PromptsConfig = Field(default_factory=PromptsConfig, description="Where prompts come from.")
    generator: GeneratorConfig = Field(default_factory=GeneratorConfig, description="How candidates are sampled.")
    judge: JudgeConfig = Field(default_factory=JudgeConfig, description="How candidates are scored.")
    pairs: PairsConfig = Field(default_factory=PairsConfig, description="How chosen/rejected pairs are built.")
    probes: ProbesConfig = Field(default_factory=ProbesConfig, description="Which counterfactual probes check the judge.")
    audit: AuditConfig = Field(default_factory=AuditConfig, description="What the audit flags and which gates it applies.")
    snapshot: SnapshotConfig = Field(default_factory=SnapshotConfig, description="How snapshots are split.")


M = TypeVar("M", bound=BaseModel)


def load_yaml_model(path: str | Path, model: type[M], missing_hint: str) -> M:
    """Read a YAML file into a pydantic model; errors name the file, the line or the field path."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: file not found ({missing_hint})")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.MarkedYAMLError as e:
        line = e.problem_mark.line + 1 if e.problem_mark else "?"
        raise ConfigError(f"{path}:{line}: invalid YAML: {e.problem} (fix the syntax on that line)") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read YAML: {e}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a YAML mapping, got {type(raw).__name__}")
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        more = f" (and {len(e.errors()) - 1} more)" if len(e.errors()) > 1 else ""
        raise ConfigError(f"{path}: {loc}: {err['msg'].removeprefix('Value error, ')}{more}") from None


def load_config(path: str | Path) -> Config:
    """Read and validate a run config."""
    return load_yaml_model(path, Config, "pass the path to a YAML config, e.g. configs/demo.yaml")
