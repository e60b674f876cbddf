"""The `prefcurate` command line: one verb per stage, each a thin wrapper over a library call.

This module is the composition root: it is the only part of the core that reaches into
flows/, judge/ and train/, and it does so inside the commands, so `prefcurate --help` stays fast.
"""

from __future__ import annotations

import functools
import json
import sys
from typing import Annotated

import typer

from prefcurate.display import console, metric_text, print_counts, print_table
from prefcurate.errors import PrefcurateError
from prefcurate.logfile import internal_logs_to

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Curate consistency-audited DPO preference data: generate, judge, pair, snapshot, train.")
import_app = typer.Typer(no_args_is_help=True, help="Import prompts or candidates made elsewhere.")
snapshot_app = typer.Typer(no_args_is_help=True, help="Freeze pairs into immutable snapshots; list, show, verify them.")
train_app = typer.Typer(no_args_is_help=True, help="Train on a snapshot.")
models_app = typer.Typer(no_args_is_help=True, help="Real models, prepared offline from packages on the registry.")
app.add_typer(import_app, name="import")
app.add_typer(models_app, name="models")
app.add_typer(snapshot_app, name="snapshot")
app.add_typer(train_app, name="train")

Db = Annotated[str | None, typer.Option("--db", help="Store file (default: $PREFCURATE_DB, else data/prefcurate.duckdb).")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Show the engines', Prefect's and the trainer's own log "
                                       "lines here instead of in the log file under the store's folder.")]
ConfigOption = Annotated[str | None, typer.Option(
    help="Run config YAML (default: the config recorded with the store's latest `prefcurate run`).")]


def errors_to_exit(fn):
    """Turn a PrefcurateError into one line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except PrefcurateError as e:
            typer.echo(f"Error: {e}", err=True)
            raise typer.Exit(e.exit_code) from None

    return wrapper


def _store_context(store, config: str | None, announce: bool = True):
    """The context a command on a filled store works with: ``--config`` if given, else the config
    recorded with the store's latest run, else the defaults; it says which."""
    from prefcurate.context import RunContext
    from prefcurate.runs import latest_context

    ctx = RunContext.resolve(config, read_prompts=False) if config else latest_context(store) or RunContext.without_rubric()
    if announce:
        console.print(f"config: {ctx.source}", soft_wrap=True, highlight=False)
    return ctx


@app.command()
@errors_to_exit
def run(config: Annotated[str, typer.Argument(help="Run config YAML, e.g. configs/demo.yaml.")], db: Db = None,
        quiet: Quiet = False, verbose: Verbose = False,
        shard: Annotated[str | None, typer.Option(
            help="i/n: only the prompts whose id hashes to shard i of n, into a store of its own "
                 "(default data/prefcurate.shard-i-of-n.duckdb); `prefcurate merge` joins the shards.")] = None) -> None:
    """Run the curation flow: prompts, generate, judge, pairs, verify, probes, audit (each does only what is missing)."""
    from prefcurate.flows.server import PrefectAPI
    from prefcurate.watchdog import processes_end_with_this_one

    # A temporary Prefect API (unless PREFECT_API_URL names one) starts while the rest loads.
    with processes_end_with_this_one(), PrefectAPI() as api:
        from prefcurate.context import RunContext
        from prefcurate.ids import parse_shard
        from prefcurate.store import open_store, resolve_db_path

        shard_of = parse_shard(shard) if shard else None
        # The config, its rubric and its prompts are read and validated here, before Prefect or a model starts.
        ctx = RunContext.resolve(config, shard=shard_of, show_progress=not quiet)
        path = resolve_db_path(db)
        if shard_of and db is None:
            path = path.with_name(f"{path.stem}.shard-{shard_of[0]}-of-{shard_of[1]}{path.suffix}")
        log = None if verbose else path.parent / "logs" / f"run-{ctx.run_id}.log"
        with internal_logs_to(log):
            from prefcurate.flows.curate import curate
            from prefcurate.generate.vllm_backend import shutdown_engines

            try:
                with api.serving():
                    result = curate(ctx, str(path))
            finally:
                shutdown_engines()
    rows = [(stage, s.pop("seconds"), ", ".join(f"{k}={round(v, 4) if isinstance(v, float) else v}" for k, v in s.items()))
            for stage, s in result["stats"].items()]
    print_table(f"Run {result['run_id']}", ["stage", "seconds", "this run"], rows)
    if log:
        console.print(f"log: {log}  (vLLM's and Prefect's own lines; --verbose shows them here)", highlight=False)
    with open_store(path) as store:
        print_counts(store.counts())


