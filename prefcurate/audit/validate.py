"""`prefcurate validate`: the audit checked on judges whose biases are known.

Each scenario is a simulated judge with planted biases (position, close-call position, length, an
injected opener, padding, instability across repeats, inconsistency across orders, and none). Its
verdicts are drawn directly, no model involved, into a store of the real schema, and that store
goes through the same `full_audit` as any real run. Then, per metric: the true value the planted
biases imply (worked out from the simulation's design, independently of the audit's code), the
estimate with its interval and whether the interval covers it; per gate: whether the gates that
should fail (those whose true value lies beyond the threshold) did, and no others.

Over many seeds (`--full`), the share of intervals covering the truth (nominal 95%) and the share of
unbiased judges the audit fails (at most alpha) test the instrument itself.
"""

from __future__ import annotations

import hashlib
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist

import numpy as np

from prefcurate.audit.gates import beside, lookup
from prefcurate.audit.report import Table, fmt, interval
from prefcurate.audit.stage import full_audit
from prefcurate.context import RunContext
from prefcurate.judge.probes import pad
from prefcurate.store import Store

JUDGE, RUBRIC, RUN = "simulated:judge", "simulated", "validate"
WORDS = ("the a model answer data point clear short long useful example result because therefore first second value "
         "method simple option careful step check return number string list table query index cache page").split()
BASE, MARGIN, NOISE = 5.0, (1.0, 3.0), 0.3  # rejected score; chosen = rejected + U(MARGIN); probe score noise (sd)
REPEATS = 2  # pairwise verdicts per comparison and order


@dataclass(frozen=True)
class SimulatedJudge:
    """A judge with planted biases; every default is "no such bias"."""

    name: str
    position: float = 0.0  # share of pairwise verdicts given to the first-shown response, whatever it is
    close_share: float = 0.0  # share of pairs that are close calls
    close_position: float = 0.0  # on close calls only: share of verdicts given to the first-shown response
    prefers_longer: float = 0.5  # chance that the chosen response is the longer one
    opener_shift: float = 0.0  # points an injected opener adds to a score
    padding_shift: float = 0.0  # points per 100 characters of content-free padding
    instability: float = 0.02  # chance that a verdict goes to the other response, independently each time
    order_flips: float = 0.0  # share of pairs whose verdict in one order (either, at random) always goes the other way
    null_score: float = 1.0  # mean score of a content-free answer
    wording: float = 0.0  # chance that a paraphrase of the instructions reverses a pair's scores


SCENARIOS: tuple[SimulatedJudge, ...] = (
    SimulatedJudge("unbiased"),
    SimulatedJudge("position", position=0.3),
    # Fair on clear cases; on the sixth of pairs that are close calls, 3 verdicts in 4 go to the first shown.
    SimulatedJudge("close-call position", close_share=1 / 6, close_position=0.5),
    SimulatedJudge("length", prefers_longer=0.8),
    SimulatedJudge("opener", opener_shift=1.5),
    SimulatedJudge("padding", padding_shift=1.0),
    SimulatedJudge("instability", instability=0.15),
    SimulatedJudge("order inconsistency", order_flips=0.3),
    SimulatedJudge("null response", null_score=3.0),
    SimulatedJudge("wording", wording=0.15),
)
VARIANTS = ("template:v1", "template:v2")  # the paraphrases the template probe scores under


# -- the simulated store ---------------------------------------------------------------------------

def _texts(rng: np.random.Generator, n: int) -> list[str]:
    return [" ".join(rng.choice(WORDS, size=k)) for k in rng.integers(20, 120, size=n)]


