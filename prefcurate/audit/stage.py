"""Stage 7, audit (also `prefcurate audit`, and the first step of every `snapshot create`): the
judge's bias, probes and consistency, a flag per suspect pair, and the gates, over the whole store.

An audit's id derives from what it audited (its metrics, its flags and its settings), so auditing
an unchanged store again stores nothing new: the same audit row is only stamped with the new time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prefcurate.audit.consistency import consistency_metrics, noise_estimate
from prefcurate.audit.flags import by_stage, compute_flags, save_flags
from prefcurate.audit.gates import evaluate_gates
from prefcurate.audit.intervals import BOOTSTRAP, UNIT
from prefcurate.audit.metrics import (
    check_rates,
    failure_rates,
    margin_distribution,
    probe_metrics,
    self_preference,
    store_metrics,
)
from prefcurate.audit.report import markdown
from prefcurate.calibrate import store_calibration
from prefcurate.context import RunContext
from prefcurate.ids import content_id
from prefcurate.review import review_agreement
from prefcurate.stats import StageStats
from prefcurate.store import Store, utc_now

# How every interval of the audit was made.
INTERVALS = {"method": "percentile bootstrap, 95%", "resampled": UNIT, "replicates": BOOTSTRAP}
# The rows an audit looks at: counts of snapshots and training runs are not part of what it audited.
AUDITED = ("prompts", "prompts skipped", "candidates", "judgments", "judgment failures", "pairs")


@dataclass
class AuditStats(StageStats):
    audit_id: str = ""
    passed: bool = False
    pairs_fit: int = 0
    pairs_flagged: int = 0
    metrics: dict = field(default_factory=dict, repr=False, metadata={"summary": False})  # what `audit --json` prints

    def markdown(self) -> str:
        return markdown(self.metrics)


def run(store: Store, ctx: RunContext) -> AuditStats:
    m = full_audit(store, ctx)
    return AuditStats(m["audit_id"], m["passed"], m["n_fit"], m["n_pairs"] - m["n_fit"], m)


def full_audit(store: Store, ctx: RunContext) -> dict:
    """Measure, flag and gate the store with the run's ``audit`` settings; store the audit and its flags;
    return every number."""
    cfg = ctx.config.audit
    metrics = store_metrics(store, ctx.phrases) | {"probes": probe_metrics(store)}
    metrics["consistency"] = consistency_metrics(store)
    metrics["noise_estimate"] = noise_estimate(store)
    metrics["self_preference"] = self_preference(store, cfg.judge_family)
    metrics["failures"] = failure_rates(store)
    metrics["margins"] = margin_distribution(store)
    metrics["calibration"] = store_calibration(store)
    metrics["reviews"] = review_agreement(store)
    checks = ctx.rubric.checks if ctx.rubric else []
    metrics["checks"] = check_rates(store, checks)
    counts = store.counts()
    metrics["counts"] = {k: counts[k] for k in AUDITED}
    metrics["intervals"] = INTERVALS
    flagged = compute_flags(store, cfg.low_margin, cfg.duplicate_jaccard, cfg.repetition_max, cfg.judge_family,
                            [c.key for c in checks])
    metrics["flags"] = flagged["counts"]
    metrics["flags_by_stage"] = by_stage(flagged["counts"])
    metrics["blocking_flags"] = list(cfg.blocking_flags)
    metrics["gates"], metrics["passed"], metrics["n_inconclusive"] = evaluate_gates(metrics, cfg.gates, cfg.alpha)
    audit_cfg = cfg.model_dump(mode="json")
    # Rounded: a parallel sum may differ in its last bits between two runs over the same rows.
    metrics["audit_id"] = audit_id = content_id("audit", _rounded(metrics), flagged["fingerprint"], audit_cfg)
    with store.transaction():
        metrics["n_fit"] = save_flags(store, audit_id, cfg.blocking_flags)
        # Stored again with a new time when the same audit recurs, so it stays the latest (v_flags).
        store.insert("audits", [{"audit_id": audit_id, "metrics": metrics, "gates": metrics["gates"],
                                 "passed": metrics["passed"], "run_id": ctx.run_id, "created_at": utc_now(),
                                 "config": audit_cfg, "n_pairs": metrics["n_pairs"], "n_fit": metrics["n_fit"]}],
                     replace_if="true", key="audit_id")
    return metrics


def _rounded(value):
    if isinstance(value, float):
        return float(f"{value:.9g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value