@app.command()
@errors_to_exit
def deploy(config: Annotated[str, typer.Argument(help="Run config YAML, e.g. configs/demo.yaml.")],
           cron: Annotated[str, typer.Option(help="When to run, as a cron expression (UTC).")] = "0 2 * * *",
           name: Annotated[str, typer.Option(help="Deployment name (the flow is prefcurate-curate).")] = "prefcurate",
           db: Db = None) -> None:
    """Serve the curation flow as a Prefect deployment on a schedule; each run does only what is new."""
    from pathlib import Path

    from prefcurate.context import RunContext
    from prefcurate.store import resolve_db_path

    RunContext.resolve(config)  # a bad config, rubric or prompts file fails now, not at 02:00
    from prefect.client.schemas.schedules import CronSchedule
    from pydantic import ValidationError

    try:
        CronSchedule(cron=cron)
    except ValidationError:
        raise PrefcurateError(f"--cron {cron!r} is not a cron expression; give five fields, "
                              "e.g. \"0 2 * * *\" for 02:00 every day") from None
    from prefcurate.flows.curate import curate

    parameters = {"config": str(Path(config).resolve()), "db": str(resolve_db_path(db).resolve())}
    console.print(f"serving prefcurate-curate/{name} on {cron!r} with {parameters}; Ctrl-C stops it", soft_wrap=True)
    # One run at a time: a run that is still going when the next is due makes that one wait.
    curate.serve(name=name, cron=cron, parameters=parameters, limit=1, print_starting_message=False)


@app.command()
@errors_to_exit
def merge(stores: Annotated[list[str], typer.Argument(help="Shard stores to merge, e.g. data/prefcurate.shard-*.duckdb.")],
          db: Db = None) -> None:
    """Merge shard stores into one (--db); merging the same shards again adds nothing."""
    from prefcurate.merge import merge_stores
    from prefcurate.runs import recorded_run
    from prefcurate.store import open_store

    with open_store(db) as store, store.transaction(), recorded_run(store, "merge", arguments={"stores": stores}) as run:
        run.stats["merge"] = added = merge_stores(store, stores)
        counts = store.counts()
    print_table("Merged", ["table", "new rows"], list(added.items()))
    print_counts(counts)


def _recorded_import(db: str | None, kind: str, file: str, importer) -> dict:
    """Run one importer and its `runs` row in one transaction: a refused file leaves no trace."""
    from prefcurate.runs import recorded_run
    from prefcurate.store import open_store

    with open_store(db) as store, store.transaction(), \
            recorded_run(store, f"import {kind}", arguments={"file": file}) as run:
        stats = run.stats[kind] = importer(store, file, run.run_id).as_dict()
    return stats


@import_app.command("prompts")
@errors_to_exit
def import_prompts_cmd(file: Annotated[str, typer.Argument(help="JSONL, Parquet or a datasets-loadable path.")],
                       db: Db = None) -> None:
    """Validate and store prompts; nothing is written unless every line is valid."""
    from prefcurate.prompts import import_prompts

    stats = _recorded_import(db, "prompts", file, import_prompts)
    console.print(f"prompts: read {stats['read']}, new {stats['new']}, duplicates {stats['duplicates']}")


@import_app.command("candidates")
@errors_to_exit
def import_candidates_cmd(file: Annotated[str, typer.Argument(help="JSONL: {prompt, candidates: [str], generator}.")],
                          db: Db = None) -> None:
    """Store candidates made elsewhere (and their prompts)."""
    from prefcurate.generate import import_candidates

    stats = _recorded_import(db, "candidates", file, import_candidates)
    console.print(f"candidates: lines {stats['lines']}, new prompts {stats['prompts_new']}, "
                  f"new candidates {stats['candidates_new']}")


@import_app.command("judgments")
@errors_to_exit
def import_judgments_cmd(file: Annotated[str, typer.Argument(
        help="JSONL: {prompt, a, b, judge, verdicts: [{order: ab|ba, winner: a|b|tie, repeat}]}.")],
        db: Db = None) -> None:
    """Store pairwise judgments made elsewhere, so `prefcurate audit` measures that judge's consistency."""
    from prefcurate.judgments import import_judgments

    stats = _recorded_import(db, "judgments", file, import_judgments)
    console.print(f"judgments: lines {stats['lines']}, verdicts {stats['verdicts']}, new judgments "
                  f"{stats['judgments_new']}, new pairs {stats['pairs_new']}, no majority {stats['no_majority']}")


