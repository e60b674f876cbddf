"""The curation flow: one Prefect task per stage of prefcurate/stages.py, in order, each a thin
wrapper that opens the store and runs the stage. The audit's report is published as the Prefect
markdown artifact `prefcurate-audit`. Runs without any Prefect server (`prefcurate run` starts a
temporary local API); `prefect server start` gives the UI.

    prefcurate run configs/demo.yaml
    python -m prefcurate.flows.curate configs/demo.yaml
"""

from __future__ import annotations

import logging
import os
import time

os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "prefcurate")  # the core's progress lines in flow logs

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.artifacts import create_markdown_artifact  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402
from prefect.utilities.annotations import quote  # noqa: E402

from prefcurate.context import RunContext  # noqa: E402
from prefcurate.errors import PrefcurateError  # noqa: E402
from prefcurate.runs import recorded_run  # noqa: E402
from prefcurate.stages import STAGE, STAGES  # noqa: E402
from prefcurate.stats import StageStats  # noqa: E402
from prefcurate.store import open_store  # noqa: E402


class _NoTraceback(logging.Filter):
    """A PrefcurateError is an expected stop whose message says what to do: Prefect logs that line
    when a task or the flow fails with one, not a traceback through our code and Prefect's."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], PrefcurateError):
            record.exc_info = record.exc_text = None
        return True


for _name in ("prefect.task_runs", "prefect.flow_runs"):
    logging.getLogger(_name).addFilter(_NoTraceback())


# A task takes the store's path, never an open connection, and opens its own. The context is quoted:
# Prefect need not walk a run's prompt ids for futures.
@task(cache_policy=NO_CACHE)
def stage_task(name: str, db: str, ctx: RunContext) -> StageStats:
    with open_store(db) as store:
        stats = STAGE[name].run(store, ctx)
    get_run_logger().info("%s: %s", name, stats.as_dict())
    if report := stats.markdown():
        create_markdown_artifact(markdown=report, key=f"prefcurate-{name}", description=f"prefcurate {name}, run {ctx.run_id}")
    return stats


@flow(name="prefcurate-curate")
def curate(config: str | RunContext, db: str, shard: tuple[int, int] | None = None) -> dict:
    """Run every stage that has work to do; return the run id and each stage's counts. ``config``: a
    config file, resolved when the run starts (what a deployment passes, with ``shard``), or a context
    already resolved from one (what `prefcurate run` passes, having validated its input first)."""
    if isinstance(config, RunContext):
        if shard is not None:
            raise ValueError("pass the shard in the RunContext, not beside it")
        ctx = config
    else:
        ctx = RunContext.resolve(config, shard=shard)
    # The store stays open, and so locked, for the whole run, scheduled or by hand: another process
    # fails at once instead of writing between this run's tasks.
    with open_store(db) as store, recorded_run(store, "run", ctx) as run:
        for stage in STAGES:
            if reason := stage.skip(ctx):
                get_run_logger().info("%s: skipped, %s", stage.name, reason)
                continue
            began = time.perf_counter()
            stats = stage_task.with_options(name=stage.name)(stage.name, db, quote(ctx))
            run.stats[stage.name] = {**stats.as_dict(), "seconds": round(time.perf_counter() - began, 1)}
            if stage.name == "prompts":  # the later stages work on this run's prompts only
                ctx = ctx.scoped(stats.prompt_ids)
    return {"run_id": run.run_id, "stats": run.stats}


if __name__ == "__main__":
    import sys

    from prefcurate.store import resolve_db_path

    print(curate(sys.argv[1], str(resolve_db_path())))
