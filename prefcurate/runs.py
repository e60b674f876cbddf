"""The `runs` table: one row per command that changed the store, with the config it ran with and what
each of its stages did. Starting, finishing and marking a run failed happen here and nowhere else.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from prefcurate.context import RunContext
from prefcurate.store import Store, new_run_id, utc_now

START_SQL = """
INSERT INTO runs (run_id, command, config, config_path, config_hash, judge, rubric, arguments, started_at, status)
VALUES ($run_id, $command, $config, $config_path, $config_hash, $judge, $rubric, $arguments, $started_at, 'running')
"""
FINISH_SQL = "UPDATE runs SET finished_at = ?, status = ?, stats = ?, error = ? WHERE run_id = ?"
# The latest curation run that recorded a context: the one whose config a later command uses.
LATEST_SQL = """
SELECT run_id, config, config_path, config_hash, judge, rubric FROM runs
WHERE command = 'run' AND config_hash IS NOT NULL ORDER BY started_at DESC LIMIT 1
"""


@dataclass
class Run:
    """A run in progress: its id, and each stage's counts as they come in."""

    run_id: str
    stats: dict[str, dict] = field(default_factory=dict)


@contextmanager
def recorded_run(store: Store, command: str, ctx: RunContext | None = None, arguments: dict | None = None
                 ) -> Iterator[Run]:
    """Record ``command`` as running on ``store`` for the length of the block, then as ok, or as failed
    with the error, whatever the exception. Inside a transaction a failure rolls the row back with the
    rest, so an import refused for bad input leaves no trace."""
    run = Run(ctx.run_id if ctx else new_run_id())
    kept = ctx.record() if ctx else dict.fromkeys(("config", "config_path", "config_hash", "judge", "rubric"))
    store.execute(START_SQL, {"run_id": run.run_id, "command": command, "started_at": utc_now(),
                              "arguments": _json(arguments), **{k: _json(v) for k, v in kept.items()}})
    try:
        yield run
    except BaseException as e:
        store.execute(FINISH_SQL, [utc_now(), "failed", json.dumps(run.stats), f"{type(e).__name__}: {e}", run.run_id])
        raise
    store.execute(FINISH_SQL, [utc_now(), "ok", json.dumps(run.stats), None, run.run_id])


def _json(value):
    return json.dumps(value) if isinstance(value, (dict, list)) else value


def run_configs(store: Store, run_ids: list[str]) -> dict[str, dict]:
    """The configs the given runs recorded, by run id (runs without one are left out)."""
    rows = store.query("SELECT run_id, config FROM runs WHERE list_contains(?, run_id) AND config IS NOT NULL",
                       [sorted(set(filter(None, run_ids)))])
    return {r["run_id"]: json.loads(r["config"]) for r in rows}


def latest_context(store: Store) -> RunContext | None:
    """The context recorded by the store's latest `prefcurate run`, or None when there is none."""
    rows = store.query(LATEST_SQL)
    return RunContext.from_record(rows[0]) if rows else None
