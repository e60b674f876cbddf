"""transformers on CPU (or GPU): for small models and machines without vLLM."""

from __future__ import annotations

import time
from collections.abc import Callable

from prefcurate.config import InProcessModel, TransformersGeneratorConfig
from prefcurate.generate.base import GenRequest, GenResult, Sample, context_length, overflow

_MODELS: dict[tuple, tuple] = {}


def get_model(cfg: InProcessModel):
    """(tokenizer, model) for these settings, loaded once per process."""
    key = (cfg.model, cfg.dtype)
    if key not in _MODELS:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(cfg.model, padding_side="left")
        dtype = "auto" if cfg.dtype == "auto" else getattr(torch, cfg.dtype)
        model = AutoModelForCausalLM.from_pretrained(cfg.model, dtype=dtype)
        model.eval()
        _MODELS[key] = (tok, model)
    return _MODELS[key]


class HFGenerator:
    def __init__(self, cfg: TransformersGeneratorConfig):
        self.cfg = cfg
        self.name = cfg.identity

    def too_long(self, messages: list[dict[str, str]]) -> str | None:
        return overflow(get_model(self.cfg)[0], messages, context_length(self.cfg))

    def generate(self, requests: list[GenRequest], sink: Callable[[GenResult], None]) -> None:
        """One prompt at a time; ``sink`` gets each result as it is done."""
        import torch

        tok, model = get_model(self.cfg)
        for req in requests:
            start = time.perf_counter()
            ids = tok.apply_chat_template(req.messages, add_generation_prompt=True, return_tensors="pt",
                                          return_dict=True)
            torch.manual_seed(req.seed)
            with torch.no_grad():
                out = model.generate(
                    **ids, do_sample=self.cfg.temperature > 0, temperature=self.cfg.temperature or None,
                    top_p=self.cfg.top_p, max_new_tokens=self.cfg.max_tokens,
                    num_return_sequences=self.cfg.n, pad_token_id=tok.pad_token_id,
                )
            prompt_len = ids["input_ids"].shape[1]
            samples = []
            for row in out[:, prompt_len:].tolist():
                # Everything after the first end token is padding of the batch.
                ended = tok.eos_token_id in row
                row = row[: row.index(tok.eos_token_id)] if ended else row
                samples.append(Sample(tok.decode(row, skip_special_tokens=True), "stop" if ended else "length", len(row)))
            sink(GenResult(req.prompt_id, samples, prompt_len, time.perf_counter() - start))
