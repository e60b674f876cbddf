"""A run's processes end with it, however it ends.

`prefcurate run` starts processes of its own: a temporary Prefect API, vLLM's engine core and its
workers. Killed with SIGKILL (an OOM kill, a lost session), the run could not stop them, and they
went on running, holding ports and gigabytes. ``processes_end_with_this_one()`` starts a small watchdog
process that notes, every POLL_S seconds, which processes this one has started since the watchdog
itself started; if this one dies before the block ends, the watchdog stops them (SIGTERM, then
SIGKILL). Processes that existed before the block are never touched.

    python -m prefcurate.watchdog PID    # what the block starts; it reads its stdin until PID is gone
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

POLL_S = 0.2
GRACE_S = 3.0
DONE = b"done"


@contextmanager
def processes_end_with_this_one() -> Iterator[None]:
    if not os.path.isdir("/proc"):  # not Linux: nothing to watch with
        yield
        return
    watchdog = subprocess.Popen([sys.executable, "-m", "prefcurate.watchdog", str(os.getpid())],
                                stdin=subprocess.PIPE, start_new_session=True)  # Ctrl-C is for the run, not for it
    try:
        yield
    finally:  # the run ends by itself: its processes are its own business again
        watchdog.stdin.write(DONE)
        watchdog.stdin.close()
        watchdog.wait()


def _processes() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, start time in clock ticks since boot) of every process, from /proc."""
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            out[int(name)] = (int(fields[1]), int(fields[19]))
    return out


def _below(pid: int, table: dict[int, tuple[int, int]]) -> set[tuple[int, int]]:
    """(pid, start time) of every process under ``pid``."""
    children: dict[int, list[int]] = {}
    for child, (parent, _) in table.items():
        children.setdefault(parent, []).append(child)
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add((child, table[child][1]))
            todo.append(child)
    return found


def watch(run: int) -> None:
    """Until ``run`` says it is done on stdin, note the processes it starts; if stdin closes without
    that, ``run`` died: stop them."""
    me = os.getpid()
    born = _processes()[me][1]  # the block began with this process: what the run starts from now on is newer
    started: set[tuple[int, int]] = set()
    message = b""
    while True:
        ready, _, _ = select.select([sys.stdin.buffer], [], [], POLL_S)
        if ready:
            chunk = os.read(sys.stdin.fileno(), 64)
            message += chunk
            if not chunk:
                break
        started |= {(pid, start) for pid, start in _below(run, _processes()) if start >= born and pid != me}
    if message.startswith(DONE):
        return
    _stop(started)


def _stop(processes: set[tuple[int, int]]) -> None:
    for sig, wait in ((signal.SIGTERM, GRACE_S), (signal.SIGKILL, 0)):
        table = _processes()
        alive = [pid for pid, start in processes if pid in table and table[pid][1] == start]  # not a reused pid
        for pid in alive:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while alive and time.monotonic() < deadline:
            time.sleep(0.1)
            table = _processes()
            alive = [pid for pid in alive if pid in table]


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    watch(int(sys.argv[1]))
