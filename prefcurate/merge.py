"""`prefcurate merge`: shard stores (from `prefcurate run CONFIG --shard i/n`) joined into one.

Every row's id derives from its content, so merging is an insert that skips ids already present:
the same shards merged twice, or in another order, give the same store. Audits, snapshots and
training runs are not merged: they describe a shard's files and flags; audit and snapshot the
merged store instead.
"""

from __future__ import annotations

from pathlib import Path

from prefcurate.errors import NotFoundError, StoreError
from prefcurate.store import Store

# In dependency order; each table's rows are identified by its primary key.
TABLES = ("runs", "prompts", "candidates", "candidate_features", "judgments", "judge_batches",
          "judge_batch_requests", "pairs", "skips")


def merge_stores(store: Store, paths: list[str]) -> dict[str, int]:
    """Copy every row of ``TABLES`` from each store in ``paths`` that ``store`` lacks; return the new rows per table."""
    added = dict.fromkeys(TABLES, 0)
    target = store.path.resolve()
    for path in paths:
        if not Path(path).is_file():
            raise NotFoundError(f"{path}: no store here; pass the shard stores `prefcurate run --shard` wrote")
        if Path(path).resolve() == target:
            raise StoreError(f"{path} is the store being merged into; pass --db another file")
        with Store(path):  # brings an older shard's schema up to this version first
            pass
        store.execute("ATTACH ? AS shard (READ_ONLY)", [str(path)])
        try:
            for table in TABLES:
                columns = ", ".join(r["column_name"] for r in store.query(
                    "SELECT column_name FROM duckdb_columns() WHERE database_name = current_database() "
                    "AND table_name = ? ORDER BY column_index", [table]))
                before = store.scalar(f"SELECT count(*) FROM {table}")
                store.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM shard.{table} ON CONFLICT DO NOTHING")
                added[table] += store.scalar(f"SELECT count(*) FROM {table}") - before
        finally:
            store.execute("DETACH shard")
    return added
