"""The audit's bias metrics, over the store (`prefcurate audit`) or over any preference dataset
(`prefcurate audit-dataset`)."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from prefcurate.bias import Pair, dataset_metrics, mean, metric
from prefcurate.config import AuditConfig
from prefcurate.errors import InputError
from prefcurate.features import DEFAULT_PHRASES, Phrases, compute_features
from prefcurate.gates import evaluate_gates
from prefcurate.prompts import read_rows
from prefcurate.store import Store

# Each score-shift probe joined to its pair: how far the perturbed rejected response's score moved,
# and whether it now beats the chosen one.
SHIFT_PROBE_SQL = """
SELECT j.overall - pr.rejected_score AS shift, (j.overall > pr.chosen_score)::DOUBLE AS flipped
FROM judgments j JOIN pairs pr ON pr.rejected_id = j.candidate_id AND pr.judge = j.judge AND pr.rubric_hash = j.rubric_hash
WHERE j.probe = ? AND j.status = 'ok' AND j.mode = 'pointwise'
ORDER BY j.judgment_id
"""
# The swap probe: a pair judged in both orders; flipped when the two verdicts differ.
SWAP_PROBE_SQL = """
SELECT (count(DISTINCT winner) > 1)::DOUBLE AS flipped
FROM judgments WHERE probe = 'swap' AND status = 'ok' AND mode = 'pairwise'
GROUP BY judge, rubric_hash, candidate_id, candidate_b_id, repeat_index
HAVING count(*) = 2
ORDER BY any_value(judgment_id)
"""


def probe_metrics(store: Store) -> dict:
    """n, mean score shift and flip rate per probe (with intervals); the null response's mean score."""
    out = {}
    for kind in ("opener_injection", "padding"):
        rows = store.query(SHIFT_PROBE_SQL, [kind])
        shift = metric("mean_shift", np.array([r["shift"] for r in rows]), mean)
        flip = metric("flip_rate", np.array([r["flipped"] for r in rows]), mean)
        out[kind] = {"n": len(rows), **_strip_n(shift), **_strip_n(flip)}
    flips = np.array([r["flipped"] for r in store.query(SWAP_PROBE_SQL)])
    out["swap"] = {"n": len(flips), "mean_shift": None, "mean_shift_ci": None, **_strip_n(metric("flip_rate", flips, mean))}
    scores = np.array([r["overall"] for r in store.query(
        "SELECT overall FROM judgments WHERE probe = 'null_response' AND status = 'ok' ORDER BY judgment_id")])
    out["null_response"] = {"n": len(scores), **_strip_n(metric("mean_score", scores, mean))}
    return out


def _strip_n(metric: dict) -> dict:
    return {k: v for k, v in metric.items() if not k.endswith("_n")}


def full_audit(store: Store, cfg: AuditConfig | None = None) -> dict:
    """The bias metrics, the probes and the gates: what `prefcurate audit --json` prints."""
    cfg = cfg or AuditConfig()
    metrics = store_metrics(store, cfg.phrases()) | {"probes": probe_metrics(store)}
    metrics["gates"], metrics["passed"], metrics["n_inconclusive"] = evaluate_gates(metrics, cfg.gates)
    return metrics


def store_metrics(store: Store, phrases: Phrases = DEFAULT_PHRASES) -> dict:
    """Length, opener and position bias of the stored pairs and judgments."""
    compute_features(store, phrases)
    pairs = [Pair(r["prompt_id"], r["chosen_text"], r["rejected_text"])
             for r in store.query("SELECT prompt_id, chosen_text, rejected_text FROM v_pairs ORDER BY pair_id")]
    groups: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for r in store.query("SELECT prompt_id, candidate_id, avg(overall) AS score, any_value(candidate_chars) AS chars "
                         "FROM v_judgments WHERE status = 'ok' AND mode = 'pointwise' GROUP BY prompt_id, candidate_id"):
        groups[r["prompt_id"]].append((r["score"], r["chars"]))
    first_won = [r["first"] for r in store.query(
        "SELECT (pair_order = 'ab' AND winner = 'a') OR (pair_order = 'ba' AND winner = 'b') AS first "
        "FROM judgments WHERE mode = 'pairwise' AND status = 'ok' AND winner <> 'tie' "
        "ORDER BY judgment_id")]
    return dataset_metrics(pairs, groups, first_won, phrases)


@dataclass
class Columns:
    """Where a dataset keeps its pairs: prompt/chosen/rejected columns, or two responses and a label."""

    prompt_col: str = "prompt"
    chosen_col: str = "chosen"
    rejected_col: str = "rejected"
    a_col: str | None = None
    b_col: str | None = None
    label_col: str | None = None
    a_wins: str = "0"
    b_wins: str = "1"
    tie: str | None = None

    @property
    def labelled(self) -> bool:
        return self.a_col is not None


def _text(value, path: str, where: int, col: str) -> str:
    """A response or prompt as text: a string, or the content of the last message of a list."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and isinstance(value[-1], dict) and isinstance(value[-1].get("content"), str):
        return value[-1]["content"]
    raise InputError(path, where, f"column `{col}` must be a string or a list of messages")


def read_dataset_pairs(path: str, cols: Columns, split: str = "train") -> tuple[list[Pair], int, int]:
    """(pairs, rows read, ties left out) from a JSONL, Parquet or datasets-loadable source."""
    if cols.labelled and not (cols.b_col and cols.label_col):
        raise InputError(path, None, "--a-col needs --b-col and --label-col too")
    rows = read_rows(path, split)
    if not rows:
        raise InputError(path, None, "no rows found")
    needed = [cols.prompt_col, cols.a_col, cols.b_col, cols.label_col] if cols.labelled else \
        [cols.prompt_col, cols.chosen_col, cols.rejected_col]
    pairs, ties = [], 0
    for where, row in rows:
        if not isinstance(row, dict):
            raise InputError(path, where, "each row must be an object")
        missing = [c for c in needed if c not in row]
        if missing:
            hint = ("map them with --a-col/--b-col/--label-col" if cols.labelled else
                    "map them with --prompt-col/--chosen-col/--rejected-col, or --a-col/--b-col/--label-col for "
                    "pairwise-labelled data")
            raise InputError(path, where, f"no column(s) {missing}; the row has {sorted(row)}", hint)
        group = json.dumps(row[cols.prompt_col], sort_keys=True, ensure_ascii=False)
        if not cols.labelled:
            pairs.append(Pair(group, _text(row[cols.chosen_col], path, where, cols.chosen_col),
                              _text(row[cols.rejected_col], path, where, cols.rejected_col)))
            continue
        label = str(row[cols.label_col])
        a = _text(row[cols.a_col], path, where, cols.a_col)
        b = _text(row[cols.b_col], path, where, cols.b_col)
        if label == cols.a_wins:
            pairs.append(Pair(group, a, b))
        elif label == cols.b_wins:
            pairs.append(Pair(group, b, a))
        elif cols.tie is not None and label == cols.tie:
            ties += 1
        else:
            known = ", ".join(v for v in (cols.a_wins, cols.b_wins, cols.tie) if v is not None)
            raise InputError(path, where, f"label {label!r} is none of {known}", "set --a-wins, --b-wins and --tie")
    return pairs, len(rows), ties


def dataset_audit(path: str, cols: Columns, split: str = "train", phrases: Phrases = DEFAULT_PHRASES) -> dict:
    pairs, n_rows, ties = read_dataset_pairs(path, cols, split)
    return {"source": path, "n_rows": n_rows, "n_ties": ties, **dataset_metrics(pairs, phrases=phrases)}
