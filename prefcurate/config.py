"""The run configuration: pydantic models loaded from YAML.

Every field carries its default and a one-line meaning where it is declared; the YAML key,
the Python attribute and (where a command exposes it) the CLI flag share one name. The generator
and the judge have one model per backend, chosen by their `backend` key, so a field the chosen
backend does not use is an error naming its path, like a typo: no knob is silently ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, model_validator

from prefcurate.audit.features import CLOSERS, OPENERS, Phrases
from prefcurate.audit.flags import DEFAULT_BLOCKING, Flag
from prefcurate.errors import ConfigError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    def changed(self, names: tuple[str, ...]) -> list[str]:
        """Which of ``names`` hold another value than their default (a default one changes nothing, so a
        config written out in full, as runs record it, reads back the same)."""
        return [n for n in names if getattr(self, n) != type(self).model_fields[n].get_default(call_default_factory=True)]


class PromptsConfig(_Section):
    path: str | None = Field(None, description="JSONL or Parquet file, or a datasets-loadable path/name (None: the "
                             "prompts already in the store).")
    split: str = Field("train", description="Split to read when `path` is a datasets-loadable dataset.")
    limit: int | None = Field(None, ge=1, description="Read at most this many prompts (None: all).")
    where: dict[str, str] | None = Field(None, description="Keep only the prompts whose metadata has these values, "
                                         "e.g. {split: heldout} (None: every prompt).")


# -- Settings shared by several backends -----------------------------------------------------------

class InProcessModel(_Section):
    """A model run in this process, by vLLM or transformers."""

    model: str = Field(".cache/tiny-model", description="Model directory (or hub name where a hub is reachable).")
    dtype: str = Field("auto", description="Weights dtype: auto, float32, bfloat16, float16.")
    max_model_len: int | None = Field(None, ge=16, description="Context length in tokens (None: the model's own).")


class VLLMEngine(InProcessModel):
    """An in-process vLLM engine; the generator and a local judge with the same settings share one."""

    enforce_eager: bool = Field(False, description="vLLM: skip graph capture (starts twice as fast on CPU).")
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1, description="vLLM: share of GPU memory it may take.")
    block_size: int | None = Field(None, ge=1, description="vLLM: KV-cache block in tokens; prefix caching reuses whole "
                                   "blocks, so the judge's shared prompt prefixes want small ones (None: 32 on CPU, "
                                   "vLLM's default on GPU).")


class ServerCalls(_Section):
    """Calls to a model server over HTTP."""

    concurrency: int = Field(16, ge=1, description="Requests in flight at once.")
    timeout_s: float = Field(120.0, gt=0, description="Seconds before a request counts as failed (and is retried).")
    max_retries: int = Field(2, ge=0, description="SDK retries of 408/409/429/5xx answers and timeouts, then a failure.")


class OpenAIServer(ServerCalls):
    """Any OpenAI-compatible server: vLLM serve, SGLang, llama.cpp."""

    model: str = Field(description="The model name the server knows.")
    base_url: str = Field(description="Server URL, e.g. http://127.0.0.1:8000/v1.")
    api_key_env: str = Field("OPENAI_API_KEY", description="Environment variable holding the key.")


class Sampling(_Section):
    n: int = Field(4, ge=1, le=64, description="Candidates sampled per prompt.")
    temperature: float = Field(0.8, ge=0, description="Sampling temperature.")
    top_p: float = Field(0.95, gt=0, le=1, description="Nucleus sampling mass.")
    max_tokens: int = Field(128, ge=1, description="Most new tokens per candidate.")
    seed: int = Field(0, description="Base seed; each prompt gets its own seed derived from it and the prompt id.")
    chunk_size: int = Field(32, ge=1, description="Prompts per model call; what has come back is stored at least once "
                            "a second, so a crash loses at most the prompts in flight.")

    @property
    def identity(self) -> str:
        """backend:model, stored with every candidate (``generator``) and in snapshots' lineage."""
        return f"{self.backend}:{self.model}"