@snapshot_app.command("create")
@errors_to_exit
def snapshot_create(name: Annotated[str | None, typer.Option(help="A name to remember it by.")] = None,
                    config: ConfigOption = None,
                    test_fraction: Annotated[float | None, typer.Option(
                        help="Share of prompts held out for test (default: the config's snapshot.test_fraction).")] = None,
                    force: Annotated[bool, typer.Option(
                        "--force", help="Snapshot even though an audit gate failed (recorded in the manifest).")] = False,
                    db: Db = None) -> None:
    """Audit the store, then freeze the pairs without a blocking flag; the snapshot id is the last line printed."""
    from prefcurate.runs import recorded_run
    from prefcurate.snapshot import create_snapshot
    from prefcurate.store import open_store

    if test_fraction is not None and not 0 <= test_fraction < 1:
        raise PrefcurateError(f"--test-fraction is {test_fraction}; give a value in [0, 1)")
    with open_store(db) as store, store.transaction():
        ctx = _store_context(store, config)
        arguments = {"name": name, "test_fraction": test_fraction, "force": force}
        with recorded_run(store, "snapshot create", ctx, arguments) as run:
            snap = create_snapshot(store, ctx, name, test_fraction, force)
            run.stats["snapshot"] = {"snapshot_id": snap.snapshot_id, "created": snap.created}
    state = "created" if snap.created else "already existed"
    audit = snap.manifest.get("audit")  # None for a snapshot frozen before audits existed
    if audit and audit["forced"]:
        console.print(f"[bold red]forced[/]: audit {audit['audit_id']} failed {', '.join(audit['failed_gates'])} "
                      "(recorded in the manifest)")
    left_out = f"; {audit['pairs_excluded']} of {audit['pairs_audited']} pairs left out for blocking flags" if audit else ""
    console.print(f"snapshot {state}: {snap.n_pairs} pairs ({snap.n_train} train, {snap.n_test} test) in {snap.path}"
                  f"{left_out}")
    print(snap.snapshot_id)


@snapshot_app.command("prompts")
@errors_to_exit
def snapshot_prompts(file: Annotated[str, typer.Argument(help="Prompts: JSONL, Parquet or a datasets-loadable path, "
                                                         "with reference answers in their metadata.")],
                     config: Annotated[str, typer.Option(help="Run config whose rubric (its checks: the rewards) and "
                                                         "generator (the policy) the snapshot keeps.")],
                     name: Annotated[str | None, typer.Option(help="A name to remember it by.")] = None,
                     test_split: Annotated[str | None, typer.Option(
                         help="The prompts whose metadata.split is this (e.g. heldout) are the test split.")] = None,
                     test_fraction: Annotated[float | None, typer.Option(
                         help="Without --test-split: share of prompts held out by hash (default: the config's "
                              "snapshot.test_fraction).")] = None,
                     db: Db = None) -> None:
    """Freeze prompts with their reference answers and the config's rubric, for `make train-grpo`; the
    snapshot id is the last line printed."""
    from prefcurate.context import RunContext
    from prefcurate.inputs import load_prompts
    from prefcurate.runs import recorded_run
    from prefcurate.snapshot import freeze_prompts
    from prefcurate.store import open_store

    if test_fraction is not None and not 0 <= test_fraction < 1:
        raise PrefcurateError(f"--test-fraction is {test_fraction}; give a value in [0, 1)")
    ctx = RunContext.resolve(config, read_prompts=False)
    prompts = load_prompts(file)  # every row validated before the store is opened
    with open_store(db) as store, store.transaction():
        arguments = {"file": file, "name": name, "test_split": test_split, "test_fraction": test_fraction}
        with recorded_run(store, "snapshot prompts", ctx, arguments) as run:
            snap = freeze_prompts(store, ctx, prompts, name, test_split, test_fraction)
            run.stats["snapshot"] = {"snapshot_id": snap.snapshot_id, "created": snap.created}
    console.print(f"snapshot {'created' if snap.created else 'already existed'}: {snap.n_pairs} prompts "
                  f"({snap.n_train} train, {snap.n_test} test; {snap.manifest['counts']['with_reference']} with a "
                  f"reference answer), rubric {snap.manifest['rubric']['name']} with checks "
                  f"{', '.join(c['name'] for c in snap.manifest['rubric']['checks']) or 'none'}, in {snap.path}",
                  highlight=False, soft_wrap=True)
    print(snap.snapshot_id)


