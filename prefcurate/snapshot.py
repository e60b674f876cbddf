"""Stage 7, snapshot: the pairs that passed the audit, frozen as Parquet in TRL's conversational format.

Creating one runs the audit first: it refuses when a gate failed (unless forced, which the manifest
records) and takes only pairs without a blocking flag. A snapshot folder holds ``train.parquet``,
``test.parquet`` and ``manifest.json``. Its id is a hash of the pair ids and the split settings, so the
same pairs always give the same snapshot; files are written to a temporary folder and renamed into
place, so a half-written snapshot is never visible; every file's sha256 is in the manifest and
``verify_snapshot`` checks them.

Two more kinds share the freezing: an SFT snapshot (best-of-n's kept answers) and a prompts snapshot
(prompts with their reference answers, GRPO's), each saying its ``format`` and ``kind`` in its manifest.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

import prefcurate
from prefcurate.audit.stage import full_audit
from prefcurate.context import RunContext
from prefcurate.errors import GatesFailed, NotFoundError, PrefcurateError
from prefcurate.ids import content_id, sha256_file, unit_interval
from prefcurate.inputs import PromptFile
from prefcurate.runs import run_configs
from prefcurate.store import Store

SPLITS = ("train", "test")
PAIRS_FORMAT = "trl-conversational-explicit-prompt"  # what `snapshot create` writes and DPO reads

# The pairs the audit found fit: no flag of that audit blocks them.
PAIRS_SQL = """
SELECT v.pair_id, v.prompt_id, p.messages, p.source, v.chosen_text, v.rejected_text,
       v.chosen_score, v.rejected_score, v.margin, v.strategy, v.judge, v.rubric_hash, v.generator, v.run_id
FROM v_pairs v JOIN prompts p USING (prompt_id) SEMI JOIN fit_pairs($audit_id) f USING (pair_id)
ORDER BY v.pair_id
"""

ROW_SCHEMA = pa.schema([
    ("prompt", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
    ("chosen", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
    ("rejected", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
    ("pair_id", pa.string()),
    ("prompt_id", pa.string()),
    ("margin", pa.float64()),
    ("chosen_score", pa.float64()),
    ("rejected_score", pa.float64()),
])


@dataclass
class Snapshot:
    snapshot_id: str
    name: str | None
    path: Path
    n_pairs: int
    n_train: int
    n_test: int
    manifest: dict
    created: bool  # False when the same snapshot already existed


def in_test_split(prompt_id: str, test_fraction: float) -> bool:
    """By prompt hash, so all pairs of one prompt land in the same split."""
    return unit_interval("split:" + prompt_id) < test_fraction


def _trl_row(r: dict) -> dict:
    return {
        "prompt": json.loads(r["messages"]),
        "chosen": [{"role": "assistant", "content": r["chosen_text"]}],
        "rejected": [{"role": "assistant", "content": r["rejected_text"]}],
        "pair_id": r["pair_id"], "prompt_id": r["prompt_id"], "margin": r["margin"],
        "chosen_score": r["chosen_score"], "rejected_score": r["rejected_score"],
    }


def snapshots_dir(store: Store) -> Path:
    return store.root / "snapshots"


def create_snapshot(store: Store, ctx: RunContext, name: str | None = None, test_fraction: float | None = None,
                    force: bool = False) -> Snapshot:
    """Audit the store with the run's ``audit`` settings, then freeze the pairs without a blocking flag
    into a new snapshot, or return the identical one that exists. Refuses when a gate of the audit
    failed, unless ``force``. ``test_fraction``: the run's ``snapshot.test_fraction`` unless given."""
    test_fraction = ctx.config.snapshot.test_fraction if test_fraction is None else test_fraction
    report = full_audit(store, ctx)
    failed = [k for k, g in report["gates"].items() if g["status"] == "failed"]
    if failed and not force:
        described = "; ".join(f"{k} ({_describe(report['gates'][k])})" for k in failed)
        raise GatesFailed(f"audit {report['audit_id']} failed {len(failed)} gate(s): {described}. Fix the judge "
                          "(README: \"When a gate fails\"), or pass --force to snapshot anyway (recorded in the manifest)")
    rows = _fit_rows(store, report, ctx.config.audit.blocking_flags)
    splits = {s: [] for s in SPLITS}
    for r in rows:
        splits["test" if in_test_split(r["prompt_id"], test_fraction) else "train"].append(_trl_row(r))
    snapshot_id = content_id("snapshot", [r["pair_id"] for r in rows], test_fraction)
    manifest = _manifest(snapshot_id, name, rows, test_fraction, run_configs(store, [r["run_id"] for r in rows]))
    manifest["run_id"] = ctx.run_id  # the `snapshot create` run that froze it
    manifest["audit"] = {
        "audit_id": report["audit_id"], "passed": report["passed"], "forced": bool(failed), "failed_gates": failed,
        "blocking_flags": list(ctx.config.audit.blocking_flags), "flags": report["flags"],
        "pairs_audited": report["n_pairs"], "pairs_excluded": report["n_pairs"] - len(rows),
        "noise_estimate": report["noise_estimate"],
    }
    return freeze_rows(store, splits, manifest, ROW_SCHEMA, audit_id=report["audit_id"])