# -- The generator: one model per backend ------------------------------------------------------------

class VLLMGeneratorConfig(Sampling, VLLMEngine):
    backend: Literal["vllm"] = Field("vllm", description="vLLM in this process: one request with n samples per prompt.")


class TransformersGeneratorConfig(Sampling, InProcessModel):
    backend: Literal["transformers"] = Field(description="transformers in this process (CPU, small models).")


class OpenAIGeneratorConfig(Sampling, OpenAIServer):
    backend: Literal["openai"] = Field(description="Any OpenAI-compatible server.")


class NoGeneratorConfig(_Section):
    backend: Literal["none"] = Field(description="No generation: judge the candidates already stored (imported).")


# -- The judge: one model per backend ----------------------------------------------------------------

class JudgeSettings(_Section):
    rubric: str = Field("rubrics/helpfulness.yaml", description="Rubric YAML file; its content hash is part of every "
                        "judgment's id.")
    mode: Literal["pointwise", "pairwise", "hybrid"] = Field(
        "hybrid", description="pointwise: scores rank each group; pairwise: every two candidates compared in both "
        "orders, ranked by win share (disagreeing orders are a tie); hybrid: pointwise, then each chosen/rejected "
        "pair judged in both orders, and only pairs preferred in every order and repeat are snapshotted.")
    repeats: int = Field(1, ge=1, le=10, description="Times each judgment is repeated, for the consistency audit "
                         "(a local judge is deterministic: repeats only matter for sampling judges).")
    write_batch: int = Field(64, ge=1, description="Verdicts per store write; what has come back is also written at "
                             "least once a second, so a crash repays only the calls in flight.")


class ModelPrice(_Section):
    input: float = Field(description="USD per million input tokens.")
    output: float = Field(description="USD per million output tokens.")
    cache_write: float = Field(description="USD per million tokens written to the prompt cache.")
    cache_read: float = Field(description="USD per million tokens read from the prompt cache.")


class APIJudgeSettings(JudgeSettings, ServerCalls):
    parse_retries: int = Field(2, ge=0, description="Re-asks when the answer is invalid, then parse_error.")
    max_output_tokens: int = Field(512, ge=16, description="Most tokens the judge may answer with.")
    prices: dict[str, ModelPrice] = Field(default_factory=dict, description="Price per model id (USD per million "
                                          "tokens); adds to or overrides the built-in table.")


class LocalJudgeConfig(JudgeSettings, VLLMEngine):
    backend: Literal["local"] = Field("local", description="A model in this process scores by token probabilities.")
    engine: Literal["vllm", "transformers"] = Field("vllm", description="What runs the judge model.")
    engine_batch: int = Field(64, ge=1, description="Judgments per call of the judge model.")
    forward_batch: int = Field(64, ge=1, description="transformers engine: sequences per forward pass.")

    @model_validator(mode="after")
    def _engine_uses_every_field(self) -> LocalJudgeConfig:
        only = {"transformers": ("enforce_eager", "gpu_memory_utilization", "block_size"), "vllm": ("forward_batch",)}[self.engine]
        if unused := self.changed(only):
            raise ValueError(f"judge.{unused[0]} is not used with judge.engine {self.engine}; remove it")
        return self


