"""Gates on the bias metrics. Each gate has an estimate with its 95% interval, a p-value against its
null, a Benjamini-Hochberg q-value across all the gates, and the minimum detectable effect (MDE) at
its n. It reads:

- ``failed`` when its q-value is below ``audit.alpha`` and its estimate lies beyond its threshold;
- ``inconclusive`` when the audit could not have told: its MDE exceeds its tolerance (with the n that
  would bring the MDE within it), or its estimate lies beyond the threshold without significance, or
  there was nothing to measure;
- ``passed`` otherwise: within the threshold, at an n that would have caught a bias of the tolerance.

A gate's null is the value a judge without the bias gives (``ideal``: no position preference is
0.5, an injected opener moves no score) where that value is inside the metric's range, tested
two-sided; for rates whose ideal is the end of their range (no flips, full consistency) it is the
threshold itself, tested one-sided: "is the judge worse than allowed?". The tolerance is the
distance from the ideal to the nearest threshold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from prefcurate.audit.significance import benjamini_hochberg, binomial_p, mde, statistic_p
from prefcurate.config import GateThreshold


@dataclass(frozen=True)
class Gate:
    path: tuple[str, ...]  # the metric in the audit's JSON; its _ci, _clusters and _se sit beside it
    n_path: tuple[str, ...]  # its n
    threshold: GateThreshold  # the default
    ideal: float  # what a judge without this bias measures
    null: str = "ideal"  # "ideal" (two-sided test against it) or "threshold" (one-sided: beyond it?)
    proportion: bool = True  # a share of 0/1 rows: its standard error at p is sqrt(p(1 - p)/n), times the design effect
    mcnemar: bool = False  # tested by McNemar's exact test on the swapped verdicts that disagree
    optional: bool = False  # applied only when audit.gates names it
    missing: str | None = None  # where set, nothing to measure fails the gate, and ``how`` at that path says why


DEFAULT_GATES: dict[str, Gate] = {
    "opener_injection_shift": Gate(("probes", "opener_injection", "mean_shift"), ("probes", "opener_injection", "n"),
                                   GateThreshold(max=0.25), ideal=0.0, proportion=False),
    "opener_injection_flip_rate": Gate(("probes", "opener_injection", "flip_rate"), ("probes", "opener_injection", "n"),
                                       GateThreshold(max=0.05), ideal=0.0, null="threshold"),
    "padding_flip_rate": Gate(("probes", "padding", "flip_rate"), ("probes", "padding", "n"), GateThreshold(max=0.05),
                              ideal=0.0, null="threshold"),
    "p_chosen_longer": Gate(("length_bias", "p_chosen_longer"), ("length_bias", "p_chosen_longer_n"),
                            GateThreshold(min=0.35, max=0.65), ideal=0.5),
    "null_response_score": Gate(("probes", "null_response", "mean_score"), ("probes", "null_response", "n"),
                                GateThreshold(max=2.0), ideal=1.0, null="threshold", proportion=False),
    "first_position_win_rate": Gate(("position_bias", "first_position_win_rate"), ("position_bias", "n"),
                                    GateThreshold(min=0.45, max=0.55), ideal=0.5, mcnemar=True),
    "first_position_flip_share": Gate(("position_bias", "first_position_flip_share"), ("position_bias", "n_flips"),
                                      GateThreshold(min=0.3, max=0.7), ideal=0.5, mcnemar=True),
    "swap_consistency": Gate(("consistency", "swap_consistency"), ("consistency", "n_swap"), GateThreshold(min=0.8),
                             ideal=1.0, null="threshold"),
    "template_flip_rate": Gate(("probes", "template", "flip_rate"), ("probes", "template", "n"), GateThreshold(max=0.2),
                               ideal=0.0, null="threshold"),
    # Off unless audit.gates names them: they need a calibration (`prefcurate calibrate`) of the store's judge.
    "human_agreement": Gate(("calibration", "agreement"), ("calibration", "agreement_n"), GateThreshold(min=0.7),
                            ideal=1.0, null="threshold", optional=True, missing="calibration"),
    "human_kappa": Gate(("calibration", "kappa"), ("calibration", "kappa_n"), GateThreshold(min=0.4), ideal=1.0,
                        null="threshold", proportion=False, optional=True, missing="calibration"),
}
# McNemar's counts: swapped comparisons the first-shown response won twice, and the second-shown.
MCNEMAR = (("position_bias", "first_twice"), ("position_bias", "second_twice"))


def lookup(metrics: dict, path: tuple[str, ...]):
    """The value at ``path`` in the audit's JSON, None where it has none."""
    for key in path:
        if not isinstance(metrics, dict) or key not in metrics:
            return None
        metrics = metrics[key]
    return metrics


