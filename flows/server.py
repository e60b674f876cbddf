"""A temporary Prefect API for one `prefcurate run`, when no PREFECT_API_URL names a server.

Prefect would start one itself, but only once the flow is called, after every import and set-up
(about 7 s on 2 cores). This one starts first, while the run loads, so the two overlap. This module
imports nothing of Prefect until the server is launched. (If the run is killed, the watchdog of
prefcurate/watchdog.py stops the server with the run's other processes.)
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

STARTUP_TIMEOUT_S = 120


class PrefectAPI:
    """``with PrefectAPI() as api:`` starts the server (unless PREFECT_API_URL is set) and goes on at once;
    ``with api.serving():`` waits until it answers and points Prefect at it; the end of the first block
    stops it."""

    def __enter__(self) -> PrefectAPI:
        self.server, self.url = None, None
        if not _api_url_configured():
            port = _free_port()
            self.url = f"http://127.0.0.1:{port}/api"
            env = os.environ | {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
            self.server = subprocess.Popen(_uvicorn_command(port), env=env, stdout=subprocess.DEVNULL)
        return self

    def __exit__(self, *exc) -> None:
        if self.server is not None:
            self.server.terminate()
            try:
                self.server.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server.wait()

    @contextmanager
    def serving(self) -> Iterator[None]:
        from prefect.settings import PREFECT_API_URL, temporary_settings

        if self.server is None or PREFECT_API_URL.value():  # a server of the user's (or a test harness)
            yield
            return
        _wait_until_healthy(self.url, self.server)
        with temporary_settings(updates={PREFECT_API_URL: self.url}):
            try:
                yield
            finally:  # the logs and events Prefect still holds go before the server stops
                from prefect.events.worker import EventsWorker
                from prefect.logging.handlers import APILogWorker

                APILogWorker.drain_all(timeout=5)
                EventsWorker.drain_all(timeout=5)


def _api_url_configured() -> bool:
    """Whether Prefect is told of a server: by PREFECT_API_URL in the environment or the active profile
    (read here without importing Prefect), or by Prefect's settings when it is already imported."""
    if os.environ.get("PREFECT_API_URL"):
        return True
    if "prefect.settings" in sys.modules:
        return bool(sys.modules["prefect.settings"].PREFECT_API_URL.value())
    profiles = Path(os.environ.get("PREFECT_HOME", Path.home() / ".prefect")).expanduser() / "profiles.toml"
    import toml as toml_format  # Prefect's own dependency for its profiles (tomllib needs Python 3.11)

    try:
        toml = toml_format.loads(profiles.read_text())
    except (OSError, toml_format.TomlDecodeError):
        return False
    active = os.environ.get("PREFECT_PROFILE") or toml.get("active", "ephemeral")
    return bool(toml.get("profiles", {}).get(active, {}).get("PREFECT_API_URL"))


def _uvicorn_command(port: int) -> list[str]:
    prefect_dir = Path(importlib.util.find_spec("prefect").origin).parent  # found, not imported: that takes seconds
    return [sys.executable, "-m", "uvicorn", "--app-dir", str(prefect_dir.parent), "--factory",
            "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port),
            "--log-level", "error", "--lifespan", "on"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_healthy(url: str, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the temporary Prefect API exited with code {server.returncode}; start one with "
                               "`prefect server start` and set PREFECT_API_URL")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"the temporary Prefect API did not answer within {STARTUP_TIMEOUT_S} s")