class AnthropicJudgeConfig(APIJudgeSettings):
    backend: Literal["anthropic"] = Field(description="Claude through the Messages API (key: ANTHROPIC_API_KEY, "
                                          "server: ANTHROPIC_BASE_URL).")
    model: str = Field("claude-sonnet-4-6", description="Claude model id.")
    requests_per_minute: int | None = Field(None, ge=1, description="Client-side request limit (None: none).")
    tokens_per_minute: int | None = Field(None, ge=1, description="Client-side token limit, estimated (None: none).")
    max_usd: float | None = Field(None, gt=0, description="No call starts that could take this run's spend past it.")
    batch: bool = Field(False, description="Judge through the Message Batches API (half price, results within 24 h).")
    batch_poll_s: float = Field(30.0, gt=0, description="batch: first wait between polls; backs off to 5 minutes.")

    @model_validator(mode="after")
    def _batch_uses_every_field(self) -> AnthropicJudgeConfig:
        # A batch is one request, answered whole: nothing is in flight, rate-limited, re-asked or written piecewise.
        online = ("concurrency", "requests_per_minute", "tokens_per_minute", "parse_retries", "write_batch")
        if unused := self.changed(online if self.batch else ("batch_poll_s",)):
            raise ValueError(f"judge.{unused[0]} is not used with judge.batch {str(self.batch).lower()}; remove it")
        return self


class OpenAIJudgeConfig(APIJudgeSettings, OpenAIServer):
    backend: Literal["openai"] = Field(description="Any OpenAI-compatible server, answers constrained by JSON schema.")


def _by_backend(default: str):
    """The tag of a generator or judge section: its `backend`, or the default when it has none."""
    def tag(value: Any) -> str:
        return value.get("backend", default) if isinstance(value, dict) else getattr(value, "backend", default)
    return Discriminator(tag)


GENERATORS = {"vllm": VLLMGeneratorConfig, "transformers": TransformersGeneratorConfig, "openai": OpenAIGeneratorConfig,
              "none": NoGeneratorConfig}
JUDGES = {"local": LocalJudgeConfig, "anthropic": AnthropicJudgeConfig, "openai": OpenAIJudgeConfig}
GeneratorConfig = Annotated[
    Annotated[VLLMGeneratorConfig, Tag("vllm")] | Annotated[TransformersGeneratorConfig, Tag("transformers")]
    | Annotated[OpenAIGeneratorConfig, Tag("openai")] | Annotated[NoGeneratorConfig, Tag("none")],
    _by_backend("vllm")]
JudgeConfig = Annotated[
    Annotated[LocalJudgeConfig, Tag("local")] | Annotated[AnthropicJudgeConfig, Tag("anthropic")]
    | Annotated[OpenAIJudgeConfig, Tag("openai")],
    _by_backend("local")]
BACKENDS = {"generator": GENERATORS, "judge": JUDGES}
# Fields that were renamed: what an old config's key became.
RENAMED = {"judge.batch_size": "it meant three things, now judge.write_batch (verdicts per store write), "
                               "judge.engine_batch and judge.forward_batch (local judge)"}


# -- The other sections ------------------------------------------------------------------------------

class PairsConfig(_Section):
    strategy: Literal["best_worst"] = Field("best_worst", description="best_worst: top-scored vs bottom-scored candidate per prompt.")
    min_margin: float = Field(0.5, ge=0, description="Drop pairs whose score difference is below this (ties always dropped).")
    length_balance: bool = Field(False, description="Choose each rejected candidate (among those at least min_margin "
                                 "below the chosen) so the dataset's p_chosen_longer moves toward 0.5, the closest "
                                 "to the chosen in length.")


class ProbesConfig(_Section):
    sample: int = Field(50, ge=0, description="Pairs (and their prompts) probed per run; 0: no probes.")
    kinds: list[Literal["opener_injection", "padding", "swap", "null_response", "template"]] = Field(
        default_factory=lambda: ["opener_injection", "padding", "swap", "null_response"],
        description="Perturbations re-judged: an opener prepended, content-free padding, the pair in both "
        "orders, a content-free answer; template: both responses scored under each of the rubric's variants "
        "(paraphrased instructions).")


class GateThreshold(_Section):
    min: float | None = Field(None, description="The metric must not lie below this.")
    max: float | None = Field(None, description="The metric must not lie above this.")


