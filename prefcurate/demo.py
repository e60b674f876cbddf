"""`make demo`: the whole pipeline offline on the tiny local model, as a user would run it:
build the model, run the flow (generate, judge, pair, verify, probe, audit), write the audit
report, snapshot, train.

Each step is the `prefcurate` command a user would type; at the end it prints where the store,
the snapshot and the adapter are, and the rows per stage.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from prefcurate.display import console, print_counts
from prefcurate.snapshot import get_snapshot
from prefcurate.store import open_store, resolve_db_path

CONFIG = "configs/demo.yaml"
MODEL = ".cache/tiny-model"


def _cli(*args: str, capture: bool = False) -> str:
    cmd = [sys.executable, "-m", "prefcurate.cli", *args]
    console.rule(" ".join(["prefcurate", *args]))
    proc = subprocess.run(cmd, stdout=subprocess.PIPE if capture else None, text=True)
    if proc.returncode != 0:
        sys.exit(proc.returncode)
    if capture:
        print(proc.stdout, end="")
    return proc.stdout or ""


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded: the model is built locally
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # offline: telemetry would only log errors
    db = resolve_db_path()
    if not (Path(MODEL) / "config.json").is_file():
        _cli("tiny-model", MODEL)
    _cli("run", CONFIG)
    _cli("audit", "--config", CONFIG, "--html", str(db.parent / "audit.html"))
    # A random tiny judge fails the gates, and `snapshot create` refuses such a judge's pairs. The
    # demo forces the snapshot to show the training step; the manifest records that it was forced.
    console.print("[bold]The tiny random judge fails the audit's gates; the demo snapshots with --force.[/]")
    snapshot_id = _cli("snapshot", "create", "--name", "demo", "--config", CONFIG, "--force",
                       capture=True).strip().splitlines()[-1]
    _cli("train", "dpo", "--snapshot", snapshot_id, "--config", "train/configs/dpo.yaml")

    with open_store(db) as store:
        counts = store.counts()
        snap = get_snapshot(store, snapshot_id)
        train = store.query("SELECT train_run_id, output_dir FROM v_lineage WHERE snapshot_id = ? "
                            "ORDER BY started_at DESC LIMIT 1", [snapshot_id])[0]
    console.rule("demo finished")
    console.print(f"store     {db}   (try: prefcurate sql \"select * from v_pairs limit 5\")")
    console.print(f"report    {db.parent / 'audit.html'}  (the audit with plots; opens offline)")
    console.print(f"snapshot  {snapshot_id}  {snap.path}  ({snap.n_pairs} of {counts['pairs']} pairs passed the "
                  f"audit's blocking flags: {snap.n_train} train, {snap.n_test} test)")
    console.print(f"adapter   {Path(train['output_dir']) / 'adapter'}  (train run {train['train_run_id']})")
    print_counts(counts)


if __name__ == "__main__":
    main()
