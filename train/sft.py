"""SFT examples against forgetting: mixed into DPO training (`sft_mix`), and a held-out set whose
mean NLL before and after training is the forgetting check (`eval.sft_path`).

Files are JSONL, one conversation per line, the last message the assistant's answer:
``{"messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]}``.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

from prefcurate.errors import InputError
from prefcurate.inputs import normalise_messages, read_jsonl


def read_sft(path: str) -> list[list[dict[str, str]]]:
    """Every conversation of ``path``, validated; a bad line stops with its number."""
    if not Path(path).is_file():
        raise InputError(path, None, "file not found", "give a JSONL file of {\"messages\": [...]} lines")
    examples = []
    for lineno, obj in read_jsonl(Path(path)):
        if not isinstance(obj, dict) or "messages" not in obj:
            raise InputError(path, lineno, "each line must be an object with `messages`")
        messages = normalise_messages(obj["messages"], path, lineno, "messages", last_role="assistant")
        if len(messages) < 2:
            raise InputError(path, lineno, "an example needs a prompt before the assistant's answer")
        examples.append(messages)
    if not examples:
        raise InputError(path, None, "no examples found")
    return examples


def mix_rows(examples: list[list[dict[str, str]]], n_pairs: int, fraction: float, seed: int) -> list[dict]:
    """SFT examples as DPO rows, so they make up ``fraction`` of the training rows.

    Chosen and rejected are the same answer: the DPO term of such a row is constant (its gradient is
    zero), so with `loss_type [..., "sft"]` the row teaches only the SFT term, the answer's NLL. This
    is SFT data mixed into DPO through TRL's combined loss."""
    n = max(1, round(fraction / (1 - fraction) * n_pairs)) if fraction > 0 else 0  # asked for: at least one
    rng = random.Random(seed)
    picked = [examples[i % len(examples)] for i in range(n)]
    rng.shuffle(picked)
    return [{"prompt": m[:-1], "chosen": [m[-1]], "rejected": [m[-1]]} for m in picked]


def sft_nll(model, tokenizer, examples: list[list[dict[str, str]]]) -> float:
    """Mean negative log-likelihood per answer token of the examples' assistant answers."""
    import torch

    total, tokens = 0.0, 0
    model.eval()
    for messages in examples:
        prompt = tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True, tokenize=True)
        full = tokenizer.apply_chat_template(messages, tokenize=True)
        prompt = prompt["input_ids"] if hasattr(prompt, "keys") else prompt
        full = full["input_ids"] if hasattr(full, "keys") else full
        ids = torch.tensor([full], device=model.device)
        labels = ids.clone()
        labels[0, : len(prompt)] = -100
        n = int((labels != -100).sum()) - 1  # the first label has no prediction (shifted)
        if n <= 0:
            continue
        with torch.no_grad():
            loss = model(input_ids=ids, labels=labels).loss
        total += float(loss) * n
        tokens += n
    return total / tokens if tokens else math.nan
