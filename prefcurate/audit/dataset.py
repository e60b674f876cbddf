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


@dataclass(frozen=True)
class LabelledPair:
    """One row of a preference dataset: the prompt as given, two responses, and which one people preferred."""

    prompt: object  # a string or a list of messages, as in the file
    a: str
    b: str
    label: str  # "a", "b" or "tie"
    where: int  # the row's line or index in its source


def read_labelled(path: str, cols: Columns, split: str = "train") -> tuple[list[LabelledPair], int]:
    """(the rows as labelled pairs, rows read) from a JSONL, Parquet or datasets-loadable source; in
    prompt/chosen/rejected data a is the chosen response."""
    if cols.labelled and not (cols.b_col and cols.label_col):
        raise InputError(path, None, "--a-col needs --b-col and --label-col too")
    rows = read_rows(path, split)
    if not rows:
        raise InputError(path, None, "no rows found")
    needed = [cols.prompt_col, cols.a_col, cols.b_col, cols.label_col] if cols.labelled else \
        [cols.prompt_col, cols.chosen_col, cols.rejected_col]
    out = []
    for where, row in rows:
        if not isinstance(row, dict):
            raise InputError(path, where, "each row must be an object")
        missing = [c for c in needed if c not in row]
        if missing:
            hint = ("map them with --a-col/--b-col/--label-col" if cols.labelled else
                    "map them with --prompt-col/--chosen-col/--rejected-col, or --a-col/--b-col/--label-col for "
                    "pairwise-labelled data")
            raise InputError(path, where, f"no column(s) {missing}; the row has {sorted(row)}", hint)
        a_col, b_col = (cols.a_col, cols.b_col) if cols.labelled else (cols.chosen_col, cols.rejected_col)
        a, b = _text(row[a_col], path, where, a_col), _text(row[b_col], path, where, b_col)
        out.append(LabelledPair(row[cols.prompt_col], a, b, _label(row, cols, path, where) if cols.labelled else "a",
                                where))
    return out, len(rows)


def _label(row: dict, cols: Columns, path: str, where: int) -> str:
    label = str(row[cols.label_col])
    if label == cols.a_wins:
        return "a"
    if label == cols.b_wins:
        return "b"
    if cols.tie is not None and label == cols.tie:
        return "tie"
    known = ", ".join(v for v in (cols.a_wins, cols.b_wins, cols.tie) if v is not None)
    raise InputError(path, where, f"label {label!r} is none of {known}", "set --a-wins, --b-wins and --tie")


def read_dataset_pairs(path: str, cols: Columns, split: str = "train") -> tuple[list[Pair], int, int]:
    """(pairs, rows read, ties left out) from a JSONL, Parquet or datasets-loadable source."""
    rows, n_rows = read_labelled(path, cols, split)
    pairs = [Pair(json.dumps(r.prompt, sort_keys=True, ensure_ascii=False), *((r.a, r.b) if r.label == "a" else (r.b, r.a)))
             for r in rows if r.label != "tie"]
    return pairs, n_rows, len(rows) - len(pairs)


def dataset_audit(path: str, cols: Columns, split: str = "train", phrases: Phrases = DEFAULT_PHRASES) -> dict:
    pairs, n_rows, ties = read_dataset_pairs(path, cols, split)
    return {"source": path, "n_rows": n_rows, "n_ties": ties, **dataset_metrics(PairColumns.from_pairs(pairs, phrases))}
