"""Judgments made elsewhere: `prefcurate import judgments FILE`, so the consistency audit can
measure any judge's swap consistency and repeat agreement.

Each JSONL line is one comparison of two responses, judged one or more times::

    {"prompt": "..." | [messages], "a": "...", "b": "...", "judge": "gpt-x",
     "verdicts": [{"order": "ab" | "ba", "winner": "a" | "b" | "tie", "repeat": 0}, ...]}

``order`` says which response was shown first; ``winner`` names the response, not the position.
The response that won more verdicts becomes the pair's chosen one (a line without a majority is
stored as judgments only, and counted as a tie). Judgments are stored in the pair's terms, like
the hybrid judge's own: the chosen response is ``a``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prefcurate.errors import InputError
from prefcurate.ids import canonical_json, content_id, judgment_id
from prefcurate.inputs import normalise_messages, prompt_id_for, read_jsonl
from prefcurate.stats import StageStats
from prefcurate.store import Store

RUBRIC = "imported"  # the rubric_hash of imported judgments: the rubric they used is not known here
STRATEGY = "imported"
KEYS = {"prompt", "a", "b", "judge", "verdicts", "generator"}
FLIP = {"ab": "ba", "ba": "ab"}


@dataclass
class JudgmentImportStats(StageStats):
    lines: int = 0
    verdicts: int = 0
    prompts_new: int = 0
    candidates_new: int = 0
    judgments_new: int = 0
    pairs_new: int = 0
    no_majority: int = 0  # lines whose verdicts favour neither response: no pair


def _verdicts(value, path: str, lineno: int) -> list[tuple[str, str, int]]:
    """[(order, winner, repeat)], repeats numbered per order where the line leaves them out."""
    if not isinstance(value, list) or not value:
        raise InputError(path, lineno, "`verdicts` must be a non-empty list of {order, winner, repeat}")
    out, seen, next_repeat = [], set(), {"ab": 0, "ba": 0}
    for k, v in enumerate(value):
        where = f"verdicts[{k}]"
        if not isinstance(v, dict) or set(v) - {"order", "winner", "repeat"}:
            raise InputError(path, lineno, f"{where} must be an object with order, winner and (optionally) repeat")
        order, winner, repeat = v.get("order"), v.get("winner"), v.get("repeat", next_repeat.get(v.get("order"), 0))
        if order not in ("ab", "ba"):
            raise InputError(path, lineno, f"{where}.order is {order!r}", "use \"ab\" (a shown first) or \"ba\"")
        if winner not in ("a", "b", "tie"):
            raise InputError(path, lineno, f"{where}.winner is {winner!r}", "use \"a\", \"b\" or \"tie\" (the response, not the position)")
        if not isinstance(repeat, int) or isinstance(repeat, bool) or repeat < 0:
            raise InputError(path, lineno, f"{where}.repeat is {repeat!r}", "use a whole number >= 0")
        if (order, repeat) in seen:
            raise InputError(path, lineno, f"{where}: a second verdict for order {order} repeat {repeat}",
                             "number the repeats")
        seen.add((order, repeat))
        next_repeat[order] = max(next_repeat[order], repeat + 1)
        out.append((order, winner, repeat))
    return out


def import_judgments(store: Store, path: str, run_id: str | None = None) -> JudgmentImportStats:
    """Validate every line, then store prompts, both responses, the verdicts and a pair per line."""
    rows = read_jsonl(Path(path)) if Path(path).is_file() else None
    if rows is None:
        raise InputError(path, None, "file not found")
    if not rows:
        raise InputError(path, None, "no judgments found", "add one JSON object per line")
    prompts, candidates, judgments, pairs = {}, {}, {}, {}  # by id: a repeated line adds nothing
    stats = JudgmentImportStats(lines=len(rows))
    for lineno, obj in rows:
        messages, generator, verdicts = _checked(obj, path, lineno)
        pid = prompt_id_for(messages)
        prompts[pid] = {"prompt_id": pid, "messages": canonical_json(messages), "prompt_text": messages[-1]["content"],
                        "source": str(path), "source_id": None, "metadata": None, "run_id": run_id}
        ids = {}
        for index, side in enumerate(("a", "b")):
            ids[side] = content_id("candidate", pid, generator, obj[side])
            candidates.setdefault(ids[side], {
                "candidate_id": ids[side], "prompt_id": pid, "sample_index": index, "text": obj[side],
                "finish_reason": "imported", "prompt_tokens": None, "completion_tokens": None, "latency_s": None,
                "generator": generator, "params": canonical_json({"imported": True}), "run_id": run_id})
        stats.verdicts += len(verdicts)
        pair = _pair_rows(pid, ids, obj["judge"], verdicts, run_id, judgments)
        if pair is None:
            stats.no_majority += 1
        else:
            pairs[pair["pair_id"]] = pair
    with store.transaction():
        stats.prompts_new = store.insert("prompts", list(prompts.values()))
        stats.candidates_new = store.insert("candidates", list(candidates.values()))
        stats.judgments_new = store.insert("judgments", list(judgments.values()))
        stats.pairs_new = store.insert("pairs", list(pairs.values()))
    return stats


def _checked(obj, path: str, lineno: int) -> tuple[list[dict[str, str]], str, list[tuple[str, str, int]]]:
    """(the prompt's messages, the generator, the verdicts) of a valid line, or an InputError naming
    what to fix."""
    if not isinstance(obj, dict):
        raise InputError(path, lineno, "each line must be a JSON object with prompt, a, b, judge and verdicts")
    if unknown := set(obj) - KEYS:
        raise InputError(path, lineno, f"unknown field(s) {sorted(unknown)}", f"allowed: {', '.join(sorted(KEYS))}")
    if missing := [k for k in ("prompt", "a", "b", "judge", "verdicts") if k not in obj]:
        raise InputError(path, lineno, f"missing {missing}")
    messages = normalise_messages(obj["prompt"], path, lineno, "prompt")
    for key in ("a", "b", "judge"):
        if not isinstance(obj[key], str) or not obj[key]:
            raise InputError(path, lineno, f"`{key}` must be a non-empty string")
    if obj["a"] == obj["b"]:
        raise InputError(path, lineno, "`a` and `b` are the same text", "a judgment compares two different responses")
    generator = obj.get("generator", "imported")
    if not isinstance(generator, str) or not generator:
        raise InputError(path, lineno, "`generator` must be a non-empty string")
    return messages, generator, _verdicts(obj["verdicts"], path, lineno)


def _pair_rows(pid: str, ids: dict[str, str], judge: str, verdicts: list[tuple[str, str, int]], run_id: str | None,
               judgments: dict[str, dict]) -> dict | None:
    """Add the line's judgments to ``judgments`` in the pair's terms; return its pair, or None when
    neither response won more verdicts."""
    wins = {side: sum(w == side for _, w, _ in verdicts) for side in ("a", "b")}
    first = "b" if wins["b"] > wins["a"] else "a"  # the chosen response when there is a majority
    second = "a" if first == "b" else "b"
    for order, winner, repeat in verdicts:
        # In the pair's terms: its chosen response is `a`, shown first in order ab.
        order = order if first == "a" else FLIP[order]
        winner = winner if first == "a" or winner == "tie" else {"a": "b", "b": "a"}[winner]
        jid = judgment_id(ids[first], judge, RUBRIC, "pairwise", ids[second], order, repeat)
        judgments[jid] = {
            "judgment_id": jid, "prompt_id": pid, "candidate_id": ids[first], "candidate_b_id": ids[second],
            "judge": judge, "rubric_name": None, "rubric_hash": RUBRIC, "mode": "pairwise", "pair_order": order,
            "repeat_index": repeat, "winner": winner, "status": "ok", "run_id": run_id}
    if wins["a"] == wins["b"]:
        return None
    share = {side: wins[side] / len(verdicts) for side in ("a", "b")}
    return {"pair_id": content_id("pair", pid, ids[first], ids[second], STRATEGY), "prompt_id": pid,
            "chosen_id": ids[first], "rejected_id": ids[second], "strategy": STRATEGY,
            "chosen_score": share[first], "rejected_score": share[second], "margin": share[first] - share[second],
            "judge": judge, "rubric_hash": RUBRIC, "run_id": run_id}
