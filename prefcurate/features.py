"""Per-candidate features that a biased judge might reward: length, a flattering opener, a
stock closer, repetition, and text that tries to instruct the judge.

Pure functions of the text, so the same features are computed for the store's candidates
(`candidate_features`) and for any dataset `audit-dataset` reads.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prefcurate.store import Store

# Matched case-insensitively at the very start, after whitespace and markdown emphasis.
OPENERS = (
    "certainly", "sure", "of course", "absolutely", "great question", "good question", "excellent question",
    "what a great question", "i'd be happy to", "i would be happy to", "i'd be glad to", "i'm happy to",
    "happy to help", "definitely", "no problem", "great", "thank you for your question", "thanks for asking",
)
CLOSERS = (
    "i hope this helps", "hope this helps", "i hope that helps", "let me know if you have any other questions",
    "let me know if you need anything else", "feel free to ask", "happy to help further",
    "let me know if you'd like", "i hope this answers your question",
)
_LEAD = re.compile(r"^[\s*_#>`~-]*")
# Text aimed at a judge rather than at the user.
_INJECTION = re.compile(
    r"ignore (all |any |the )?(previous |prior |above )?(instructions|rubric|criteria)"
    r"|(give|rate|score) (this|the|my) (response|answer)[^.\n]{0,30}\b(10|ten|full marks|highest)"
    r"|as (the|an?) (judge|evaluator|grader)\b|\bdear (judge|evaluator|grader)\b"
    r"|</?response[^>]*>|\bsystem\s*:\s", re.I)
_WORD = re.compile(r"\w+")


class Phrases:
    """The opener and closer lists, compiled; `audit.openers` and `audit.closers` in a config replace them."""

    def __init__(self, openers: tuple[str, ...] | list[str] = OPENERS, closers: tuple[str, ...] | list[str] = CLOSERS):
        self.openers, self.closers = tuple(o.lower() for o in openers), tuple(c.lower() for c in closers)
        longest_first = sorted(self.openers, key=len, reverse=True)
        self.opener = re.compile(r"(" + "|".join(map(re.escape, longest_first)) + r")(?![a-z])", re.I) if openers else None
        self.closer = re.compile(r"(" + "|".join(map(re.escape, self.closers)) + r")[\s\S]{0,80}$", re.I) if closers else None
        self.key = hashlib.sha256(repr((self.openers, self.closers)).encode()).hexdigest()[:16]


DEFAULT_PHRASES = Phrases()


@dataclass(frozen=True)
class Features:
    chars: int
    words: int
    opener: str | None  # the opener phrase matched, lower-cased
    closer: str | None
    repetition_ratio: float  # share of word trigrams that repeat an earlier one
    injection_attempt: bool


def opener_of(text: str, phrases: Phrases = DEFAULT_PHRASES) -> str | None:
    m = phrases.opener.match(_LEAD.sub("", text)) if phrases.opener else None
    return m.group(1).lower() if m else None


def closer_of(text: str, phrases: Phrases = DEFAULT_PHRASES) -> str | None:
    m = phrases.closer.search(text.rstrip()) if phrases.closer else None
    return m.group(1).lower() if m else None


def repetition_ratio(text: str) -> float:
    words = [w.lower() for w in _WORD.findall(text)]
    grams = list(zip(words, words[1:], words[2:]))
    return 0.0 if not grams else 1.0 - len(set(grams)) / len(grams)


def features(text: str, phrases: Phrases = DEFAULT_PHRASES) -> Features:
    return Features(chars=len(text), words=len(_WORD.findall(text)), opener=opener_of(text, phrases),
                    closer=closer_of(text, phrases), repetition_ratio=repetition_ratio(text),
                    injection_attempt=bool(_INJECTION.search(text)))


def compute_features(store: Store, phrases: Phrases = DEFAULT_PHRASES) -> int:
    """Store the features of every candidate that has none yet, or that has features computed with
    other opener/closer lists; return how many were (re)computed."""
    rows = store.query("SELECT candidate_id, text FROM candidates WHERE candidate_id NOT IN "
                       "(SELECT candidate_id FROM candidate_features WHERE phrases_key = ?)", [phrases.key])
    store.insert("candidate_features", [{"candidate_id": r["candidate_id"], **asdict(features(r["text"], phrases)),
                                         "phrases_key": phrases.key} for r in rows],
                 replace_if=f"candidate_features.phrases_key IS DISTINCT FROM '{phrases.key}'", key="candidate_id")
    return len(rows)