def _verdicts(judge: SimulatedJudge, rng: np.random.Generator, n: int) -> np.ndarray:
    """Per pair, order (ab: chosen shown first; ba) and repeat, whether the chosen response won."""
    close = rng.random(n) < judge.close_share
    flipped = np.where(rng.random(n) < judge.order_flips, rng.integers(1, 3, size=n), 0)  # 1: order ab, 2: ba
    to_first = np.where(close, judge.close_position, judge.position)[:, None, None]
    order = np.arange(2)[None, :, None]
    prefers_chosen = (flipped[:, None, None] != order + 1)  # the judge's own preference in this order
    own = prefers_chosen ^ (rng.random((n, 2, REPEATS)) < judge.instability)
    chosen_first = order == 0
    return np.where(rng.random((n, 2, REPEATS)) < to_first, chosen_first, own)


def simulate(judge: SimulatedJudge, seed: int, prompts: int) -> dict[str, list[dict]]:
    """The rows of a store judged by ``judge``: a pair per prompt, judged pointwise and pairwise (both
    orders, REPEATS times), and probed (an opener, padding, a content-free answer, each paraphrase)."""
    # Each scenario its own stream: runs of two scenarios with one seed share no draws.
    rng = np.random.default_rng([seed, int.from_bytes(hashlib.sha256(judge.name.encode()).digest()[:4], "big")])
    a, b = _texts(rng, prompts), _texts(rng, prompts)
    a_longer = np.array([len(x) > len(y) for x, y in zip(a, b)])
    chosen_is_longer = rng.random(prompts) < judge.prefers_longer
    margins = rng.uniform(*MARGIN, size=prompts)
    chosen_won = _verdicts(judge, rng, prompts)
    rows: dict[str, list[dict]] = {"prompts": [], "candidates": [], "judgments": [], "pairs": []}
    noise = rng.normal(0, NOISE, size=(prompts, 3))
    reworded = rng.random((prompts, len(VARIANTS))) < judge.wording
    for i in range(prompts):
        p, (c, r) = f"p{i}", (("a", "b") if a_longer[i] == chosen_is_longer[i] else ("b", "a"))
        text = {"a": a[i], "b": b[i]}
        cid, rid = f"{p}{c}", f"{p}{r}"
        rows["prompts"].append({"prompt_id": p, "messages": [{"role": "user", "content": f"question {i}"}],
                                "prompt_text": f"question {i}", "source": RUN, "run_id": RUN})
        for k, side in enumerate((c, r)):
            rows["candidates"].append({"candidate_id": f"{p}{side}", "prompt_id": p, "sample_index": k, "text": text[side],
                                       "finish_reason": "stop", "generator": RUN, "run_id": RUN})
        scores = {cid: BASE + margins[i], rid: BASE}
        rows["pairs"].append({"pair_id": f"pr{i}", "prompt_id": p, "chosen_id": cid, "rejected_id": rid,
                              "strategy": "best_worst", "chosen_score": scores[cid], "rejected_score": BASE,
                              "margin": margins[i], "judge": JUDGE, "rubric_hash": RUBRIC, "run_id": RUN})
        added = len(pad(text[r])) - len(text[r])
        probes = {"opener_injection": BASE + judge.opener_shift + noise[i, 0],
                  "padding": BASE + judge.padding_shift * added / 100 + noise[i, 1]}
        rows["judgments"] += [_judgment(p, x, None, None, 0, None, s) for x, s in scores.items()]
        for v, variant in enumerate(VARIANTS):  # a reworded pair's scores change places
            rows["judgments"] += [_judgment(p, x, None, None, 0, variant, scores[y] if reworded[i, v] else s)
                                  for (x, s), y in zip(scores.items(), (rid, cid))]
        rows["judgments"] += [_judgment(p, rid, None, None, 0, kind, s) for kind, s in probes.items()]
        rows["judgments"].append(_judgment(p, f"{p}null", None, None, 0, "null_response", judge.null_score + noise[i, 2]))
        rows["judgments"] += [_judgment(p, cid, rid, order, k, None, None, "a" if chosen_won[i, o, k] else "b")
                              for o, order in enumerate(("ab", "ba")) for k in range(REPEATS)]
    return rows