def _fit_rows(store: Store, report: dict, blocking: list[str]) -> list[dict]:
    """The pairs the audit found fit, or an error saying why there are none."""
    rows = store.query(PAIRS_SQL, {"audit_id": report["audit_id"]})
    if not rows:
        flagged = ", ".join(f"{k} {v}" for k, v in report["flags"].items() if v and k in blocking)
        raise PrefcurateError(
            f"no pairs to snapshot: {report['n_pairs']} stored, and every one has a blocking flag ({flagged or 'none'}); "
            "see `prefcurate sql \"select flag, detail from v_flags\"`, or run `prefcurate run CONFIG` first"
            if report["n_pairs"] else "no pairs to snapshot; run `prefcurate run CONFIG` first")
    return rows


def _manifest(snapshot_id: str, name: str | None, rows: list[dict], test_fraction: float, configs: dict) -> dict:
    """What a pairs snapshot holds and where it came from (its audit is added by the caller, its counts
    and files when it is frozen)."""
    return {
        "snapshot_id": snapshot_id,
        "name": name,
        "kind": "pairs",
        "format": PAIRS_FORMAT,
        "counts": {"pairs": len(rows)},
        "split": {"by": "sha256 of prompt_id", "test_fraction": test_fraction},
        "judges": sorted({r["judge"] for r in rows}),
        "rubric_hashes": sorted({r["rubric_hash"] for r in rows}),
        "generators": sorted({r["generator"] for r in rows}),
        "prompt_sources": sorted({r["source"] for r in rows if r["source"]}),
        "strategies": sorted({r["strategy"] for r in rows}),
        "run_configs": configs,
    }


def _freeze(folder: Path, splits: dict[str, list], manifest: dict, schema: pa.Schema = ROW_SCHEMA) -> Path:
    """Write the splits and the manifest (with each file's checksum) into a hidden folder, made read-only,
    then rename it into place: a snapshot is never visible half-written."""
    final = folder / manifest["snapshot_id"]
    # Folders left by a process that died mid-write; this one holds the store's lock, so none is in use.
    for stale in folder.glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = folder / f".tmp-{manifest['snapshot_id']}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        manifest["files"] = {}
        for split, items in splits.items():
            fname = f"{split}.parquet"
            pq.write_table(pa.Table.from_pylist(items, schema=schema), tmp / fname)
            manifest["files"][fname] = {"sha256": sha256_file(tmp / fname), "rows": len(items)}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        for f in tmp.iterdir():
            f.chmod(0o444)
        if final.exists():  # a folder left by a run that died before recording it
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _describe(gate: dict) -> str:
    if gate["value"] is None:
        return gate.get("how") or "nothing was measured"
    ci = f" [{gate['ci'][0]:.3f}, {gate['ci'][1]:.3f}]" if gate["ci"] else ""
    bounds = ", ".join(f"{k} {v}" for k, v in gate["threshold"].items() if v is not None)
    q = f", q={gate['q']:.2g}" if gate.get("q") is not None else ""
    return f"{gate['value']:.3f}{ci}{q}, allowed {bounds}"


