"""Evaluations of a policy before, during and after training (``Evaluations``; DPO and GRPO alike):

- DPO: preference accuracy and mean reward margin: TRL's implicit reward, beta * (log pi - log pi_ref),
  of the chosen response against the rejected one (before training policy and reference are the
  same model, so the margins are 0); GRPO: the check pass rates of train/rewards.py;
- the mean length (tokens), distinct-2 share and opener rate of answers sampled at the serving
  temperature: alignment tends to lengthen answers and narrow the distribution, and a judge that
  likes "Certainly!" teaches the policy to open with it (the rate counts answers that begin with one
  of the audit's openers, or of ``eval.openers``);
- the drift of a sampled metric between two policies on the same prompts, with a 95% interval from a
  bootstrap over prompts (the answers to one prompt are correlated, so a prompt is the unit resampled).

Answers are sampled by transformers' ``generate`` (``sample_answers``) or by a vLLM engine, with a
LoRA adapter when given (``vllm_answers``: SmolLM2 with an adapter on 2 cores, 77 tokens/s against
generate's 18).
"""

from __future__ import annotations

import itertools
import logging
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from prefcurate.audit.features import Phrases, opener_of
from prefcurate.display import metric_text
from prefcurate.train.config import EvalSettings
from prefcurate.train.sft import sft_nll

if TYPE_CHECKING:
    from prefcurate.train.policy import Plan

log = logging.getLogger("prefcurate")

BOOTSTRAP = 2000  # resamples of the drift intervals


@dataclass
class Answers:
    """Sampled answers grouped by prompt: ``tokens[i]`` and ``texts[i]`` are the answers to prompt i."""

    tokens: list[list[list[int]]]
    texts: list[list[str]]

    def per_prompt(self, measure: Callable[[list[int], str], float]) -> list[list[float]]:
        return [[measure(t, s) for t, s in zip(ts, ss)] for ts, ss in zip(self.tokens, self.texts)]


def preference_metrics(trainer, dataset) -> dict:
    """Preference accuracy and mean reward margin of the trainer's policy on ``dataset``."""
    m = trainer.evaluate(eval_dataset=dataset, metric_key_prefix="eval")
    return {"preference_accuracy": m.get("eval_rewards/accuracies"), "reward_margin": m.get("eval_rewards/margins")}


def distinct_n(token_lists: list[list[int]], n: int = 2) -> float | None:
    """Distinct n-grams over all n-grams of the sampled answers (1: no n-gram repeats)."""
    grams = [tuple(t[i:i + n]) for t in token_lists for i in range(len(t) - n + 1)]
    return len(set(grams)) / len(grams) if grams else None


def opener_rate(texts: list[str], phrases: Phrases) -> float | None:
    """Share of ``texts`` that begin with one of the openers."""
    return sum(opener_of(t, phrases) is not None for t in texts) / len(texts) if texts else None


def phrases_of(e: EvalSettings) -> Phrases:
    return Phrases(e.openers) if e.openers is not None else Phrases()