@snapshot_app.command("list")
@errors_to_exit
def snapshot_list(db: Db = None) -> None:
    """List snapshots, newest first: pairs (for DPO), prompts (for GRPO) and best_of_n (SFT) ones."""
    from prefcurate.snapshot import list_snapshots
    from prefcurate.store import open_store

    with open_store(db) as store:
        snaps = list_snapshots(store)
    print_table("Snapshots", ["snapshot_id", "name", "kind", "rows", "train", "test", "created", "path"],
                 [(s.snapshot_id, s.name, s.manifest.get("kind", "pairs"), s.n_pairs, s.n_train, s.n_test,
                   s.manifest["created_at"], s.path) for s in snaps])


@snapshot_app.command("show")
@errors_to_exit
def snapshot_show(snapshot_id: Annotated[str, typer.Argument(help="Snapshot id.")], db: Db = None) -> None:
    """Print a snapshot's manifest."""
    from prefcurate.snapshot import get_snapshot
    from prefcurate.store import open_store

    with open_store(db) as store:
        snap = get_snapshot(store, snapshot_id)
    print(json.dumps(snap.manifest, indent=2, sort_keys=True))


@snapshot_app.command("verify")
@errors_to_exit
def snapshot_verify(snapshot_id: Annotated[str, typer.Argument(help="Snapshot id.")], db: Db = None) -> None:
    """Check a snapshot's files against the checksums in its manifest."""
    from prefcurate.snapshot import get_snapshot, verify_snapshot
    from prefcurate.store import open_store

    with open_store(db) as store:
        snap = get_snapshot(store, snapshot_id)
    manifest = verify_snapshot(snap.path)
    console.print(f"ok: {len(manifest['files'])} files match manifest.json in {snap.path}")


@snapshot_app.command("export")
@errors_to_exit
def snapshot_export(snapshot_id: Annotated[str, typer.Argument(help="Snapshot id.")],
                    to: Annotated[str, typer.Option("--to", help="Folder to write train, test and manifest.json into.")],
                    format: Annotated[str, typer.Option("--format", help="parquet or jsonl.")] = "parquet",
                    db: Db = None) -> None:
    """Verify a snapshot and copy it out, e.g. for datasets.load_dataset("parquet", data_files=...)."""
    from prefcurate.snapshot import export_snapshot, get_snapshot
    from prefcurate.store import open_store

    with open_store(db) as store:
        snap = get_snapshot(store, snapshot_id)
    for path in export_snapshot(snap, to, format):
        console.print(f"wrote {path}")


@train_app.command("dpo")
@errors_to_exit
def train_dpo_cmd(snapshot: Annotated[str, typer.Option(help="Snapshot id to train on.")],
                  config: Annotated[str, typer.Option(help="Training config YAML.")] = "train/configs/dpo.yaml",
                  db: Db = None, verbose: Verbose = False) -> None:
    """Train a DPO (LoRA) adapter on a snapshot; the same as `make train-dpo SNAPSHOT=<id>`. Exit code 3: the
    policy drifted (its sampled length or opener rate rose beyond eval.max_length_drift / max_opener_drift)."""
    from prefcurate.train.config import load_train_config
    from prefcurate.train.dpo import train_dpo

    _train(train_dpo, load_train_config(config), snapshot, db, verbose)


@train_app.command("grpo")
@errors_to_exit
def train_grpo_cmd(snapshot: Annotated[str, typer.Option(help="Prompts snapshot id (`prefcurate snapshot prompts`).")],
                   config: Annotated[str, typer.Option(help="GRPO config YAML.")] = "train/configs/grpo.yaml",
                   db: Db = None, verbose: Verbose = False) -> None:
    """Train a GRPO (LoRA) adapter on a prompts snapshot, rewarded by its rubric's checks; the same as `make
    train-grpo SNAPSHOT=<id>`. Prints the test prompts' pass rates before and after. Exit code 3: drifted."""
    from prefcurate.train.config import load_grpo_config
    from prefcurate.train.grpo import train_grpo

    _train(train_grpo, load_grpo_config(config), snapshot, db, verbose)


