"""Evaluations of a policy before and after DPO, on the snapshot's test split:

- preference accuracy and mean reward margin: TRL's implicit reward, beta * (log pi - log pi_ref),
  of the chosen response against the rejected one (before training policy and reference are the
  same model, so the margins are 0);
- the mean length (tokens), distinct-2 share and opener rate of answers sampled at the serving
  temperature: alignment tends to lengthen answers and narrow the distribution, and a judge that
  likes "Certainly!" teaches the policy to open with it (the rate counts answers that begin with one
  of the audit's openers, or of ``eval.openers``).
"""

from __future__ import annotations

import math

from prefcurate.audit.features import Phrases, opener_of
from prefcurate.train.config import EvalSettings


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


def sample_metrics(model, tokenizer, prompts: list[list[dict]], e: EvalSettings, seed: int) -> dict:
    """Mean length, distinct-2 and opener rate of answers sampled from ``model`` for ``prompts``."""
    import torch

    answers: list[list[int]] = []
    model.eval()
    for i, messages in enumerate(prompts):
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        ids = {k: v.to(model.device) for k, v in ids.items()}
        torch.manual_seed(seed + i)
        with torch.no_grad():
            out = model.generate(**ids, do_sample=e.temperature > 0, temperature=e.temperature or None,
                                 max_new_tokens=e.max_new_tokens, num_return_sequences=e.samples_per_prompt,
                                 pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
        for row in out[:, ids["input_ids"].shape[1]:].tolist():
            answers.append(row[: row.index(tokenizer.eos_token_id)] if tokenizer.eos_token_id in row else row)
    lengths = [len(a) for a in answers]
    texts = [tokenizer.decode(a, skip_special_tokens=True).strip() for a in answers]
    phrases = Phrases(e.openers) if e.openers is not None else Phrases()
    return {"sample_length": sum(lengths) / len(lengths) if lengths else math.nan, "distinct_2": distinct_n(answers),
            "opener_rate": opener_rate(texts, phrases)}