def sample_answers(model, tokenizer, prompts: list[list[dict]], e: EvalSettings, seed: int) -> Answers:
    """``e.samples_per_prompt`` answers to each prompt, sampled by transformers."""
    import torch

    tokens, texts = [], []
    model.eval()
    for i, messages in enumerate(prompts):
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        ids = {k: v.to(model.device) for k, v in ids.items()}
        torch.manual_seed(seed + i)
        with torch.no_grad():
            out = model.generate(**ids, do_sample=e.temperature > 0, temperature=e.temperature or None,
                                 max_new_tokens=e.max_new_tokens, num_return_sequences=e.samples_per_prompt,
                                 pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
        rows = [row[: row.index(tokenizer.eos_token_id)] if tokenizer.eos_token_id in row else row
                for row in out[:, ids["input_ids"].shape[1]:].tolist()]
        tokens.append(rows)
        texts.append([tokenizer.decode(r, skip_special_tokens=True).strip() for r in rows])
    return Answers(tokens, texts)


LORA_IDS = itertools.count(1)  # vLLM caches an adapter by its id: every adapter saved gets a new one


def vllm_answers(llm, prompts: list[list[dict]], e: EvalSettings, seed: int, adapter: str | None = None) -> Answers:
    """The same sampling by a ``vllm.LLM`` (started with ``max_lora_rank`` when ``adapter`` is a LoRA
    folder); each prompt has its own seed, so two policies see the same random streams."""
    from vllm import SamplingParams
    from vllm.lora.request import LoRARequest

    params = [SamplingParams(n=e.samples_per_prompt, temperature=e.temperature, max_tokens=e.max_new_tokens,
                             seed=seed + i) for i in range(len(prompts))]
    lora = None
    if adapter:
        lora_id = next(LORA_IDS)
        lora = LoRARequest(f"eval-{lora_id}", lora_id, adapter)
    outs = llm.chat(prompts, params, use_tqdm=False, lora_request=lora)
    eos = llm.get_tokenizer().eos_token_id
    # vLLM keeps the end-of-sequence token in token_ids; transformers' answers stop before it.
    return Answers([[list(o.token_ids)[:-1] if o.token_ids and o.token_ids[-1] == eos else list(o.token_ids)
                     for o in r.outputs] for r in outs],
                   [[o.text.strip() for o in r.outputs] for r in outs])


def answer_metrics(a: Answers, phrases: Phrases) -> dict:
    """Mean length in tokens, distinct-2 and opener rate of the answers."""
    tokens = [t for ts in a.tokens for t in ts]
    return {"sample_length": sum(map(len, tokens)) / len(tokens) if tokens else math.nan,
            "distinct_2": distinct_n(tokens), "opener_rate": opener_rate([s for ss in a.texts for s in ss], phrases)}


def length_of(tokens: list[int], text: str) -> float:
    return float(len(tokens))


def opens_with(phrases: Phrases) -> Callable[[list[int], str], float]:
    return lambda tokens, text: float(opener_of(text, phrases) is not None)


def drifts(before: Answers, after: Answers, phrases: Phrases, seed: int = 0) -> dict:
    """The drift of the sampled length (tokens) and opener rate from ``before`` to ``after``."""
    return {"length_drift": drift(before.per_prompt(length_of), after.per_prompt(length_of), seed),
            "opener_drift": drift(before.per_prompt(opens_with(phrases)), after.per_prompt(opens_with(phrases)), seed)}


def clustered_mean(values: list[list[float]], seed: int = 0) -> dict:
    """The mean of per-answer values grouped by prompt, with a 95% interval resampling prompts."""
    return drift([[] for _ in values], values, seed)


def drift(before: list[list[float]], after: list[list[float]], seed: int = 0) -> dict:
    """How much a per-answer value moved between two policies answering the same prompts: the mean
    after minus the mean before, with a percentile 95% interval from resampling prompts (both
    policies' answers to a resampled prompt go together). An empty ``before`` counts as 0."""
    if len(before) != len(after) or not after:
        raise ValueError("drift needs the same prompts, at least one, before and after")
    b = np.array([(sum(v), len(v)) for v in before], dtype=float)
    a = np.array([(sum(v), len(v)) for v in after], dtype=float)

    def estimate(idx: np.ndarray) -> float:
        mean_b = b[idx, 0].sum() / b[idx, 1].sum() if b[idx, 1].sum() else 0.0
        return a[idx, 0].sum() / a[idx, 1].sum() - mean_b

    rng = np.random.default_rng(seed)
    n = len(after)
    stats = [estimate(rng.integers(0, n, size=n)) for _ in range(BOOTSTRAP)]
    lo, hi = np.nanpercentile(stats, [2.5, 97.5])
    return {"estimate": float(estimate(np.arange(n))), "ci": [float(lo), float(hi)], "prompts": n}


class Evaluations:
    """The evaluations of ``cfg.eval`` on the test split and the held-out SFT answers: before training,
    every ``eval.every_steps`` steps and after, each kept under its name ("before", "step 10", "after").
    From the second on, the sampled length and opener rate also carry their drift from before, with a
    95% interval over the test prompts. ``task`` adds the method's own metrics of the answers (DPO: the
    preference accuracy; GRPO: the check pass rates), with ``before``'s answers at hand for drifts."""

    def __init__(self, p: Plan, trainer, tokenizer, test_ds, task: Callable[[Answers], dict] | None = None):
        self.p, self.cfg, self.trainer, self.tokenizer, self.test_ds = p, p.cfg, trainer, tokenizer, test_ds
        self.task = task or (lambda answers: {})  # the method's own metrics of the test split's answers
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
            result |= self.task(answers) | answer_metrics(answers, phrases_of(e))
            if self.before is None:
                self.before = answers
            else:
                result |= drifts(self.before, answers, phrases_of(e), self.cfg.seed)
        if self.heldout:  # the forgetting check: NLL of held-out SFT answers
            result["heldout_sft_nll"] = sft_nll(self.trainer.model, self.tokenizer, self.heldout)
        for name, value in result.items():
            self.results.setdefault(name, {})[when] = value
        log.info("eval %s: %s", when, ", ".join(f"{k} {metric_text(v, k)}" for k, v in result.items()))  # progress
        return result

    def at(self, when: str) -> dict:
        """Every metric of one evaluation."""
        return {name: by[when] for name, by in self.results.items() if when in by}

    @property
    def base(self) -> dict:
        """The evaluation before training."""
        return self.at("before")