def _train(method, cfg, snapshot: str, db: str | None, verbose: bool) -> None:
    """Run a training method, then print its metrics, evaluations and rewards, and where the adapter is."""
    from prefcurate.store import open_store, resolve_db_path

    log = None if verbose else resolve_db_path(db).parent / "logs" / f"train-{snapshot}.log"
    with open_store(db) as store, internal_logs_to(log):
        result = method(store, snapshot, cfg)
    m = result.metrics
    print_table(f"Train run {result.train_run_id}", ["metric", "value"],
                [(k, metric_text(v)) for k, v in m.items() if k not in ("eval", "drifted", "rewards")])
    if m.get("rewards"):
        print_table("Rewards over training (mean at the first and last step, and over all)",
                    ["reward", "weight", "first", "last", "mean"],
                    [(k, v["weight"], metric_text(v["first"]), metric_text(v["last"]), metric_text(v["mean"])) for k, v in m["rewards"].items()])
    if m["eval"]:
        evaluations = list(dict.fromkeys(when for by in m["eval"].values() for when in by))
        print_table("Evaluations (rates and drifts with their 95% interval over the test prompts)",
                    ["metric", *evaluations], [(k, *(metric_text(v.get(when), k) for when in evaluations))
                                               for k, v in m["eval"].items()])
    console.print(f"adapter: {result.adapter_dir}" + (f"  (the policy of the evaluation {m['kept']})"
                                                      if m["status"] == "stopped" and m["kept"] else ""))
    if log:
        console.print(f"log: {log}  (the trainer's own lines; --verbose shows them here)", highlight=False)
    if m["status"] == "stopped":
        console.print(f"stopped at {m['stopped']}", highlight=False)
    if m["status"] == "drifted":  # the run is kept and recorded; the exit code tells a script it drifted
        typer.echo(f"drifted: {'; '.join(m['drifted'])}", err=True)
        raise typer.Exit(3)


@app.command()
@errors_to_exit
def probe(config: ConfigOption = None, db: Db = None, quiet: Quiet = False) -> None:
    """Re-judge perturbed candidates (opener, padding, swapped order, a content-free answer)."""
    from prefcurate.generate.vllm_backend import shutdown_engines
    from prefcurate.stages import run_stage
    from prefcurate.store import open_store
    from prefcurate.watchdog import processes_end_with_this_one

    with processes_end_with_this_one(), open_store(db) as store:
        ctx = _store_context(store, config).model_copy(update={"show_progress": not quiet})
        try:
            stats = run_stage(store, ctx, "probes", "probe")
        finally:
            shutdown_engines()
    console.print(f"probes: {stats.pairs} pairs sampled, {stats.judged} judgments, {stats.failed} failed")


@app.command()
@errors_to_exit
def audit(db: Db = None, as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as one JSON object.")] = False,
          config: ConfigOption = None,
          html: Annotated[str | None, typer.Option("--html", help="Also write a self-contained HTML report with plots here.")] = None) -> None:
    """The consistency audit: the judge's bias, probes and consistency, flags per pair, and the gates."""
    from pathlib import Path

    from prefcurate.audit.report import audit_tables, render_html, scaling, score_length_points, verdict_line
    from prefcurate.stages import run_stage
    from prefcurate.store import open_store

    with open_store(db) as store, store.transaction():
        ctx = _store_context(store, config, announce=not as_json)
        metrics = run_stage(store, ctx, "audit", "audit").metrics
        points, scaled = (score_length_points(store), scaling(store)) if html else ([], None)
    if html:
        Path(html).write_text(render_html(metrics, points, scaled), encoding="utf-8")
    if as_json:
        print(json.dumps(metrics | {"config_source": ctx.source}, indent=2))
        return
    for t in audit_tables(metrics):
        print_table(t.title, t.columns, t.rows)
    console.print(verdict_line(metrics), soft_wrap=True)
    if html:
        console.print(f"report: {html}", soft_wrap=True)


@app.command()
@errors_to_exit
def validate(full: Annotated[bool, typer.Option("--full", help="Repeat every scenario over --seeds seeds and report "
                                                 "interval coverage and false failures.")] = False,
             seeds: Annotated[int, typer.Option(min=1, help="Seeds per scenario with --full.")] = 200,
             prompts: Annotated[int, typer.Option(min=50, help="Prompts (one pair each) per simulated store.")] = 400,
             as_json: Annotated[bool, typer.Option("--json", help="Print the results as one JSON object.")] = False,
             quiet: Quiet = False) -> None:
    """Check the audit itself on simulated judges with planted biases: do its intervals cover the truth,
    do the right gates fail? Exit 1 when they do not."""
    from prefcurate.audit.validate import SCENARIOS, held, tables
    from prefcurate.audit.validate import validate as run_validation
    from prefcurate.progress import track

    n = seeds if full else 1
    with track(n * len(SCENARIOS), "auditing simulated judges", show=not quiet and not as_json) as t:
        summary = run_validation(n, prompts, on_step=t.advance)
    if as_json:
        print(json.dumps(summary, indent=2))
    else:
        for table in tables(summary):
            print_table(table.title, table.columns, table.rows)
    if not held(summary):
        raise typer.Exit(1)


