"""bench/bias_propagation.py: the experiment that trains on a planted judge's pairs, raw, curated and
unbiased. Its --quick mode runs here on the tiny model, in the session's vLLM engine and Prefect
harness: the wiring and the bookkeeping, not the effect (a random model learns nothing to measure)."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest
from conftest import ROOT

from prefcurate.judge.probes import INJECTED_OPENER
from prefcurate.testing.planted import PlantedJudge, quality


def load_bench():
    spec = importlib.util.spec_from_file_location("bias_propagation", ROOT / "bench" / "bias_propagation.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


def test_a_planted_judge_adds_exactly_its_bonuses():
    judge, fair = PlantedJudge(length_bonus=1.0, opener_bonus=3.0), PlantedJudge()
    text = "Paris is the capital of France." * 4
    assert judge.points(text, 1, 10) - fair.points(text, 1, 10) == pytest.approx(len(text) / 100)
    # An injected opener moves the quality not at all: the bonus and the opener's characters do.
    shifted = judge.points(INJECTED_OPENER + text, 1, 10) - judge.points(text, 1, 10)
    assert shifted == pytest.approx(3.0 + len(INJECTED_OPENER) / 100)
    assert quality(INJECTED_OPENER + text) == quality(text) and 0 <= quality(text) <= 1


@pytest.fixture(scope="module")
def quick_results(prefect_harness, tiny_model, tmp_path_factory):
    bench = load_bench()
    out = tmp_path_factory.mktemp("bias-propagation")
    results = bench.run(bench.Settings.quick(str(tiny_model)), out, quick=True)
    return bench, out, results


def test_quick_run_writes_drift_and_nll_rise_for_every_arm(quick_results):
    bench, out, results = quick_results
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk == json.loads(json.dumps(results))
    for arm in ("raw", "curated", "reference"):
        for drift in ("length_drift", "opener_drift"):
            d = on_disk[arm][drift]
            assert d["ci"][0] <= d["estimate"] <= d["ci"][1] and d["prompts"] == on_disk["sizes"]["heldout_prompts"]
        assert isinstance(on_disk[arm]["nll_rise"], float)
        assert (arm == "reference") != ("length_over_reference" in on_disk[arm])
        assert on_disk["training"][arm]["steps"] == on_disk["settings"]["steps"]
    assert [t["held"] for t in on_disk["targets"]][-1] is None  # no wall-time verdict in quick mode
    answers = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    assert len(answers) == 4 * on_disk["sizes"]["heldout_prompts"]  # the base model and three arms
    for metric in ("length", "opener"):
        assert (out / f"{metric}_drift.svg").read_text().startswith("<svg")


def test_the_planted_bias_reaches_the_raw_pairs_and_the_audit_measures_it(quick_results):
    bench, out, results = quick_results
    s, data = bench.Settings.quick(""), results["data"]
    raw, curated, reference = data["raw"], data["curated"], data["reference"]
    # The raw arm's chosen answers open with an opener far more often than its rejected ones.
    assert raw["chosen_opener_rate"] > raw["rejected_opener_rate"] + 0.3
    assert "opener_injection_shift" in raw["failed_gates"] and not reference["failed_gates"]
    # The opener probe measures the planted bonus (plus the injected opener's characters, within rounding).
    planted = s.opener_bonus + s.length_bonus * len(INJECTED_OPENER) / 100
    assert raw["measured_opener_shift"] == pytest.approx(planted, abs=0.6)
    # The padding probe measures the planted length bonus per 100 characters (a few probes, whole points).
    assert 0 < raw["measured_length_shift"] < 3 * s.length_bonus
    # The curated arm subtracts what the audit measured, and its chosen answers open less often.
    assert curated["penalties"] == {"opener_penalty": pytest.approx(raw["measured_opener_shift"], abs=1e-3),
                                    "length_penalty": pytest.approx(raw["measured_length_shift"], abs=1e-3)}
    assert curated["chosen_opener_rate"] < raw["chosen_opener_rate"]
