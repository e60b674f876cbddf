"""The curation flow: prompts -> candidates -> judgments -> pairs (-> pairwise verification in
hybrid mode) -> probes of the judge -> the consistency audit (published as a Prefect markdown
artifact), each step a thin task over a core function. Runs without any Prefect server (`prefcurate run CONFIG` starts a temporary
local API); `prefect server start` gives the UI.

    prefcurate run configs/demo.yaml
    python -m prefcurate.flows.curate configs/demo.yaml
"""

from __future__ import annotations

import logging
import os

os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "prefcurate")  # the core's progress lines in flow logs

from prefcurate.judge.probes import run_probes  # noqa: E402
from prefcurate.judge.rubric import load_rubric  # noqa: E402
from prefcurate.judge.stage import judge, judge_name, verify_pairs  # noqa: E402
from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.artifacts import create_markdown_artifact  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402

from prefcurate.audit.report import markdown, verdict_line  # noqa: E402
from prefcurate.audit.stage import full_audit  # noqa: E402
from prefcurate.config import Config, load_config  # noqa: E402
from prefcurate.errors import PrefcurateError  # noqa: E402
from prefcurate.generate import generate  # noqa: E402
from prefcurate.pairs import build_pairs  # noqa: E402
from prefcurate.prompts import import_prompts, shard_prompt_ids  # noqa: E402
from prefcurate.store import exclusive, new_run_id, open_store  # noqa: E402


class _NoTraceback(logging.Filter):
    """A PrefcurateError is an expected stop whose message says what to do: Prefect logs that line
    when a task or the flow fails with one, not a traceback through our code and Prefect's."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], PrefcurateError):
            record.exc_info = record.exc_text = None
        return True


for _name in ("prefect.task_runs", "prefect.flow_runs"):
    logging.getLogger(_name).addFilter(_NoTraceback())


# Tasks take the store's path, never an open connection; each opens its own.
@task(name="prompts", cache_policy=NO_CACHE)
def prompts_task(db: str, cfg: Config, run_id: str, shard: tuple[int, int] | None) -> tuple[list[str] | None, dict]:
    if cfg.prompts.path is None:
        get_run_logger().info("prompts.path not set: using every prompt already in the store (of this shard)")
        if shard is None:
            return None, {}
        with open_store(db) as store:
            return shard_prompt_ids(store, shard), {}
    with open_store(db) as store:
        stats = import_prompts(store, cfg.prompts.path, run_id, cfg.prompts.split, cfg.prompts.limit, shard)
    get_run_logger().info("prompts: %s", stats.as_dict())
    return stats.prompt_ids, stats.as_dict()


def _stage(db: str, name: str, fn, *args) -> dict:
    """Open the store, run one core stage function on it, log and return its counts."""
    with open_store(db) as store:
        stats = fn(store, *args).as_dict()
    get_run_logger().info("%s: %s", name, stats)
    return stats


@task(name="generate", cache_policy=NO_CACHE)
def generate_task(db: str, cfg: Config, prompt_ids: list[str] | None, run_id: str, show_progress: bool) -> dict:
    if cfg.generator.backend == "none":
        get_run_logger().info("generator.backend is none: judging the candidates already stored")
        return {}
    return _stage(db, "generate", generate, cfg.generator, prompt_ids, run_id, show_progress)


@task(name="judge", cache_policy=NO_CACHE)
def judge_task(db: str, cfg: Config, prompt_ids: list[str] | None, run_id: str, show_progress: bool) -> dict:
    return _stage(db, "judge", judge, cfg.judge, prompt_ids, run_id, show_progress)


@task(name="pairs", cache_policy=NO_CACHE)
def pairs_task(db: str, cfg: Config, prompt_ids: list[str] | None, run_id: str) -> dict:
    rubric = load_rubric(cfg.judge.rubric)
    return _stage(db, "pairs", build_pairs, cfg.pairs, judge_name(cfg.judge), rubric.hash, prompt_ids, run_id,
                  cfg.judge.mode, rubric.opener_penalty, cfg.audit.phrases())


@task(name="verify", cache_policy=NO_CACHE)
def verify_task(db: str, cfg: Config, prompt_ids: list[str] | None, run_id: str, show_progress: bool) -> dict:
    return _stage(db, "verify", verify_pairs, cfg.judge, prompt_ids, run_id, show_progress)


@task(name="probe", cache_policy=NO_CACHE)
def probe_task(db: str, cfg: Config, run_id: str, show_progress: bool) -> dict:
    return _stage(db, "probes", run_probes, cfg, run_id, show_progress)


@task(name="audit", cache_policy=NO_CACHE)
def audit_task(db: str, cfg: Config, run_id: str) -> dict:
    with open_store(db) as store:
        metrics = full_audit(store, cfg.audit, run_id)
    get_run_logger().info("%s", verdict_line(metrics))
    create_markdown_artifact(markdown=markdown(metrics), key="prefcurate-audit",
                             description=f"prefcurate audit {metrics['audit_id']}")
    return {"audit_id": metrics["audit_id"], "passed": metrics["passed"], "pairs_fit": metrics["n_fit"],
            "pairs_flagged": metrics["n_pairs"] - metrics["n_fit"]}


@flow(name="prefcurate-curate")
def curate(config_path: str, db: str, show_progress: bool = False, shard: tuple[int, int] | None = None) -> dict:
    """Run every stage that has work to do (for the prompts of ``shard`` i of n, if given); return
    the run id and each stage's counts."""
    cfg = load_config(config_path)
    load_rubric(cfg.judge.rubric)  # a bad rubric fails before any model is loaded
    # One writer per store for the whole run, scheduled or by hand: another process fails at once
    # instead of writing between this run's tasks.
    with exclusive(db):
        return _stages(db, cfg, show_progress, shard)


def _stages(db: str, cfg: Config, show_progress: bool, shard: tuple[int, int] | None) -> dict:
    run_id = new_run_id()
    stats: dict[str, dict] = {}
    # The run is recorded once its prompts validated: a refused input file leaves the store as it was.
    prompt_ids, stats["prompts"] = prompts_task(db, cfg, run_id, shard)
    with open_store(db) as store:
        store.start_run("run", cfg.model_dump(mode="json") | ({"shard": list(shard)} if shard else {}), run_id)
    try:
        stats["generate"] = generate_task(db, cfg, prompt_ids, run_id, show_progress)
        stats["judge"] = judge_task(db, cfg, prompt_ids, run_id, show_progress)
        stats["pairs"] = pairs_task(db, cfg, prompt_ids, run_id)
        if cfg.judge.mode == "hybrid":
            stats["verify"] = verify_task(db, cfg, prompt_ids, run_id, show_progress)
        if cfg.probes.sample and cfg.probes.kinds:
            stats["probes"] = probe_task(db, cfg, run_id, show_progress)
        stats["audit"] = audit_task(db, cfg, run_id)
    except BaseException as e:
        with open_store(db) as store:
            store.finish_run(run_id, stats, error=f"{type(e).__name__}: {e}")
        raise
    with open_store(db) as store:
        store.finish_run(run_id, stats)
    return {"run_id": run_id, "stats": stats}


if __name__ == "__main__":
    import sys

    from prefcurate.store import resolve_db_path

    print(curate(sys.argv[1], str(resolve_db_path())))