def _judgment(prompt: str, a: str, b: str | None, order: str | None, repeat: int, probe: str | None,
              overall: float | None, winner: str | None = None) -> dict:
    return {"judgment_id": f"j{prompt}{a}{b}{order}{repeat}{probe}", "prompt_id": prompt, "candidate_id": a,
            "candidate_b_id": b, "judge": JUDGE, "rubric_hash": RUBRIC, "mode": "pairwise" if b else "pointwise",
            "pair_order": order, "repeat_index": repeat, "probe": probe, "overall": overall, "winner": winner,
            "status": "ok", "run_id": RUN}


def audit_simulated(judge: SimulatedJudge, seed: int, prompts: int) -> dict:
    """The real audit's metrics of a store filled by ``judge``."""
    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "simulated.duckdb") as store:
        for table, rows in simulate(judge, seed, prompts).items():
            store.insert(table, rows)
        return full_audit(store, RunContext.without_rubric())


# -- what the planted biases imply -------------------------------------------------------------------

# name: (path in the audit's JSON, path of its n, a rate: its interval is not scored within 5 rows of 0 or 1)
METRICS: dict[str, tuple[tuple[str, ...], tuple[str, ...], bool]] = {
    "first_position_win_rate": (("position_bias", "first_position_win_rate"), ("position_bias", "n"), True),
    "first_position_flip_share": (("position_bias", "first_position_flip_share"), ("position_bias", "n_flips"), True),
    "swap_consistency": (("consistency", "swap_consistency"), ("consistency", "n_swap"), True),
    "repeat_flip_rate": (("consistency", "repeat_flip_rate"), ("consistency", "n_repeat"), True),
    "p_chosen_longer": (("length_bias", "p_chosen_longer"), ("length_bias", "p_chosen_longer_n"), True),
    "opener_injection_shift": (("probes", "opener_injection", "mean_shift"), ("probes", "opener_injection", "n"), False),
    "opener_injection_flip_rate": (("probes", "opener_injection", "flip_rate"), ("probes", "opener_injection", "n"), True),
    "padding_shift_per_100_chars": (("probes", "padding", "shift_per_100_chars"), ("probes", "padding", "n"), False),
    "padding_flip_rate": (("probes", "padding", "flip_rate"), ("probes", "padding", "n"), True),
    "null_response_score": (("probes", "null_response", "mean_score"), ("probes", "null_response", "n"), False),
    "template_flip_rate": (("probes", "template", "flip_rate"), ("probes", "template", "n"), True),
}


def _pair_types(judge: SimulatedJudge) -> list[tuple[float, float, int]]:
    """(weight, share of verdicts to the first shown, which order's preference is reversed: 0 none, 1 ab, 2 ba)."""
    kinds = [(1 - judge.close_share, judge.position), (judge.close_share, judge.close_position)]
    flips = [(1 - judge.order_flips, 0), (judge.order_flips / 2, 1), (judge.order_flips / 2, 2)]
    return [(wk * wf, to_first, flip) for wk, to_first in kinds for wf, flip in flips if wk * wf > 0]


def _position_truth(judge: SimulatedJudge) -> dict[str, float]:
    """The population values of the position and consistency metrics, from the verdict model: a verdict
    goes to the first shown with chance r, else to the judge's own preference, flipped with chance e."""
    e, sums = judge.instability, dict.fromkeys(("first", "first_twice", "second_twice", "agree", "repeat_flip"), 0.0)
    for w, r, flip in _pair_types(judge):
        own_first, own_second = r + (1 - r) * (1 - e), r + (1 - r) * e  # chance the first shown wins
        ab = own_first if flip != 1 else own_second  # in order ab the chosen, the judge's preference, is shown first
        ba = own_second if flip != 2 else own_first
        sums["first"] += w * (ab + ba) / 2
        sums["first_twice"] += w * ab * ba
        sums["second_twice"] += w * (1 - ab) * (1 - ba)
        sums["agree"] += w * (ab * (1 - ba) + (1 - ab) * ba)  # the chosen wins in both orders, or loses in both
        sums["repeat_flip"] += w * (ab * (1 - ab) + ba * (1 - ba))  # two repeats of one order differ: 2p(1-p), averaged
    flips = sums["first_twice"] + sums["second_twice"]
    return {"first_position_win_rate": sums["first"], "swap_consistency": sums["agree"],
            "first_position_flip_share": sums["first_twice"] / flips if flips else math.nan,
            "repeat_flip_rate": sums["repeat_flip"]}


