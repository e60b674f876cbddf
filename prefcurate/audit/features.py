"""Per-candidate features that a biased judge might reward: length, a flattering opener, a
stock closer, repetition, and text that tries to instruct the judge.

They are computed by DuckDB in one statement over every candidate (`candidate_features`), so a
million candidates take seconds. The patterns are plain regular expressions that Python's `re`
(ASCII mode) and DuckDB's RE2 read the same way, so `opener_of` finds the same openers in any
dataset `audit-dataset` reads and in a probe's text.
"""

from __future__ import annotations

import hashlib
import re

from prefcurate.store import Store

FEATURES_VERSION = 2  # part of the key: stored features of an older definition are recomputed

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
# Text aimed at a judge rather than at the user.
INJECTION = (
    r"(?i)ignore (all |any |the )?(previous |prior |above )?(instructions|rubric|criteria)"
    r"|(give|rate|score) (this|the|my) (response|answer)[^.\n]{0,30}\b(10|ten|full marks|highest)"
    r"|as (the|an?) (judge|evaluator|grader)\b|\bdear (judge|evaluator|grader)\b"
    r"|</?response[^>]*>|\bsystem\s*:\s"
)


class Phrases:
    """The opener and closer lists as patterns; `audit.openers` and `audit.closers` in a config replace them."""

    def __init__(self, openers: tuple[str, ...] | list[str] = OPENERS, closers: tuple[str, ...] | list[str] = CLOSERS):
        self.openers, self.closers = tuple(o.lower() for o in openers), tuple(c.lower() for c in closers)
        longest_first = sorted(self.openers, key=len, reverse=True)
        # None: an empty list, which matches nothing.
        self.opener_pattern = (r"(?i)^[\s*_#>`~-]*(" + "|".join(map(re.escape, longest_first)) + r")(?:[^a-z]|$)"
                               if openers else None)
        self.closer_pattern = r"(?i)(" + "|".join(map(re.escape, self.closers)) + r")[\s\S]{0,80}$" if closers else None
        self.opener = re.compile(self.opener_pattern, re.ASCII) if self.opener_pattern else None
        self.key = hashlib.sha256(repr((FEATURES_VERSION, self.openers, self.closers)).encode()).hexdigest()[:16]


DEFAULT_PHRASES = Phrases()


def opener_of(text: str, phrases: Phrases = DEFAULT_PHRASES) -> str | None:
    """The opener phrase ``text`` starts with, lower-cased, or None."""
    m = phrases.opener.match(text) if phrases.opener else None
    return m.group(1).lower() if m else None


# A text's shingles: the hashes of its word trigrams (of its words, when it has fewer than three),
# its words being the runs of ASCII word characters of the lower-cased text. The words are split at the
# runs of other characters rather than matched one by one: the same words, and about a quarter faster
# over a million texts.
WORDS = "list_filter(string_split(regexp_replace(lower({0}), '[^a-z0-9_]+', ' ', 'g'), ' '), lambda x: x <> '')"
SHINGLE_HASHES = """CASE WHEN len({0}) < 3 THEN list_transform({0}, lambda x: hash(x))
    ELSE list_transform(range(1, len({0}) - 1), lambda i: hash({0}[i], {0}[i + 1], {0}[i + 2])) END"""
SHINGLES = "list_distinct(" + SHINGLE_HASHES + ")"  # the distinct ones

# chars, words, opener and closer (lower-cased, NULL for none), repetition_ratio (the share of word
# trigrams that repeat an earlier one) and injection_attempt, of every candidate without features. Features
# made with other phrase lists are deleted first, so that this is a plain insert: an upsert of a million
# rows costs a twentieth more.
FEATURES_SQL = f"""
INSERT INTO candidate_features (candidate_id, chars, words, opener, closer, repetition_ratio, injection_attempt, phrases_key)
SELECT candidate_id, length(text), len(w),
       nullif(lower(regexp_extract(text, $opener, 1)), ''),
       nullif(lower(regexp_extract(regexp_replace(text, '\\s+$', ''), $closer, 1)), ''),
       CASE WHEN len(w) < 3 THEN 0.0 ELSE 1 - list_unique({SHINGLE_HASHES.format("w")}) / (len(w) - 2) END,
       regexp_matches(text, $injection),
       $key
FROM (SELECT candidate_id, text, {WORDS.format("text")} AS w FROM candidates
      WHERE candidate_id NOT IN (SELECT candidate_id FROM candidate_features))
"""


def compute_features(store: Store, phrases: Phrases = DEFAULT_PHRASES) -> int:
    """Store the features of every candidate that has none yet, or that has features computed with
    other opener/closer lists; return how many were (re)computed."""
    todo = store.scalar("SELECT count(*) FROM candidates WHERE candidate_id NOT IN "
                        "(SELECT candidate_id FROM candidate_features WHERE phrases_key = ?)", [phrases.key])
    if todo:
        with store.transaction():
            store.execute("DELETE FROM candidate_features WHERE phrases_key IS DISTINCT FROM ?", [phrases.key])
            store.execute(FEATURES_SQL, {"opener": phrases.opener_pattern, "closer": phrases.closer_pattern,
                                             "injection": INJECTION, "key": phrases.key})
    return todo
