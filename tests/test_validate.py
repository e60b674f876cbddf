"""The audit's statistics checked: the tests behind the gates against known values, and
`prefcurate validate`, which audits simulated judges with planted biases and says whether the right
gates failed."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from prefcurate.audit.intervals import cluster_se, mean
from prefcurate.audit.significance import benjamini_hochberg, binomial_p, mde, quantile, statistic_p


def test_the_tests_behind_the_gates_give_the_textbook_values():
    # McNemar's exact test: 2 of 12 discordant pairs one way is P(X <= 2) + P(X >= 10) for X ~ Bin(12, 1/2).
    assert binomial_p(2, 12) == pytest.approx(2 * sum(math.comb(12, k) for k in range(3)) / 2 ** 12)
    assert binomial_p(6, 12) == pytest.approx(1.0) and binomial_p(0, 0) == 1.0
    assert statistic_p(1.959964) == pytest.approx(0.05, abs=1e-6) and statistic_p(1.644854, sided=1) == pytest.approx(0.05, abs=1e-6)
    # Student's t, from the tables: t[0.975] with 10 and 5 degrees of freedom, t[0.95] with 4.
    assert statistic_p(2.228139, 10) == pytest.approx(0.05, abs=1e-6) and statistic_p(2.570582, 5) == pytest.approx(0.05, abs=1e-6)
    assert quantile(0.95, 4) == pytest.approx(2.131847, abs=1e-5) and quantile(0.975, 1000) == pytest.approx(1.959964, abs=1e-5)
    # Benjamini and Hochberg's own example ordering: q_(i) = min over j >= i of p_(j) * m / j.
    q = benjamini_hochberg({"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.5, "e": None})
    assert q.pop("e") is None and q == pytest.approx({"a": 0.04, "b": 0.04 * 4 / 3, "c": 0.04 * 4 / 3, "d": 0.5})
    assert mde(0.01, 0.05) == pytest.approx((1.959964 + 0.841621) * 0.01, rel=1e-5)


def test_a_cluster_robust_standard_error_counts_prompts_not_rows():
    rng = np.random.default_rng(0)
    x = rng.normal(size=200)
    # Every row its own prompt: the textbook standard error of a mean.
    assert cluster_se(x, mean, None) == pytest.approx(np.std(x, ddof=1) / math.sqrt(200))
    # Each prompt's row repeated 4 times: four times the rows, the same evidence, the same standard error.
    assert cluster_se(np.repeat(x, 4), mean, np.repeat(np.arange(200), 4)) == pytest.approx(np.std(x, ddof=1) / math.sqrt(200))


def test_validate_audits_simulated_judges_and_the_right_gates_fail(cli):
    result = cli("validate", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    runs = {r["scenario"]: r for r in summary["first_seed"]}
    assert set(runs) == {"unbiased", "position", "close-call position", "length", "opener", "padding", "instability",
                         "order inconsistency", "null response", "wording"}
    assert all(r["gates_right"] for r in runs.values()) and runs["unbiased"]["gates_failed"] == []
    assert runs["length"]["gates_failed"] == ["p_chosen_longer"]
    # The close-call judge barely moves the overall first-position win rate (inside 0.45-0.55): only the share
    # among the verdicts that changed with the order catches it.
    close = {m["metric"]: m for m in runs["close-call position"]["metrics"]}
    assert close["first_position_win_rate"]["truth"] == pytest.approx(0.5 + (1 / 6) * 0.5 / 2)
    assert runs["close-call position"]["gates_failed"] == ["first_position_flip_share"]
    # Each metric measured over 300 rows or more sits near what the planted biases imply.
    for run in runs.values():
        for m in run["metrics"]:
            if m["n"] >= 300:
                assert m["estimate"] == pytest.approx(m["truth"], abs=0.1), (run["scenario"], m)
    assert 0.8 <= summary["coverage_pooled"] <= 1.0


def test_validate_fails_when_the_audit_cannot_see_a_bias(cli, monkeypatch):
    from prefcurate.audit import gates

    # An audit whose tests never reject (every p-value 1): no biased judge fails, and validate says so.
    monkeypatch.setattr(gates, "binomial_p", lambda *a, **k: 1.0)
    monkeypatch.setattr(gates, "statistic_p", lambda *a, **k: 1.0)
    result = cli("validate", "--prompts", "100")
    assert result.exit_code == 1
    assert "NO" in result.output
