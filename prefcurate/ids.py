"""Content-derived ids: the same content always gets the same id, so every stage can do
only what is missing and a rerun adds no rows."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: equal values give equal strings."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def content_id(*parts: Any, length: int = 16) -> str:
    """A hex id (``length`` hex chars) from any JSON-serialisable parts."""
    digest = hashlib.sha256(canonical_json(list(parts)).encode("utf-8")).hexdigest()
    return digest[:length]


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def unit_interval(key: str) -> float:
    """A stable pseudo-random number in [0, 1) from a string, for hash-based splits."""
    return int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:15], 16) / 16**15


def judgment_id(candidate_id: str, judge: str, rubric_hash: str, mode: str = "pointwise",
                candidate_b_id: str | None = None, pair_order: str | None = None, repeat_index: int = 0,
                probe: str | None = None) -> str:
    """A judgment's identity: what was judged (pairwise: a shown first in order ab), by which judge
    and rubric, in which mode, order and repeat, and under which probe."""
    return content_id("judgment", candidate_id, candidate_b_id, judge, rubric_hash, mode, pair_order,
                      repeat_index, probe)