# How a preference dataset keeps its pairs: the same flags for `audit-dataset` and `calibrate`.
PromptCol = Annotated[str, typer.Option(help="Column with the prompt.")]
ChosenCol = Annotated[str, typer.Option(help="Column with the preferred response.")]
RejectedCol = Annotated[str, typer.Option(help="Column with the other response.")]
ACol = Annotated[str | None, typer.Option(help="Pairwise-labelled data: the first response's column.")]
BCol = Annotated[str | None, typer.Option(help="Pairwise-labelled data: the second response's column.")]
LabelCol = Annotated[str | None, typer.Option(help="Pairwise-labelled data: the label's column.")]
AWins = Annotated[str, typer.Option(help="Label value meaning the first response is better.")]
BWins = Annotated[str, typer.Option(help="Label value meaning the second response is better.")]
Tie = Annotated[str | None, typer.Option(help="Label value meaning a tie.")]
Split = Annotated[str, typer.Option(help="Split of a datasets-loadable source.")]


@app.command("audit-dataset")
@errors_to_exit
def audit_dataset(
    path: Annotated[str, typer.Argument(help="JSONL, Parquet or a datasets-loadable path.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as one JSON object.")] = False,
    prompt_col: PromptCol = "prompt", chosen_col: ChosenCol = "chosen", rejected_col: RejectedCol = "rejected",
    a_col: ACol = None, b_col: BCol = None, label_col: LabelCol = None, a_wins: AWins = "0", b_wins: BWins = "1",
    tie: Tie = None, split: Split = "train",
    config: Annotated[str | None, typer.Option(help="Run config whose audit.openers and audit.closers to use.")] = None,
) -> None:
    """Measure length and opener bias in any preference dataset, e.g. one you did not make."""
    from prefcurate.audit.dataset import Columns, dataset_audit
    from prefcurate.config import AuditConfig, load_config

    phrases = (load_config(config).audit if config else AuditConfig()).phrases()
    metrics = dataset_audit(path, Columns(prompt_col, chosen_col, rejected_col, a_col, b_col, label_col, a_wins,
                                          b_wins, tie), split, phrases)
    if as_json:
        print(json.dumps(metrics, indent=2))
        return
    from prefcurate.audit.report import bias_table

    t = bias_table(metrics)
    print_table(t.title, t.columns, t.rows)


@app.command()
@errors_to_exit
def calibrate(
    config: Annotated[str, typer.Argument(help="Run config YAML whose judge to calibrate, e.g. configs/demo.yaml.")],
    labels: Annotated[str | None, typer.Option(help="Human-labelled pairs: JSONL, Parquet or a datasets-loadable path.")] = None,
    from_reviews: Annotated[bool, typer.Option("--from-reviews", help="Use the labels people made with `prefcurate "
                                               "review` instead (each pair's majority label).")] = False,
    prompt_col: PromptCol = "prompt", chosen_col: ChosenCol = "chosen", rejected_col: RejectedCol = "rejected",
    a_col: ACol = None, b_col: BCol = None, label_col: LabelCol = None, a_wins: AWins = "0", b_wins: BWins = "1",
    tie: Tie = None, split: Split = "train",
    yes: Annotated[bool, typer.Option("--yes", help="Make a paid judge's calls without asking.")] = False,
    max_usd: Annotated[float | None, typer.Option(min=0, help="Run a paid judge when its estimate is within this; "
                                                  "also the most this run may spend (Claude).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the calibration as one JSON object.")] = False,
    db: Db = None, quiet: Quiet = False, verbose: Verbose = False,
) -> None:
    """Judge human-labelled pairs in both orders and measure the judge's agreement with people."""
    from prefcurate.audit.dataset import Columns, read_labelled
    from prefcurate.audit.report import calibration_table
    from prefcurate.calibrate import check_spend, plan, run_calibration
    from prefcurate.context import RunContext
    from prefcurate.generate.vllm_backend import shutdown_engines
    from prefcurate.review import reviewed_pairs
    from prefcurate.runs import recorded_run
    from prefcurate.store import open_store
    from prefcurate.watchdog import processes_end_with_this_one

    if (labels is None) == (not from_reviews):
        raise PrefcurateError("give the labels: --labels FILE, or --from-reviews for those made with `prefcurate review`")
    ctx = RunContext.resolve(config, read_prompts=False, show_progress=not quiet and not as_json)
    if labels:  # a bad file is refused before the store is touched
        pairs, _ = read_labelled(labels, Columns(prompt_col, chosen_col, rejected_col, a_col, b_col, label_col, a_wins,
                                                 b_wins, tie), split)
    source = labels or "reviews"

    with processes_end_with_this_one(), open_store(db) as store:
        if from_reviews:
            pairs = reviewed_pairs(store)
            if not pairs:
                raise PrefcurateError("no labels to calibrate on: label pairs with `prefcurate review` first")
        planned = plan(store, ctx, pairs, max_usd, source)
        e = planned.estimate
        if not as_json:
            cost = f", about ${e['cost_usd']:.4f}" if e["cost_usd"] is not None else ""
            console.print(f"calibrate: {len(pairs)} labelled pairs, {e['calls']} judge calls to make "
                          f"(~{e['input_tokens']:,} input, ~{e['output_tokens']:,} output tokens{cost})", highlight=False)
        check_spend(e, yes, max_usd)
        # A local judge's engine writes its own log lines: to a file, so that --json prints only JSON.
        log = store.root / "logs" / f"calibrate-{ctx.run_id}.log" if ctx.config.judge.backend == "local" and not verbose else None
        try:
            with internal_logs_to(log), recorded_run(store, "calibrate", ctx, {"labels": source}):
                result = run_calibration(store, planned, source)
        finally:
            shutdown_engines()
    if as_json:
        print(json.dumps(result, indent=2))
        return
    t = calibration_table(result)
    print_table(t.title, t.columns, t.rows)
    console.print(f"{result['n_failed']} pairs without both verdicts; {result['calls']} calls this run "
                  f"(${result['cost_usd_this_run']:.4f}), ${result['cost_usd']:.4f} in all", highlight=False)


