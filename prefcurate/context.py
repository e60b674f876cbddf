"""The run context: everything a run decides once, before its first stage, and hands to every stage.

The validated config, the loaded rubric and its hash, the judge's identity, the opener and closer
lists, a hash of the whole config, the run's id, and (for `prefcurate run`) its prompts read and
validated. No stage reads a config file or a rubric again. The context is recorded with its run
(`runs`), so commands that act on a filled store (`audit`, `probe`, `snapshot create`) can use the
config of the run that filled it.
"""

from __future__ import annotations

import json
from functools import cached_property

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from prefcurate.audit.features import Phrases
from prefcurate.config import Config, load_config
from prefcurate.errors import ConfigError, PrefcurateError
from prefcurate.ids import content_id
from prefcurate.inputs import PromptFile, load_prompts
from prefcurate.rubric import Rubric, load_rubric
from prefcurate.store import new_run_id


class RunContext(BaseModel):
    model_config = ConfigDict(frozen=True)

    config: Config = Field(description="The validated run config.")
    source: str = Field(description="Where the config came from, as commands print it: a file, a run recorded in "
                        "the store, or the defaults.")
    config_path: str | None = Field(None, description="The file the config was read from, if any.")
    config_hash: str = Field(description="A hash of the whole config.")
    rubric: Rubric | None = Field(None, description="The judge's rubric, loaded once (None: no judge is configured "
                                  "for this command, e.g. an audit of a store without a recorded run).")
    judge: str = Field(description="The judge's identity (backend:model), stored with every judgment and pair.")
    run_id: str = Field(default_factory=new_run_id, description="The run's id, on every row the run writes.")
    shard: tuple[int, int] | None = Field(None, description="Only the prompts of shard i of n (`run --shard i/n`).")
    show_progress: bool = Field(False, description="Progress bars on the terminal (else log lines).")
    prompt_ids: list[str] | None = Field(None, description="The prompts the run's stages work on, set by the prompts "
                                         "stage (None: every prompt in the store).")
    # The prompts file, read and validated once; not part of what is recorded or sent to Prefect.
    _prompts: PromptFile | None = PrivateAttr(None)

    @classmethod
    def of(cls, config: Config, *, source: str = "the config given in code", **fields) -> RunContext:
        """The context of a config in hand, its rubric loaded from ``judge.rubric``."""
        rubric = load_rubric(config.judge.rubric)
        if "template" in config.probes.kinds and not rubric.variants:
            raise ConfigError(f"{config.judge.rubric}: probes.kinds has template but the rubric has no variants; add "
                              "variants (paraphrases of its instructions) to the rubric, or drop template from probes.kinds")
        return cls(**_decided(config), source=source, rubric=rubric, **fields)

    @classmethod
    def resolve(cls, config_path: str, *, shard: tuple[int, int] | None = None, show_progress: bool = False,
                read_prompts: bool = True) -> RunContext:
        """A run's context from its config file: the config, its rubric and (``read_prompts``) its prompts
        file, all validated before anything is written."""
        ctx = cls.of(load_config(config_path), source=str(config_path), config_path=str(config_path), shard=shard,
                     show_progress=show_progress)
        if read_prompts:
            ctx.read_prompts()
        return ctx

    @classmethod
    def without_rubric(cls, config: Config | None = None,
                       source: str = "the defaults (no run recorded in this store; pass --config to choose)") -> RunContext:
        """A context that judges nothing, for auditing or snapshotting a store: ``config`` (else the
        built-in defaults) with no rubric loaded."""
        return cls(**_decided(config or Config()), source=source)

    def read_prompts(self) -> PromptFile | None:
        """The validated prompts of ``prompts.path`` (None when it is not set), read on first use."""
        if self._prompts is None and self.config.prompts.path is not None:
            p = self.config.prompts
            self._prompts = load_prompts(p.path, p.split, p.limit, p.where)
        return self._prompts

    def scoped(self, prompt_ids: list[str] | None) -> RunContext:
        """This context, with the later stages limited to ``prompt_ids``."""
        return self.model_copy(update={"prompt_ids": prompt_ids})

    def require_rubric(self) -> Rubric:
        """The rubric, for the stages that judge; a context without one cannot run them."""
        if self.rubric is None:
            raise PrefcurateError(f"no judge configured ({self.source}); pass --config with a judge section")
        return self.rubric

    @cached_property
    def phrases(self) -> Phrases:
        """The opener and closer lists of ``audit``, compiled once."""
        return self.config.audit.phrases()

    def record(self) -> dict:
        """What `runs` keeps of this context, so a later command can rebuild it without the files."""
        return {"config": self.config.model_dump(mode="json"), "config_path": self.config_path,
                "config_hash": self.config_hash, "judge": self.judge,
                "rubric": self.rubric.model_dump(mode="json") if self.rubric else None}

    @classmethod
    def from_record(cls, row: dict) -> RunContext:
        """The context a run recorded (see ``record``), for a later command on the same store: its config,
        rubric, hash and judge as that run decided them, whatever the files say now."""
        where = f" ({row['config_path']})" if row["config_path"] else ""
        return cls(config=Config.model_validate(json.loads(row["config"])), config_path=row["config_path"],
                   source=f"the config of run {row['run_id']}{where}, the store's latest; pass --config for another",
                   config_hash=row["config_hash"], judge=row["judge"],
                   rubric=Rubric.model_validate(json.loads(row["rubric"])) if row["rubric"] else None)


def _decided(config: Config) -> dict:
    """What a config decides for every stage: its hash, and the judge's identity."""
    return {"config": config, "config_hash": content_id("config", config.model_dump(mode="json")),
            "judge": f"{config.judge.backend}:{config.judge.model}"}
