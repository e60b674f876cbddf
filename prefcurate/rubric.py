"""Rubrics: versioned YAML describing the scale, the criteria and the judge's instructions.

A rubric's identity is the hash of its validated content, stored with every judgment, so a
changed rubric never silently mixes with verdicts made under the old one.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from prefcurate.config import load_yaml_model
from prefcurate.ids import content_id


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Scale(_Strict):
    min: int = Field(1, description="Lowest score.")
    max: int = Field(10, description="Highest score.")

    @model_validator(mode="after")
    def _ordered(self) -> Scale:
        if not 0 <= self.min < self.max <= 100:
            raise ValueError(f"scale.min ({self.min}) must be below scale.max ({self.max}), both within 0..100")
        return self


class Criterion(_Strict):
    name: str = Field(description="Short identifier, e.g. correctness.")
    weight: float = Field(gt=0, description="Share of the overall score; the weights sum to 1.")
    description: str = Field(description="What the criterion asks of the response.")
    low: str = Field("", description="What a low score looks like.")
    mid: str = Field("", description="What a middling score looks like.")
    high: str = Field("", description="What a high score looks like.")


class Rubric(_Strict):
    name: str = Field(description="Rubric name, e.g. helpfulness.")
    version: int = Field(1, description="Bumped by hand when the meaning changes.")
    scale: Scale = Field(default_factory=Scale, description="The score range.")
    instructions: str = Field(description="The judge's instructions, shown before the criteria.")
    criteria: list[Criterion] = Field(min_length=1, description="What is scored; overall is their weighted mean.")
    opener_penalty: float = Field(0.0, ge=0, description="Subtracted from the overall score of a candidate that "
                                  "opens with an opener (\"Certainly!\") when pairs are built; not part of the hash, "
                                  "since it changes no judgment.")
    length_penalty: float = Field(0.0, ge=0, description="Subtracted from the overall score of every candidate per 100 "
                                  "characters when pairs are built (a length-biased judge's bonus, as the audit's "
                                  "padding probe measures it: shift_per_100_chars); not part of the hash either.")
    variants: list[str] = Field(default_factory=list, description="Paraphrases of instructions, for the template "
                                "probe: the sampled pairs are scored again under each, and the audit reports how often "
                                "the verdict changes with the wording; not part of the hash (each variant's judgments "
                                "carry the variant's own hash in their probe name).")
    reference_key: str | None = Field("reference", description="Prompt metadata key whose value, if present, is "
                                      "shown to the judge as a reference answer (None: never).")

    @field_validator("criteria")
    @classmethod
    def _weights(cls, criteria: list[Criterion]) -> list[Criterion]:
        names = [c.name for c in criteria]
        if len(set(names)) != len(names):
            raise ValueError(f"criterion names must be unique, got {names}")
        total = sum(c.weight for c in criteria)
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"the weights sum to {total:g}; make them sum to 1")
        return criteria

    @cached_property  # computed once: it is part of every judgment's id
    def hash(self) -> str:
        return content_id("rubric", self.model_dump(exclude={"opener_penalty", "length_penalty", "variants"}))

    def overall(self, scores: dict[str, float]) -> float:
        return sum(c.weight * scores[c.name] for c in self.criteria)


def load_rubric(path: str | Path) -> Rubric:
    return load_yaml_model(path, Rubric, "set judge.rubric to a rubric YAML file, e.g. rubrics/helpfulness.yaml")