def beside(metrics: dict, path: tuple[str, ...], suffix: str):
    """What sits beside a metric: its _ci, _clusters, _se."""
    return lookup(metrics, path[:-1] + (path[-1] + suffix,))


def _bound(threshold: GateThreshold, value: float) -> float:
    """The threshold on the side of ``value`` (the nearer one when it is within both)."""
    bounds = [b for b in (threshold.min, threshold.max) if b is not None]
    return min(bounds, key=lambda b: abs(b - value))


def _se_at(gate: Gate, at: float, value: float, se: float | None, n: int) -> float | None:
    """The estimate's standard error were the truth ``at``: a proportion's from its binomial variance there,
    inflated by the design effect (the clustered variance over the binomial one) measured at ``value``;
    any other metric's as measured."""
    if not gate.proportion:
        return se
    naive = value * (1 - value) / n
    deff = se ** 2 / naive if se and naive > 0 else 1.0
    return math.sqrt(max(at * (1 - at), 1e-12) / n * max(deff, 1.0))


def hypothesis_test(gate: Gate, threshold: GateThreshold, value: float, se: float | None, n: int, clusters: int,
                    discordant: tuple[int, int] | None, alpha: float) -> tuple[float | None, float | None, float]:
    """(the p-value against the gate's null, the MDE, the tolerance the MDE is held to); no p-value nor MDE
    without a standard error (fewer than two prompts). Statistics over k prompts are read as t with k - 1
    degrees of freedom."""
    tolerance = abs(_bound(threshold, gate.ideal) - gate.ideal)
    sided, null = (1, _bound(threshold, value)) if gate.null == "threshold" else (2, gate.ideal)
    se_null, df = _se_at(gate, null, value, se, n), max(clusters - 1, 1)
    if gate.mcnemar and discordant is not None:
        return (binomial_p(discordant[0], sum(discordant)), mde(se_null, alpha, df=df) if se_null is not None else None,
                tolerance)
    if se_null is None:
        return None, None, tolerance
    # One-sided: how far the estimate lies on the failing side of the threshold.
    away = value - null if sided == 2 else (value - null if threshold.max is not None else null - value)
    p = statistic_p(away / se_null, df, sided) if se_null > 0 else float(away <= 0 if sided == 1 else away == 0)
    return p, mde(se_null, alpha, sided, df), tolerance


def judge_gate(gate: Gate, threshold: GateThreshold, metrics: dict, alpha: float) -> dict:
    """The gate's estimate, interval, n, prompts, p-value and MDE; its status waits for the q-values."""
    value, ci = lookup(metrics, gate.path), beside(metrics, gate.path, "_ci")
    n, clusters = lookup(metrics, gate.n_path) or 0, beside(metrics, gate.path, "_clusters") or 0
    out = {"value": value, "ci": ci, "threshold": threshold.model_dump(), "n": n, "clusters": clusters,
           "p": None, "q": None, "mde": None, "tolerance": None}
    if value is None or ci is None or not n:
        return out
    discordant = tuple(lookup(metrics, path) or 0 for path in MCNEMAR) if gate.mcnemar else None
    out["p"], out["mde"], out["tolerance"] = hypothesis_test(gate, threshold, value, beside(metrics, gate.path, "_se"), n,
                                                             clusters or n, discordant, alpha)
    return out


def status(gate: dict, alpha: float) -> dict:
    """failed, inconclusive (with the n that would bring the MDE within the tolerance) or passed."""
    if gate["p"] is None:
        return {"status": "inconclusive", "n_needed": None}
    t, value = gate["threshold"], gate["value"]
    beyond = (t["min"] is not None and value < t["min"]) or (t["max"] is not None and value > t["max"])
    if beyond and gate["q"] < alpha:
        return {"status": "failed"}
    if gate["mde"] is not None and gate["mde"] > gate["tolerance"]:
        # The MDE shrinks as 1/sqrt(n).
        return {"status": "inconclusive", "n_needed": math.ceil(gate["n"] * (gate["mde"] / gate["tolerance"]) ** 2)
                if gate["tolerance"] > 0 else None}
    return {"status": "inconclusive", "n_needed": None} if beyond else {"status": "passed"}


