"""Rubrics: versioned YAML describing the scale, the criteria and the judge's instructions.

A rubric's identity is the hash of its validated content, stored with every judgment, so a
changed rubric never silently mixes with verdicts made under the old one.
"""

from __future__ import annotations

import re
from functools import cached_property
from pathlib import Path
from typing import Literal

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


CheckKind = Literal["regex", "not_regex", "json", "json_schema", "max_words", "min_words", "max_tokens", "contains",
                   "excludes", "exact_answer", "numeric_answer"]
# What each kind needs besides its name.
CHECK_NEEDS: dict[str, str | None] = {"regex": "pattern", "not_regex": "pattern", "json": None, "json_schema": "json_schema",
                                      "max_words": "limit", "min_words": "limit", "max_tokens": "limit", "contains": "text",
                                      "excludes": "text", "exact_answer": None, "numeric_answer": None}


class Check(_Strict):
    """A verifiable check of a response that needs no model (prefcurate/checks.py runs them)."""

    name: str = Field(description="Short identifier, e.g. valid_json.")
    kind: CheckKind = Field(description="regex / not_regex (pattern must / must not match), json (parses), json_schema "
                            "(parses and validates), max_words / min_words / max_tokens (limit), contains / excludes "
                            "(text), exact_answer / numeric_answer (the prompt's reference answer).")
    pattern: str | None = Field(None, description="regex, not_regex: a Python regular expression, searched; "
                                "exact_answer, numeric_answer: where the answer is (its first group), else the last line "
                                "(exact) or the last number (numeric).")
    text: str | None = Field(None, description="contains, excludes: the text.")
    limit: int | None = Field(None, ge=0, description="max_words, min_words, max_tokens: the limit (tokens: the "
                              "generator's count; imported candidates have none).")
    json_schema: dict | None = Field(None, description="json_schema: the JSON schema the parsed response must satisfy.")
    tolerance: float = Field(1e-6, ge=0, description="numeric_answer: allowed difference, relative to max(1, |reference|).")
    ignore_case: bool = Field(True, description="contains, excludes, exact_answer: compare case-insensitively.")
    hard: bool = Field(True, description="A pair whose chosen response fails it is flagged failed_check and left out "
                       "of snapshots; a soft check is only reported.")

    @model_validator(mode="after")
    def _needs(self) -> Check:
        need = CHECK_NEEDS[self.kind]
        if need and getattr(self, need) is None:
            raise ValueError(f"check {self.name!r} of kind {self.kind} needs `{need}`")
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as e:
                raise ValueError(f"check {self.name!r}: pattern {self.pattern!r} is not a regular expression: {e}") from None
        return self

    @cached_property
    def key(self) -> str:
        """Its identity: a changed check is run again, an unchanged one never."""
        return content_id("check", self.model_dump())


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
    checks: list[Check] = Field(default_factory=list, description="Verifiable checks of every candidate that need no "
                                "model (a format, a number, a length); not part of the hash, since they change no "
                                "judgment.")

    @field_validator("criteria", "checks")
    @classmethod
    def _unique_names(cls, items: list, info) -> list:
        names = [c.name for c in items]
        if len(set(names)) != len(names):
            raise ValueError(f"{'criterion' if info.field_name == 'criteria' else 'check'} names must be unique, got {names}")
        return items

    @field_validator("criteria")
    @classmethod
    def _weights(cls, criteria: list[Criterion]) -> list[Criterion]:
        total = sum(c.weight for c in criteria)
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"the weights sum to {total:g}; make them sum to 1")
        return criteria

    @cached_property  # computed once: it is part of every judgment's id
    def hash(self) -> str:
        return content_id("rubric", self.model_dump(exclude={"opener_penalty", "length_penalty", "variants", "checks"}))

    def reference_in(self, metadata: dict | None) -> str | None:
        """A prompt's reference answer, as text: its metadata's ``reference_key``; None without one."""
        value = (metadata or {}).get(self.reference_key) if self.reference_key else None
        return None if value is None else str(value)

    def overall(self, scores: dict[str, float]) -> float:
        return sum(c.weight * scores[c.name] for c in self.criteria)


def load_rubric(path: str | Path) -> Rubric:
    return load_yaml_model(path, Rubric, "set judge.rubric to a rubric YAML file, e.g. rubrics/helpfulness.yaml")
