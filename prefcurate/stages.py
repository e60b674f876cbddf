"""The stages of a curation run, in order, and the one contract they share.

Every stage is a module with ``run(store, ctx) -> StageStats``: it reads what it needs from the store
and the run context (prefcurate/context.py), does only what is missing, and returns its counts.
This list drives the Prefect flow (one task per stage), the commands that run one stage (`prefcurate
probe`, `prefcurate audit`) and the run bookkeeping (prefcurate/runs.py). A stage's module is
imported when the stage runs, so a run loads only the backends its config uses.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from prefcurate.context import RunContext
from prefcurate.runs import recorded_run
from prefcurate.stats import StageStats
from prefcurate.store import Store


@dataclass(frozen=True)
class Stage:
    name: str
    module: str  # holds run(store, ctx) -> StageStats
    skip: Callable[[RunContext], str | None] = lambda ctx: None  # why this run's config has no work for it

    def run(self, store: Store, ctx: RunContext) -> StageStats:
        return importlib.import_module(self.module).run(store, ctx)


STAGES: tuple[Stage, ...] = (
    Stage("prompts", "prefcurate.prompts"),
    Stage("generate", "prefcurate.generate",
          lambda ctx: "generator.backend is none: the candidates already stored are judged"
          if ctx.config.generator.backend == "none" else None),
    Stage("checks", "prefcurate.checks",
          lambda ctx: None if ctx.rubric and ctx.rubric.checks else "the rubric lists no checks"),
    Stage("judge", "prefcurate.judge.stage"),
    Stage("pairs", "prefcurate.pairs"),
    Stage("verify", "prefcurate.judge.verify",
          lambda ctx: None if ctx.config.judge.mode == "hybrid" else f"judge.mode is {ctx.config.judge.mode}, not hybrid"),
    Stage("probes", "prefcurate.judge.probes",
          lambda ctx: None if ctx.config.probes.sample and ctx.config.probes.kinds else "probes.sample is 0 or no kinds"),
    Stage("audit", "prefcurate.audit.stage"),
)
STAGE = {s.name: s for s in STAGES}


def run_stage(store: Store, ctx: RunContext, name: str, command: str) -> StageStats:
    """One stage on its own, recorded as a run of ``command`` (`prefcurate probe`, `prefcurate audit`)."""
    with recorded_run(store, command, ctx) as run:
        stats = STAGE[name].run(store, ctx)
        run.stats[name] = stats.as_dict()
    return stats