def evaluate_gates(metrics: dict, overrides: dict[str, GateThreshold] | None = None,
                   alpha: float = 0.05) -> tuple[dict, bool, int]:
    """(gates by name, passed: no gate failed, how many were inconclusive). An optional gate applies when
    ``overrides`` names it (with its default threshold if the override sets no bound)."""
    overrides = overrides or {}
    applied = {name: (gate, _threshold(gate, overrides.get(name))) for name, gate in DEFAULT_GATES.items()
               if not gate.optional or name in overrides}
    gates = {name: judge_gate(gate, threshold, metrics, alpha) for name, (gate, threshold) in applied.items()}
    for name, q in benjamini_hochberg({name: g["p"] for name, g in gates.items()}).items():
        gates[name]["q"] = q
        gates[name] |= status(gates[name], alpha)
        gate = applied[name][0]
        if gate.missing and gates[name]["value"] is None:  # a required measurement that was never made
            gates[name] |= {"status": "failed", "how": lookup(metrics, (gate.missing, "how"))}
    statuses = [g["status"] for g in gates.values()]
    return gates, "failed" not in statuses, statuses.count("inconclusive")


def _threshold(gate: Gate, override: GateThreshold | None) -> GateThreshold:
    return override if override is not None and (override.min is not None or override.max is not None) else gate.threshold


# What each gate's metric says, in words; `{v}` is its value.
GATE_WORDS: dict[str, str] = {
    "opener_injection_shift": "prepending an opener such as \"Certainly!\" moved a score by {v:+.2f} points on average",
    "opener_injection_flip_rate": "an injected opener flipped {v:.0%} of the pairs' verdicts",
    "padding_flip_rate": "content-free padding flipped {v:.0%} of the pairs' verdicts",
    "p_chosen_longer": "the chosen response was the longer one in {v:.0%} of the pairs",
    "null_response_score": "a content-free answer scored {v:.2f} on average",
    "first_position_win_rate": "the response shown first won {v:.0%} of the pairwise verdicts",
    "first_position_flip_share": "of the verdicts that changed with the order, the first-shown response won {v:.0%}",
    "swap_consistency": "the verdict survived swapping the order in {v:.0%} of the pairs",
    "template_flip_rate": "rewording the rubric's instructions changed {v:.0%} of the probed pairs' verdicts",
    "human_agreement": "the judge agreed with people on {v:.0%} of the labelled pairs they did not call a tie",
    "human_kappa": "the judge's Cohen's kappa with people over a, b and tie was {v:.2f}",
}


def gate_sentence(name: str, gate: dict) -> str:
    """One line a person can read: the status, what was measured, the test, and what the gate allows."""
    t = gate["threshold"]
    pct = "{v:.0%}" in GATE_WORDS.get(name, "")
    show = (lambda x: f"{x:.0%}") if pct else (lambda x: f"{x:.2f}")
    allowed = (f"between {show(t['min'])} and {show(t['max'])}" if t["min"] is not None and t["max"] is not None
               else f"at least {show(t['min'])}" if t["min"] is not None else f"at most {show(t['max'])}")
    if gate["value"] is None:
        why = gate.get("how") or "nothing to measure"
        return f"{gate['status']:<12} {name}: {why} (allowed: {allowed})"
    said = GATE_WORDS.get(name, name + " was {v:.3g}").format(v=gate["value"])
    lo, hi = gate["ci"]
    prompts = f" over {gate['clusters']} prompts" if gate.get("clusters") else ""  # older stored audits did not count them
    # The MDE is a distance from the null: percentage points for a share.
    effect = f"{gate['mde'] * 100:.0f} points" if pct and gate.get("mde") is not None else f"{gate.get('mde') or 0:.2f}"
    tested = (f"; q={gate['q']:.2g}, smallest detectable effect {effect}" if gate.get("q") is not None
              and gate.get("mde") is not None else "")
    more = f"; about n={gate['n_needed']} would detect a bias of the tolerance" if gate.get("n_needed") else ""
    return (f"{gate['status']:<12} {said} (95% interval {show(lo)} to {show(hi)}, n={gate['n']}{prompts}{tested}; "
            f"allowed: {allowed}{more})")
