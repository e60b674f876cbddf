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


def answer_logps(model, tokenizer, examples: list[list[dict[str, str]]],
                 max_answer_tokens: int | None = None) -> list[tuple[float, int]]:
    """For each conversation, the log-probability of its last (assistant) message given the ones before,
    and that answer's token count; ``max_answer_tokens`` cuts long answers (their first tokens count)."""
    import torch

    out = []
    model.eval()
    for messages in examples:
        prompt = _ids(tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True, tokenize=True))
        answer = _ids(tokenizer.apply_chat_template(messages, tokenize=True))[len(prompt):][:max_answer_tokens]
        if not answer:
            out.append((0.0, 0))
            continue
        ids = torch.tensor([prompt + answer], device=model.device)
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, len(prompt) - 1:-1]
        logp = torch.log_softmax(logits.float(), dim=-1).gather(1, ids[0, len(prompt):, None]).sum()
        out.append((float(logp), len(answer)))
    return out


def _ids(encoded) -> list[int]:
    return list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)


def sft_nll(model, tokenizer, examples: list[list[dict[str, str]]]) -> float:
    """Mean negative log-likelihood per answer token of the examples' assistant answers."""
    logps = answer_logps(model, tokenizer, examples)
    tokens = sum(n for _, n in logps)
    return -sum(lp for lp, _ in logps) / tokens if tokens else math.nan