class AuditConfig(_Section):
    gates: dict[str, GateThreshold] = Field(default_factory=dict, description="Overrides of the default gate "
                                            "thresholds, by gate name (see the README).")
    alpha: float = Field(0.05, gt=0, lt=1, description="A gate fails only when its Benjamini-Hochberg q-value across "
                         "the gates is below this (and its estimate lies beyond its threshold); also the level of each "
                         "gate's minimum detectable effect.")
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
    judge_family: str | None = Field(None, description="The model family whose candidates count as the judge's own, "
                                     "for self_preference and the self_preferred flag, e.g. claude (None: the first "
                                     "word of the judge's model name).")
    repetition_max: float = Field(0.5, gt=0, le=1, description="A response of 12+ words whose share of repeated word "
                                  "trigrams reaches this is a repetition loop (flagged degenerate).")

    def phrases(self) -> Phrases:
        return Phrases(self.openers, self.closers)


class SnapshotConfig(_Section):
    test_fraction: float = Field(0.1, ge=0, lt=1, description="Share of prompts (by prompt-id hash) held out as the test split.")


class Config(_Section):
    name: str = Field("prefcurate", description="Run name, recorded with every run.")
    prompts: PromptsConfig = Field(default_factory=PromptsConfig, description="Where prompts come from.")
    generator: GeneratorConfig = Field(default_factory=VLLMGeneratorConfig, description="How candidates are sampled.")
    judge: JudgeConfig = Field(default_factory=LocalJudgeConfig, description="How candidates are scored.")
    pairs: PairsConfig = Field(default_factory=PairsConfig, description="How chosen/rejected pairs are built.")
    probes: ProbesConfig = Field(default_factory=ProbesConfig, description="Which counterfactual probes check the judge.")
    audit: AuditConfig = Field(default_factory=AuditConfig, description="What the audit flags and which gates it applies.")
    snapshot: SnapshotConfig = Field(default_factory=SnapshotConfig, description="How snapshots are split.")


# -- Loading -------------------------------------------------------------------------------------------

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
    try:
        return validated(model, {} if raw is None else raw)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def validated(model: type[M], raw: Any) -> M:
    """``raw`` (a mapping) as ``model``, or a ConfigError naming the first bad field's path."""
    if not isinstance(raw, dict):
        raise ConfigError(f"expected a YAML mapping, got {type(raw).__name__}")
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        more = f" (and {len(e.errors()) - 1} more)" if len(e.errors()) > 1 else ""
        raise ConfigError(describe(e.errors()[0]) + more) from None


def describe(err: dict) -> str:
    """One validation error as "path: problem". Inside a generator or judge section, pydantic puts the
    chosen backend in the path; it is taken out, and a field that backend does not use says so."""
    loc = [str(p) for p in err["loc"]]
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "union_tag_invalid" and loc and loc[-1] in BACKENDS:
        choices = [f"'{k}'" for k in BACKENDS[loc[-1]]]
        return (f"{'.'.join(loc)}.backend: Input should be {', '.join(choices[:-1])} or {choices[-1]} "
                f"(got {err['ctx']['tag']!r})")
    backend = loc.pop(1) if len(loc) >= 2 and loc[0] in BACKENDS and loc[1] in BACKENDS[loc[0]] else None
    path = ".".join(loc)
    if msg.startswith(path + "."):  # a section's own check, which names the field itself
        return msg
    if err["type"] == "extra_forbidden" and backend and len(loc) == 2:
        if users := [k for k, m in BACKENDS[loc[0]].items() if loc[1] in m.model_fields]:
            return (f"{path} is not used by {loc[0]}.backend {backend} (only by {', '.join(users)}); "
                    "remove it or change the backend")
    if err["type"] == "extra_forbidden" and path in RENAMED:
        return f"{path}: no such field any more: {RENAMED[path]}"
    return f"{path or '(top level)'}: {msg}"


def load_config(path: str | Path) -> Config:
    """Read and validate a run config."""
    return load_yaml_model(path, Config, "pass the path to a YAML config, e.g. configs/demo.yaml")
