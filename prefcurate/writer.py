"""Rows written as they come back: every ``batch`` rows, and whatever has come at least every
``interval_s`` seconds, so a run killed at any moment repays only the work that was in flight (plus
at most ``interval_s`` of answers). Writes happen on a thread of their own, so a slow insert never
stalls the calls in flight.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

FLUSH_INTERVAL_S = 0.5


class BufferedWriter:
    """``with BufferedWriter(write, batch) as w: w.add(rows)``; ``write(rows)`` is called on the writer
    thread. An error in ``write`` stops the writing and is raised in the caller's thread."""

    def __init__(self, write: Callable[[list], None], batch: int, interval_s: float = FLUSH_INTERVAL_S):
        self.write, self.batch, self.interval_s = write, batch, interval_s
        self.pending: list = []
        self.in_write = 0  # rows handed to write() and not yet written
        self.flush_wanted = self.closing = False
        self.error: BaseException | None = None
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._loop, name="store-writer", daemon=True)

    def __enter__(self) -> BufferedWriter:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        with self.cond:
            self.closing = True
            self.cond.notify()
        self.thread.join()
        if self.error is not None and exc[0] is None:
            raise self.error

    def add(self, rows: list) -> None:
        """Queue rows (from any thread)."""
        with self.cond:
            self.pending.extend(rows)
            if len(self.pending) >= self.batch:
                self.cond.notify()

    def flush(self) -> None:
        """Wait until everything queued so far is written (e.g. at the end of a chunk of work)."""
        with self.cond:
            self.flush_wanted = True
            self.cond.notify()
            self.cond.wait_for(lambda: not (self.pending or self.in_write))
        if self.error is not None:
            raise self.error

    def _loop(self) -> None:
        while True:
            with self.cond:
                self.cond.wait_for(lambda: self.closing or self.flush_wanted or len(self.pending) >= self.batch,
                                   self.interval_s)
                rows, self.pending, self.flush_wanted = self.pending, [], False
                self.in_write, last = len(rows), self.closing
            if rows and self.error is None:
                try:
                    self.write(rows)
                except BaseException as e:  # raised in the caller's thread by flush() or at the end
                    self.error = e
            with self.cond:
                self.in_write = 0
                self.cond.notify_all()
            if last:
                return
