"""Keep a command's console for what prefcurate says: what the engines, Prefect, transformers and
Python's warnings write goes to a log file instead (`--verbose` leaves it on the terminal).

The redirect is of the process's stdout and stderr file descriptors, so the vLLM engine's worker
processes, which inherit them, write to the file too; prefcurate's console (tables, progress bars)
is pointed at a copy of the terminal taken first.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prefcurate.display import console


@contextmanager
def internal_logs_to(path: Path | None) -> Iterator[None]:
    """While inside, internal log lines go to ``path`` (appended); None: nothing changes."""
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    terminal = open(os.dup(saved[0]), "w", buffering=1, encoding="utf-8")
    log = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    console.file = terminal
    try:
        os.dup2(log, 1)
        os.dup2(log, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        console.file = None  # back to following sys.stdout
        for fd in (*saved, log):
            os.close(fd)
        terminal.close()
