"""`prefcurate audit-dataset`: the judge-bias metrics of any preference dataset (JSONL, Parquet or a
datasets-loadable source), prompt/chosen/rejected or pairwise-labelled."""

from __future__ import annotations

import json
from dataclasses import dataclass

from prefcurate.audit.bias import Pair, PairColumns, dataset_metrics
from prefcurate.audit.features import DEFAULT_PHRASES, Phrases
from prefcurate.errors import InputError
from prefcurate.inputs import read_rows


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
    return {"source": path, "n_rows": n_rows, "n_ties": ties, **dataset_metrics(PairColumns.from_pairs(pairs, phrases))}
