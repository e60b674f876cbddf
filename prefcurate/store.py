"""The store: one DuckDB file holding every stage's rows, opened by path.

Schema changes are numbered SQL files in ``migrations/``, applied in order on open and
recorded in ``schema_migrations``. Writers insert with ``ON CONFLICT DO NOTHING`` on
content-derived ids, so a rerun adds nothing it already has.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from prefcurate.errors import StoreError

DEFAULT_DB = "data/prefcurate.duckdb"
READ_STATEMENTS = {"SELECT", "EXPLAIN", "PRAGMA", "SHOW", "DESCRIBE", "SUMMARIZE"}


def resolve_db_path(db: str | os.PathLike | None = None) -> Path:
    """``--db`` if given, else ``$PREFCURATE_DB``, else ``data/prefcurate.duckdb``."""
    return Path(db or os.environ.get("PREFCURATE_DB") or DEFAULT_DB)


def _migrations() -> list[tuple[int, str, str]]:
    files = sorted(f for f in resources.files("prefcurate.migrations").iterdir() if f.name.endswith(".sql"))
    return [(int(f.name.split("_", 1)[0]), f.name, f.read_text(encoding="utf-8")) for f in files]


def utc_now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _explain_open_error(path: Path, e: Exception) -> StoreError:
    text = str(e)
    if "lock" in text.lower():
        return StoreError(
            f"{path}: the store is in use by another prefcurate process; wait for it to finish "
            "or pass another --db"
        )
    if "not a valid DuckDB database" in text or "database file" in text.lower() or "Invalid Input Error" in text:
        return StoreError(f"{path}: not a DuckDB database; point --db (or PREFCURATE_DB) at a prefcurate store")
    return StoreError(f"{path}: cannot open the store: {text.splitlines()[0]}")


_HELD: dict[Path, list] = {}  # store -> [lock file descriptor, depth], for the locks this process holds
_HELD_GUARD = threading.Lock()


@contextmanager
def exclusive(path: str | os.PathLike | None = None) -> Iterator[None]:
    """Hold the store's lock file (``<store>.lock``) until the block ends; fail at once, naming the
    holder, when another process holds it. Re-entrant within a process, so `prefcurate run` holds it
    for the whole run while each of its tasks opens and closes the store."""
    key = resolve_db_path(path).resolve()
    with _HELD_GUARD:
        if key in _HELD:
            _HELD[key][1] += 1
            fd = None
        else:
            fd = os.open(f"{key}.lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 80, 0).decode(errors="replace").strip() or "unknown pid"
                os.close(fd)
                raise StoreError(f"{path or key}: in use by another prefcurate process ({holder}); wait for it to "
                                 "finish or pass another --db") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()}".encode(), 0)
            _HELD[key] = [fd, 1]
    try:
        yield
    finally:
        with _HELD_GUARD:
            _HELD[key][1] -= 1
            if _HELD[key][1] == 0:
                fd = _HELD.pop(key)[0]
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)


class Store:
    """An open store. Use as a context manager, or call ``close()``.

    A writable store holds the store's lock (see ``exclusive``) while open: DuckDB allows one writing
    process, and a second one fails at once with a message instead of waiting or corrupting anything."""

    def __init__(self, path: str | os.PathLike | None = None, read_only: bool = False):
        self.path = resolve_db_path(path)
        self.read_only = read_only
        self._depth = 0
        if read_only and not self.path.exists():
            raise StoreError(f"{self.path}: no store here yet; run `prefcurate run CONFIG` or pass --db")
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.con = duckdb.connect(str(self.path), read_only=read_only)
        except (duckdb.IOException, duckdb.InvalidInputException, duckdb.SerializationException) as e:
            raise _explain_open_error(self.path, e) from None
        self._lock = ExitStack()
        if not read_only:
            try:
                self._lock.enter_context(exclusive(self.path))
            except StoreError:
                self.con.close()
                raise
            self._migrate()

    # -- lifecycle -------------------------------------------------------------------------
    def close(self) -> None:
        self.con.close()
        self._lock.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def root(self) -> Path:
        """The folder beside the store file where snapshots live."""
        return self.path.parent

    def _migrate(self) -> None:
        self.con.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version INTEGER PRIMARY KEY, name VARCHAR, applied_at TIMESTAMP)"
        )
        done = {v for (v,) in self.con.execute("SELECT version FROM schema_migrations").fetchall()}
        for version, name, sql in _migrations():
            if version in done:
                continue
            with self.transaction():
                self.con.execute(sql)
                self.con.execute("INSERT INTO schema_migrations VALUES (?, ?, ?)", [version, name, utc_now()])

    # -- reading and writing ---------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All or nothing. Nested uses join the outermost transaction."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self.con.execute("BEGIN TRANSACTION")
        self._depth = 1
        try:
            yield
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        else:
            self.con.execute("COMMIT")
        finally:
            self._depth = 0

    def query(self, sql: str, params: Sequence[Any] | dict | None = None) -> list[dict[str, Any]]:
        """Run a statement and return its rows as dicts."""
        cur = self.con.execute(sql, params or [])
        cols = [d[0] for d in cur.description] if cur.description else []
        return [dict(zip(cols, row)) for row in cur.fetchall()]

    def columns(self, sql: str, params: Sequence[Any] | dict | None = None) -> dict[str, Any]:
        """Run a statement and return its columns as numpy arrays: for large results, where a dict
        per row would cost more than the query."""
        return self.con.execute(sql, params or []).fetchnumpy()

    def execute(self, sql: str, params: Sequence[Any] | dict | None = None) -> None:
        """Run a statement for its effect (DDL, UPDATE, INSERT ... SELECT)."""
        self.con.execute(sql, params or [])

    def scalar(self, sql: str, params: Sequence[Any] | dict | None = None) -> Any:
        rows = self.con.execute(sql, params or []).fetchall()
        return rows[0][0] if rows else None

    def insert(self, table: str, rows: Sequence[dict[str, Any]], replace_if: str | None = None,
               key: str | None = None) -> int:
        """Insert rows (dicts with the same keys), skipping ids already stored; return how many were new.

        ``replace_if`` (a condition on the stored row, with ``key`` its id column) overwrites stored
        rows that meet it instead, e.g. judgments that failed with a transient error. dict and list
        values are stored as JSON text.
        """
        if not rows:
            return 0
        cols = list(rows[0])
        batch = pa.table({c: [_to_cell(r[c]) for r in rows] for c in cols})
        col_list = ", ".join(cols)
        on_conflict = "DO NOTHING"
        if replace_if:
            updates = ", ".join(f"{c} = excluded.{c}" for c in cols if c != key)
            on_conflict = f"({key}) DO UPDATE SET {updates} WHERE {replace_if}"
        before = self.scalar(f"SELECT count(*) FROM {table}")
        self.con.register("_incoming", batch)
        try:
            self.con.execute(f"INSERT INTO {table} ({col_list}) SELECT {col_list} FROM _incoming ON CONFLICT {on_conflict}")
        finally:
            self.con.unregister("_incoming")
        return self.scalar(f"SELECT count(*) FROM {table}") - before

    def counts(self) -> dict[str, int]:
        return {r["stage"]: int(r["n"]) for r in self.query("SELECT stage, n FROM v_counts")}

    # -- the read-only SQL console ---------------------------------------------------------
    def read_query(self, sql: str) -> tuple[list[str], list[tuple]]:
        """Run one or more read statements; refuse anything that would write. Returns the last result."""
        try:
            statements = self.con.extract_statements(sql)
        except duckdb.Error as e:
            raise StoreError(f"SQL error: {str(e).splitlines()[0]}") from None
        if not statements:
            raise StoreError("no SQL statement given; pass a query such as \"select * from v_pairs limit 5\"")
        for st in statements:
            kind = st.type.name
            if kind not in READ_STATEMENTS:
                raise StoreError(f"`prefcurate sql` is read-only: {kind} statements are refused")
        cur = None
        try:
            for st in statements:
                cur = self.con.execute(st)
        except duckdb.Error as e:
            raise StoreError(f"SQL error: {str(e).splitlines()[0]}") from None
        cols = [d[0] for d in cur.description] if cur.description else []
        return cols, cur.fetchall() if cols else []


def new_run_id() -> str:
    """Time-ordered and unique: 20261130T052258-d368ce7a."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]


def _to_cell(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return value


@contextmanager
def open_store(db: str | os.PathLike | None = None, read_only: bool = False) -> Iterator[Store]:
    store = Store(db, read_only=read_only)
    try:
        yield store
    finally:
        store.close()