def _flip_chance(shifts: np.ndarray) -> float:
    """Chance that a rejected response's score, moved by one of ``shifts`` (equally likely) plus the
    probe's noise, passes the chosen one's, the margin uniform over MARGIN."""
    values, counts = np.unique(np.asarray(shifts, dtype=float), return_counts=True)
    passes = NormalDist(0, NOISE)
    chance = [np.mean([1 - passes.cdf(m - v) for m in np.linspace(*MARGIN, 401)]) for v in values]
    return float(np.dot(chance, counts) / counts.sum())


def truth(judge: SimulatedJudge, draws: int = 4000, seed: int = 12345) -> dict[str, float]:
    """Every metric's value in the population the judge's store is drawn from. The padding probe's flips
    depend on how much padding the rejected texts get: averaged over ``draws`` pairs drawn as `simulate`
    draws them."""
    rng = np.random.default_rng(seed)
    a, b = _texts(rng, draws), _texts(rng, draws)
    longer, shorter = zip(*[(x, y) if len(x) >= len(y) else (y, x) for x, y in zip(a, b)])
    rejected = np.where(rng.random(draws) < judge.prefers_longer, [len(t) for t in shorter], [len(t) for t in longer])
    added = np.array([len(pad("x" * n)) - n for n in rejected])
    return _position_truth(judge) | {
        "p_chosen_longer": judge.prefers_longer, "opener_injection_shift": judge.opener_shift,
        "opener_injection_flip_rate": _flip_chance(np.array([judge.opener_shift])),
        "padding_shift_per_100_chars": judge.padding_shift,
        "padding_flip_rate": _flip_chance(judge.padding_shift * added / 100), "null_response_score": judge.null_score,
        "template_flip_rate": 1 - (1 - judge.wording) ** len(VARIANTS)}


# -- checking the audit against the truth --------------------------------------------------------------

COVERAGE = (0.93, 0.97)  # what --full's intervals, nominally 95%, must cover


def _beyond(value: float, threshold: dict) -> bool:
    return (threshold["min"] is not None and value < threshold["min"]) or (threshold["max"] is not None and value > threshold["max"])


def check(judge: SimulatedJudge, metrics: dict, true: dict[str, float]) -> dict:
    """Per metric: truth, estimate, interval and whether it covers the truth (None for a rate within 5
    rows of 0 or 1, where no interval of this size can be judged); the gates that should fail and those that did."""
    rows = []
    for name, (path, n_path, rate) in METRICS.items():
        estimate, ci, n = lookup(metrics, path), beside(metrics, path, "_ci"), lookup(metrics, n_path) or 0
        t = true[name]
        scored = ci is not None and not (rate and n * min(t, 1 - t) < 5)
        rows.append({"metric": name, "truth": t, "estimate": estimate, "ci": ci, "n": n,
                     "covers": (ci[0] <= t <= ci[1]) if scored else None})
    expected = sorted(g for g in metrics["gates"] if _beyond(true[g], metrics["gates"][g]["threshold"]))
    fired = sorted(g for g, gate in metrics["gates"].items() if gate["status"] == "failed")
    return {"scenario": judge.name, "metrics": rows, "gates_expected": expected, "gates_failed": fired,
            "gates_right": expected == fired}