@app.command("best-of-n")
@errors_to_exit
def best_of_n(
    config: Annotated[str, typer.Argument(help="Run config whose judge's scores and rubric's checks to use.")],
    ns: Annotated[str, typer.Option("--ns", help="The Ns of the curve, comma-separated.")] = "1,2,4,8,16",
    split: Annotated[str | None, typer.Option(help="Only prompts whose metadata.split is this, e.g. heldout.")] = None,
    snapshot: Annotated[bool, typer.Option(help="Also freeze what is kept at the largest N as an SFT snapshot.")] = True,
    name: Annotated[str | None, typer.Option(help="A name for the snapshot.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the curve as one JSON object.")] = False,
    db: Db = None,
) -> None:
    """The judge's best of N candidates per prompt (and the majority answer): pass rate and score for each N,
    and an SFT snapshot of what is kept."""
    from prefcurate.audit.report import fmt, interval
    from prefcurate.best_of_n import candidates_by_prompt, curve, freeze_kept, save_curve
    from prefcurate.context import RunContext
    from prefcurate.runs import recorded_run
    from prefcurate.store import open_store

    try:
        sizes = tuple(sorted({int(x) for x in ns.split(",")}))
    except ValueError:
        raise PrefcurateError(f"--ns {ns!r}: give whole numbers separated by commas, e.g. 1,2,4,8,16") from None
    if not sizes or sizes[0] < 1:
        raise PrefcurateError(f"--ns {ns!r}: every N must be at least 1")
    ctx = RunContext.resolve(config, read_prompts=False)
    with open_store(db) as store:
        by_prompt = candidates_by_prompt(store, ctx, split)
        points = curve(by_prompt, sizes)
        n = max((p["n"] for p in points if p["prompts"]), default=None)
        with store.transaction(), recorded_run(store, "best-of-n", ctx, {"ns": list(sizes), "split": split}) as run:
            run.stats["best_of_n"] = {"points": save_curve(store, ctx, points, split)}
            frozen = freeze_kept(store, ctx, by_prompt, n, name) if snapshot and n else None
    snapshot_id = frozen.snapshot_id if frozen else None
    if as_json:
        print(json.dumps({"curve": points, "snapshot_id": snapshot_id, "judge": ctx.judge, "split": split}, indent=2))
        return
    print_table(f"Best of N by {ctx.judge}" + (f" ({split} prompts)" if split else ""),
                ["N", "prompts", "pass rate (judge's best)", "95% interval", "mean score", "pass rate (majority answer)"],
                [(p["n"], p["prompts"], fmt(p["pass_rate"]) or "n/a", interval(p["pass_rate_ci"]),
                  fmt(p["mean_score"]) or "n/a", fmt(p["majority_pass_rate"]) or "n/a") for p in points])
    if frozen:
        console.print(f"snapshot {'created' if frozen.created else 'already existed'}: {frozen.n_pairs} prompts' kept "
                      f"answers of {n} samples ({frozen.n_train} train, {frozen.n_test} test) at {frozen.path}",
                      highlight=False, soft_wrap=True)
        print(snapshot_id)


