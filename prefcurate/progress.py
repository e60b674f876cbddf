"""Progress for long stages: a rich bar on a terminal, log lines otherwise (e.g. in Prefect)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("prefcurate")


class _Tracker:
    def __init__(self, bar, task, total: int, description: str):
        self.bar, self.task, self.total, self.description, self.done = bar, task, total, description, 0

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.advance(self.task, n)
        else:
            log.info("%s: %d/%d", self.description, self.done, self.total)


@contextmanager
def track(total: int, description: str, show: bool) -> Iterator[_Tracker]:
    """``with track(n, "judging", show) as t: ... t.advance(k)``"""
    if not show or total == 0:
        yield _Tracker(None, None, total, description)
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from prefcurate.display import console

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  transient=False, console=console) as bar:
        yield _Tracker(bar, bar.add_task(description, total=total), total, description)
