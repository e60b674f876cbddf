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


def parse_shard(text: str) -> tuple[int, int]:
    """"i/n" -> (i, n), with 0 <= i < n."""
    from prefcurate.errors import PrefcurateError

    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise PrefcurateError(f"--shard {text!r}: give it as i/n, e.g. 0/4 for the first of four shards") from None
    if not 0 <= i < n:
        raise PrefcurateError(f"--shard {text}: i must be in 0..{n - 1} for n = {n}")
    return i, n


def in_shard(prompt_id: str, shard: tuple[int, int] | None) -> bool:
    """Whether a prompt belongs to shard i of n (by a hash of its id); every prompt when no shard."""
    return shard is None or int(hashlib.sha256(f"shard:{prompt_id}".encode()).hexdigest()[:12], 16) % shard[1] == shard[0]