@app.command()
@errors_to_exit
def review(
    db: Db = None,
    sample: Annotated[int, typer.Option(min=1, help="How many pairs to put up for labelling.")] = 50,
    strategy: Annotated[str, typer.Option(help="stratified: in turn from the strata flagged or not by the latest audit "
                                          "times margin quartile; random: ignore the strata.")] = "stratified",
    seed: Annotated[int, typer.Option(help="Another seed, another sample.")] = 0,
    reviewer: Annotated[str, typer.Option(help="The reviewer's name (the page can change it).")] = "reviewer",
    host: Annotated[str, typer.Option(help="Address to serve on; anything but loopback lets others reach the page.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to serve on.")] = 8765,
    export: Annotated[str | None, typer.Option(help="Write every label as JSON lines to this file and exit.")] = None,
) -> None:
    """Serve a local page on which people label pairs; the judge's verdict shows after each label."""
    from prefcurate.review import export_labels, sample_pairs
    from prefcurate.store import open_store

    if export:
        with open_store(db, read_only=True) as store:
            console.print(f"{export_labels(store, export)} labels written to {export}", highlight=False)
        return
    if strategy not in ("stratified", "random"):
        raise PrefcurateError(f"--strategy {strategy!r} is none of stratified, random")
    import uvicorn

    from prefcurate.review_app import create_app, open_for_review

    if host not in ("127.0.0.1", "localhost", "::1"):
        console.print(f"warning: serving on {host}: anyone who can reach port {port} can read these pairs and label "
                      "them", style="yellow", highlight=False)
    with open_for_review(db) as store:
        pairs = sample_pairs(store, sample, strategy, seed)
        if not pairs:
            raise PrefcurateError("no pairs to review; run `prefcurate run CONFIG` first")
        console.print(f"reviewing {len(pairs)} pairs ({strategy} sample) at http://{host}:{port}/ ; Ctrl-C stops",
                      highlight=False)
        uvicorn.run(create_app(store, pairs, reviewer), host=host, port=port, log_level="warning")


@app.command()
@errors_to_exit
def sql(query: Annotated[str, typer.Argument(help="SQL; read statements only.")], db: Db = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print rows as JSON lines.")] = False) -> None:
    """Query the store (read-only), e.g. prefcurate sql "select * from v_pairs limit 5"."""
    from prefcurate.store import open_store

    with open_store(db, read_only=True) as store:
        columns, rows = store.read_query(query)
    if as_json:
        for r in rows:
            print(json.dumps(dict(zip(columns, r)), default=str, ensure_ascii=False))
    else:
        print_table("", columns, rows)


@models_app.command("prepare")
@errors_to_exit
def models_prepare(name: Annotated[str, typer.Argument(help="Model name, e.g. smollm2-135m-instruct (see `models list`).")],
                   directory: Annotated[str | None, typer.Option(
                       "--dir", help="Folder to write it to (default .cache/NAME).")] = None) -> None:
    """Convert a model file shipped in a registry package into a model folder, once (a second call says so)."""
    from prefcurate.models import prepare

    prepared = prepare(name, directory)
    state = "prepared" if prepared.created else "already prepared"
    source = prepared.provenance["source"]
    console.print(f"{name} {state} in {prepared.folder} (from {source['package']} {source['version']}, "
                  f"{source['licence']})", soft_wrap=True)


@models_app.command("list")
@errors_to_exit
def models_list() -> None:
    """The models `models prepare` knows, where each comes from, and whether it is prepared."""
    from prefcurate.models import MODELS, PROVENANCE, default_dir

    print_table("Models", ["name", "package", "licence", "what it is", "prepared in"],
                [(m.name, f"{m.package}=={m.version}", m.licence, m.origin,
                  default_dir(m.name) if (default_dir(m.name) / PROVENANCE).is_file() else "")
                 for m in MODELS.values()])


@app.command("tiny-model")
@errors_to_exit
def tiny_model(directory: Annotated[str, typer.Argument(help="Where to write it, e.g. .cache/tiny-model.")]) -> None:
    """Build the tiny offline model used by the demo and the tests (random weights, local tokenizer)."""
    from prefcurate.tinymodel import build_tiny_model

    console.print(f"tiny model written to {build_tiny_model(directory)}")


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