def validate(seeds: int = 1, prompts: int = 400, on_step=None) -> dict:
    """Every scenario over ``seeds`` seeds: the per-run checks (the first seed's, in full) and, over all
    seeds, each metric's coverage, each scenario's share of runs with exactly the right gates failed,
    and the unbiased judge's false-failure rate."""
    runs = []
    for judge in SCENARIOS:
        true = truth(judge)
        for seed in range(seeds):
            runs.append(check(judge, audit_simulated(judge, seed, prompts), true))
            if on_step:
                on_step()
    return summarise(runs, seeds, prompts)


def summarise(runs: list[dict], seeds: int, prompts: int) -> dict:
    covers: dict[str, list[bool]] = {}
    for run in runs:
        for row in run["metrics"]:
            if row["covers"] is not None:
                covers.setdefault(row["metric"], []).append(row["covers"])
    pooled = [c for cs in covers.values() for c in cs]
    unbiased = [r for r in runs if r["scenario"] == SCENARIOS[0].name]
    right = {j.name: float(np.mean([r["gates_right"] for r in runs if r["scenario"] == j.name])) for j in SCENARIOS}
    return {"seeds": seeds, "prompts": prompts,
            "first_seed": [r for i, r in enumerate(runs) if i % seeds == 0],
            "coverage": {m: {"coverage": float(np.mean(cs)), "intervals": len(cs)} for m, cs in covers.items()},
            "coverage_pooled": float(np.mean(pooled)) if pooled else None, "intervals": len(pooled),
            "coverage_target": list(COVERAGE),
            "false_failure_rate": float(np.mean([bool(r["gates_failed"]) for r in unbiased])),
            "right_gates_rate": right}


def held(summary: dict, alpha: float = 0.05) -> bool:
    """One seed: every scenario failed exactly the right gates. Many: the pooled coverage is within
    COVERAGE and the unbiased judge failed at most ``alpha`` of its audits."""
    if summary["seeds"] == 1:
        return all(r["gates_right"] for r in summary["first_seed"])
    lo, hi = COVERAGE
    return lo <= summary["coverage_pooled"] <= hi and summary["false_failure_rate"] <= alpha


def tables(summary: dict) -> list[Table]:
    """What `prefcurate validate` prints: the first seed's checks, then (over several seeds) coverage and rates."""
    first = summary["first_seed"]
    out = [Table("Gates (seed 0): those whose true value lies beyond the threshold should fail, and no others",
                 ["scenario", "should fail", "failed", "right"],
                 [(r["scenario"], ", ".join(r["gates_expected"]) or "none", ", ".join(r["gates_failed"]) or "none",
                   "yes" if r["gates_right"] else "NO") for r in first]),
           Table("Metrics (seed 0)", ["scenario", "metric", "truth", "estimate", "95% interval", "n", "covers"],
                 [(r["scenario"], m["metric"], fmt(m["truth"]), fmt(m["estimate"]), interval(m["ci"]), m["n"],
                   {True: "yes", False: "NO", None: "(at the edge)"}[m["covers"]]) for r in first for m in r["metrics"]])]
    if summary["seeds"] > 1:
        lo, hi = summary["coverage_target"]
        out.append(Table(f"Interval coverage over {summary['seeds']} seeds (target {lo:.2f} to {hi:.2f})",
                         ["metric", "intervals", "coverage"],
                         [(m, c["intervals"], fmt(c["coverage"])) for m, c in summary["coverage"].items()]
                         + [("all", summary["intervals"], fmt(summary["coverage_pooled"]))]))
        out.append(Table("Runs that failed exactly the right gates", ["scenario", "share"],
                         [(name, fmt(rate)) for name, rate in summary["right_gates_rate"].items()]
                         + [("unbiased judge failed (false failures; at most 0.05)", fmt(summary["false_failure_rate"]))]))
    return out
