"""Gates on the bias metrics. A gate judges a metric's 95% interval, not its point value, so a
small sample cannot fail an honest judge: ``failed`` when the whole interval lies beyond the
threshold, ``passed`` when it lies within, ``inconclusive`` (with the n that would decide it) when
it straddles, or when there was nothing to measure."""

from __future__ import annotations

import math

from prefcurate.config import GateThreshold

# name: (path to the metric in the audit's JSON, its n, default threshold)
DEFAULT_GATES: dict[str, tuple[tuple[str, ...], tuple[str, ...], GateThreshold]] = {
    "opener_injection_shift": (("probes", "opener_injection", "mean_shift"), ("probes", "opener_injection", "n"),
                               GateThreshold(max=0.25)),
    "opener_injection_flip_rate": (("probes", "opener_injection", "flip_rate"), ("probes", "opener_injection", "n"),
                                   GateThreshold(max=0.05)),
    "padding_flip_rate": (("probes", "padding", "flip_rate"), ("probes", "padding", "n"), GateThreshold(max=0.05)),
    "p_chosen_longer": (("length_bias", "p_chosen_longer"), ("length_bias", "p_chosen_longer_n"),
                        GateThreshold(min=0.35, max=0.65)),
    "null_response_score": (("probes", "null_response", "mean_score"), ("probes", "null_response", "n"),
                            GateThreshold(max=2.0)),
    "first_position_win_rate": (("position_bias", "first_position_win_rate"), ("position_bias", "n"),
                                GateThreshold(min=0.45, max=0.55)),
    "swap_consistency": (("consistency", "swap_consistency"), ("consistency", "n_swap"), GateThreshold(min=0.8)),
}


def _get(metrics: dict, path: tuple[str, ...]):
    for key in path:
        if not isinstance(metrics, dict) or key not in metrics:
            return None
        metrics = metrics[key]
    return metrics


def judge_gate(value: float | None, ci: list[float] | None, n: int, threshold: GateThreshold, clusters: int = 0) -> dict:
    out = {"value": value, "ci": ci, "threshold": threshold.model_dump(), "n": n, "clusters": clusters}
    if value is None or ci is None:
        return out | {"status": "inconclusive", "n_needed": None}
    lo, hi = ci
    beyond = (threshold.min is not None and hi < threshold.min) or (threshold.max is not None and lo > threshold.max)
    within = (threshold.min is None or lo >= threshold.min) and (threshold.max is None or hi <= threshold.max)
    if beyond:
        return out | {"status": "failed"}
    if within:
        return out | {"status": "passed"}
    # The interval narrows about as 1/sqrt(n): the n at which the side of the interval facing the
    # nearest threshold would no longer reach it.
    side, distance = min(((value - lo, value - b) if value > b else (hi - value, b - value))
                         for b in (threshold.min, threshold.max) if b is not None)
    side, distance = abs(side), abs(distance)
    needed = max(n + 1, math.ceil(n * (side / distance) ** 2)) if distance > 0 and n else None
    return out | {"status": "inconclusive", "n_needed": needed}


def evaluate_gates(metrics: dict, overrides: dict[str, GateThreshold] | None = None) -> tuple[dict, bool, int]:
    """(gates by name, passed: no gate failed, how many were inconclusive)."""
    gates = {}
    for name, (path, n_path, default) in DEFAULT_GATES.items():
        ci, clusters = (_get(metrics, path[:-1] + (path[-1] + suffix,)) for suffix in ("_ci", "_clusters"))
        gates[name] = judge_gate(_get(metrics, path), ci, _get(metrics, n_path) or 0, (overrides or {}).get(name, default),
                                 clusters or 0)
    statuses = [g["status"] for g in gates.values()]
    return gates, "failed" not in statuses, statuses.count("inconclusive")


# What each gate's metric says, in words; `{v}` is its value.
GATE_WORDS: dict[str, str] = {
    "opener_injection_shift": "prepending an opener such as \"Certainly!\" moved a score by {v:+.2f} points on average",
    "opener_injection_flip_rate": "an injected opener flipped {v:.0%} of the pairs' verdicts",
    "padding_flip_rate": "content-free padding flipped {v:.0%} of the pairs' verdicts",
    "p_chosen_longer": "the chosen response was the longer one in {v:.0%} of the pairs",
    "null_response_score": "a content-free answer scored {v:.2f} on average",
    "first_position_win_rate": "the response shown first won {v:.0%} of the pairwise verdicts",
    "swap_consistency": "the verdict survived swapping the order in {v:.0%} of the pairs",
}


def gate_sentence(name: str, gate: dict) -> str:
    """One line a person can read: the status, what was measured, and what the gate allows."""
    t = gate["threshold"]
    pct = "{v:.0%}" in GATE_WORDS.get(name, "")
    show = (lambda x: f"{x:.0%}") if pct else (lambda x: f"{x:.2f}")
    allowed = (f"between {show(t['min'])} and {show(t['max'])}" if t["min"] is not None and t["max"] is not None
               else f"at least {show(t['min'])}" if t["min"] is not None else f"at most {show(t['max'])}")
    if gate["value"] is None:
        return f"{gate['status']:<12} {name}: nothing to measure (allowed: {allowed})"
    said = GATE_WORDS.get(name, name + " was {v:.3g}").format(v=gate["value"])
    lo, hi = gate["ci"]
    more = f"; about {gate['n_needed']} would decide it" if gate.get("n_needed") else ""
    prompts = f" over {gate['clusters']} prompts" if gate.get("clusters") else ""  # older stored audits did not count them
    return (f"{gate['status']:<12} {said} (95% interval {show(lo)} to {show(hi)}, n={gate['n']}{prompts}; "
            f"allowed: {allowed}{more})")