# An SFT snapshot (best-of-n's kept answers): TRL's conversational format, one conversation per prompt.
SFT_FORMAT = "trl-conversational-messages"
SFT_SCHEMA = pa.schema([
    ("messages", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
    ("prompt_id", pa.string()),
    ("candidate_id", pa.string()),
    ("score", pa.float64()),
])


def freeze_sft(store: Store, rows: list[dict], manifest: dict) -> Snapshot:
    """Freeze conversations ({messages, prompt_id, candidate_id, score}) as an SFT snapshot, split by prompt
    hash like every snapshot, or return the identical one that exists. ``manifest`` says what they are;
    its id, counts, split and format are added here."""
    test_fraction = manifest["split"]["test_fraction"]
    splits = {s: [r for r in rows if in_test_split(r["prompt_id"], test_fraction) == (s == "test")] for s in SPLITS}
    return freeze_rows(store, splits, manifest | {"format": SFT_FORMAT}, SFT_SCHEMA)


def freeze_rows(store: Store, splits: dict[str, list[dict]], manifest: dict, schema: pa.Schema,
                audit_id: str | None = None) -> Snapshot:
    """Freeze ``splits`` (train and test rows of ``schema``) with ``manifest`` (its id, what the rows are)
    as a snapshot and record it, or return the identical one that exists. Adds the creation time, the
    version and the counts to the manifest."""
    existing = store.query("SELECT * FROM snapshots WHERE snapshot_id = ?", [manifest["snapshot_id"]])
    if existing and Path(existing[0]["path"]).is_dir():
        return _from_row(existing[0], created=False)
    rows = splits["train"] + splits["test"]
    manifest |= {"created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                 "prefcurate_version": prefcurate.__version__,
                 "counts": {"rows": len(rows), "train": len(splits["train"]), "test": len(splits["test"]),
                            "prompts": len({r["prompt_id"] for r in rows})} | manifest.get("counts", {})}
    path = _freeze(snapshots_dir(store), splits, manifest, schema)
    counts = manifest["counts"]
    store.insert("snapshots", [{"snapshot_id": manifest["snapshot_id"], "name": manifest.get("name"), "path": str(path),
                                "n_pairs": counts["rows"], "n_train": counts["train"], "n_test": counts["test"],
                                "manifest": manifest, "audit_id": audit_id, "run_id": manifest.get("run_id")}])
    return Snapshot(manifest["snapshot_id"], manifest.get("name"), path, counts["rows"], counts["train"],
                    counts["test"], manifest, True)


def _from_row(row: dict, created: bool = False) -> Snapshot:
    return Snapshot(row["snapshot_id"], row["name"], Path(row["path"]), row["n_pairs"], row["n_train"],
                    row["n_test"], json.loads(row["manifest"]), created)


def get_snapshot(store: Store, snapshot_id: str) -> Snapshot:
    rows = store.query("SELECT * FROM snapshots WHERE snapshot_id = ?", [snapshot_id])
    if not rows:
        raise NotFoundError(f"snapshot {snapshot_id!r} not found; `prefcurate snapshot list` shows the ids")
    return _from_row(rows[0])


def list_snapshots(store: Store) -> list[Snapshot]:
    return [_from_row(r) for r in store.query("SELECT * FROM snapshots ORDER BY created_at DESC")]


def verify_snapshot(path: str | Path) -> dict:
    """Check every file against the manifest's sha256; return the manifest, or raise naming the file."""
    path = Path(path)
    manifest_path = path / "manifest.json"
    if not manifest_path.is_file():
        raise NotFoundError(f"{path}: no manifest.json here; is this a snapshot folder?")
    manifest = json.loads(manifest_path.read_text())
    for fname, meta in manifest["files"].items():
        f = path / fname
        if not f.is_file():
            raise PrefcurateError(f"snapshot {manifest['snapshot_id']}: {fname} is missing; recreate the snapshot")
        if sha256_file(f) != meta["sha256"]:
            raise PrefcurateError(
                f"snapshot {manifest['snapshot_id']}: {fname} does not match its checksum in manifest.json; "
                "the snapshot was modified after it was frozen: recreate it with `prefcurate snapshot create`"
            )
    return manifest


EXPORT_FORMATS = ("parquet", "jsonl")


def export_snapshot(snapshot: Snapshot, to: str | Path, fmt: str = "parquet") -> list[Path]:
    """Verify a snapshot, then copy its splits (as Parquet or JSONL) and its manifest into ``to``."""
    if fmt not in EXPORT_FORMATS:
        raise PrefcurateError(f"--format {fmt!r}: use one of {', '.join(EXPORT_FORMATS)}")
    verify_snapshot(snapshot.path)
    to = Path(to)
    targets = [to / f"{split}.{fmt}" for split in SPLITS] + [to / "manifest.json"]
    clash = [str(t) for t in targets if t.exists()]
    if clash:
        raise PrefcurateError(f"{clash[0]} already exists; remove it or export --to another folder")
    to.mkdir(parents=True, exist_ok=True)
    for split, target in zip(SPLITS, targets):
        source = snapshot.path / f"{split}.parquet"
        if fmt == "parquet":
            shutil.copyfile(source, target)
        else:
            with open(target, "w", encoding="utf-8") as f:
                for row in pq.read_table(source).to_pylist():
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
    shutil.copyfile(snapshot.path / "manifest.json", targets[-1])
    return targets


# A prompts snapshot (GRPO's): each prompt with its reference answer; the manifest holds the rubric, whose
# checks are the rewards, and the generator, the policy to train.
PROMPTS_FORMAT = "trl-conversational-prompt-only"
PROMPTS_SCHEMA = pa.schema([
    ("prompt", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
    ("prompt_id", pa.string()),
    ("reference", pa.string()),
])


def freeze_prompts(store: Store, ctx: RunContext, file: PromptFile, name: str | None = None,
                   test_split: str | None = None, test_fraction: float | None = None) -> Snapshot:
    """Store the prompts of ``file`` and freeze them with their reference answers (the rubric's
    ``reference_key`` in their metadata) as a prompts snapshot, or return the identical one that exists.
    The test split: the prompts whose metadata ``split`` is ``test_split``, else a ``test_fraction`` by
    prompt hash (default: the run's ``snapshot.test_fraction``)."""
    from prefcurate.prompts import store_prompts

    rubric = ctx.require_rubric()
    test_fraction = ctx.config.snapshot.test_fraction if test_fraction is None else test_fraction
    store_prompts(store, file, ctx.run_id)
    splits = {s: [] for s in SPLITS}
    for p in file.prompts:
        test = (str((p.metadata or {}).get("split")) == test_split if test_split is not None
                else in_test_split(p.prompt_id, test_fraction))
        splits["test" if test else "train"].append({"prompt": p.messages, "prompt_id": p.prompt_id,
                                                    "reference": rubric.reference_in(p.metadata)})
    if not splits["train"]:
        raise PrefcurateError(f"{file.source}: no prompt is left for the train split"
                              + (f" (every one has split {test_split!r})" if test_split else "; lower --test-fraction"))
    split = ({"by": "metadata split", "test_split": test_split} if test_split is not None
             else {"by": "sha256 of prompt_id", "test_fraction": test_fraction})
    gen, frozen_rubric = ctx.config.generator, rubric.model_dump(mode="json")
    manifest = {
        "snapshot_id": content_id("snapshot", "prompts", sorted(p.prompt_id for p in file.prompts), split, frozen_rubric),
        "name": name, "kind": "prompts", "format": PROMPTS_FORMAT, "split": split,
        "counts": {"with_reference": sum(r["reference"] is not None for rs in splits.values() for r in rs)},
        "rubric": frozen_rubric, "rubric_hashes": [rubric.hash], "judges": [ctx.judge],
        "generators": [gen.identity] if gen.backend != "none" else [],
        "prompt_sources": [file.source], "run_id": ctx.run_id, "run_configs": run_configs(store, [ctx.run_id]),
    }
    return freeze_rows(store, splits, manifest, PROMPTS_SCHEMA)
