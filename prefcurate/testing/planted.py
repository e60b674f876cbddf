"""Judges with planted biases, answered by the local Messages API server (messages_api.py).

A planted judge's opinion of a response is a quality that depends on the text alone and carries no
length or opener signal (a hash of the text: a stand-in for what a real judge reads), plus a bonus
per 100 characters and a bonus when the response opens with a flattering opener ("Certainly!",
"Great question!", the audit's list). The magnitudes are arguments, so an experiment knows exactly
what it planted: bench/bias_propagation.py trains on such a judge's pairs, and the audit's probes
should measure the planted bonuses back.

    scorer = by_model({"planted-judge": PlantedJudge(length_bonus=1.0, opener_bonus=3.0),
                       "fair-judge": PlantedJudge()})
    with MessagesAPIServer(scorer=scorer) as server: ...
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from prefcurate.audit.features import opener_of
from prefcurate.judge.probes import FILLER, INJECTED_OPENER
from prefcurate.testing.messages_api import Scorer, fenced_texts, tool_schema


def content(text: str) -> str:
    """The text without what the audit's probes add (an injected opener, filler sentences): the quality
    reads this, so a probe moves a planted judge's score by exactly the planted bonuses."""
    text = text.removeprefix(INJECTED_OPENER)
    for sentence in FILLER:
        text = text.replace(" " + sentence, "")
    return text


def quality(text: str) -> float:
    """Between 0 and 1, a function of the text's content alone."""
    return int(hashlib.sha256(f"quality:{content(text)}".encode()).hexdigest(), 16) % 10_000 / 9_999


@dataclass(frozen=True)
class PlantedJudge:
    length_bonus: float = 0.0  # points per 100 characters of the response
    opener_bonus: float = 0.0  # points when the response opens with an opener
    quality_span: float = 0.6  # share of the scale the quality spans, from the bottom (the rest is room for bonuses)

    def points(self, text: str, lo: float, hi: float) -> float:
        """The judge's opinion on a scale from ``lo`` to ``hi``, before rounding and clipping."""
        return (lo + self.quality_span * (hi - lo) * quality(text) + self.length_bonus * len(text) / 100
                + (self.opener_bonus if opener_of(text) is not None else 0.0))

    def __call__(self, body: dict) -> dict:
        schema = tool_schema(body)["input_schema"]["properties"]
        if "winner" in schema:  # pairwise: the higher opinion wins, whatever the order
            a, b = (self.points(t, 0, 10) for t in fenced_texts(body))
            return {"winner": "A" if a > b else "B" if b > a else "tie", "rationale": "planted judge"}
        text = fenced_texts(body)[0]
        scores = {name: min(spec["maximum"], max(spec["minimum"], round(self.points(text, spec["minimum"], spec["maximum"]))))
                  for name, spec in schema.items() if spec.get("type") == "integer"}
        return scores | {"rationale": "planted judge"}


def by_model(judges: dict[str, PlantedJudge]) -> Scorer:
    """One server, several judges: each request is answered by the judge named by its ``model``."""
    def score(body: dict) -> dict:
        if body["model"] not in judges:
            raise ValueError(f"no planted judge named {body['model']!r}; known: {sorted(judges)}")
        return judges[body["model"]](body)
    return score
