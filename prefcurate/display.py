"""Terminal output shared by the CLI and the demo."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

console = Console()


def print_table(title: str, columns: list[str], rows: list[tuple]) -> None:
    table = Table(title=title, title_justify="left")
    for c in columns:
        table.add_column(c, overflow="fold")
    for r in rows:
        table.add_row(*("" if v is None else str(v) for v in r))
    console.print(table)


def print_counts(counts: dict[str, int]) -> None:
    print_table("Rows per stage", ["stage", "rows"], list(counts.items()))


def estimate_text(x: dict, signed: bool = True) -> str:
    """An ``{"estimate", "ci"}`` value (a drift, a clustered mean) as "+1.2 [+0.3, +2.1]"."""
    f = "{:+.3g}" if signed else "{:.3g}"
    return f"{f.format(x['estimate'])} [{f.format(x['ci'][0])}, {f.format(x['ci'][1])}]"


def metric_text(value, name: str = ""):
    """A metric as a table cell or log word: a number to 4 significant digits, or a rate or a drift as its
    estimate and interval (signed when metric ``name`` ends in _drift or _gain); anything else as it is."""
    if isinstance(value, dict) and "estimate" in value:
        return estimate_text(value, signed=name.endswith(("_drift", "_gain")))
    return f"{value:.4g}" if isinstance(value, float) else value
