"""The training guards (train/guards.py): a run whose held-out NLL rises past eval.max_nll_rise stops
and keeps the last policy within it; one whose sampled length or opener rate rose past its bound,
with the interval excluding zero, is drifted (exit code 3)."""

from __future__ import annotations

from prefcurate.train.config import EvalSettings


def drift(estimate: float, lo: float, hi: float) -> dict:
    return {"estimate": estimate, "ci": [lo, hi], "prompts": 32}


def test_drift_needs_the_bound_passed_and_the_interval_clear_of_zero():
    from prefcurate.train.guards import drift_breaches

    e, base = EvalSettings(max_length_drift=0.25, max_opener_drift=0.1), {"sample_length": 40.0}
    assert drift_breaches(e, base, {"length_drift": drift(12.0, 3.0, 21.0)}) == [
        "sample_length rose +12.0 tokens (95% interval +3.0 to +21.0), beyond eval.max_length_drift 25% of the "
        "base's 40.0"]
    assert drift_breaches(e, base, {"length_drift": drift(12.0, -1.0, 25.0)}) == []  # could be no drift at all
    assert drift_breaches(e, base, {"length_drift": drift(8.0, 2.0, 14.0)}) == []  # within 25% of 40 tokens
    assert drift_breaches(e, base, {"opener_drift": drift(0.3, 0.15, 0.45)})[0].startswith("opener_rate rose +0.30")
    off = EvalSettings(max_length_drift=None, max_opener_drift=None)
    assert drift_breaches(off, base, {"length_drift": drift(30, 20, 40), "opener_drift": drift(1, 1, 1)}) == []


class ScriptedEvaluations:
    """Evaluations whose held-out NLL follows a script, with a trainer that saves a marker file."""

    def __init__(self, nll: dict[str, float], cfg):
        self.nll, self.cfg, self.results = nll, cfg, {}
        self.base = {"heldout_sft_nll": nll["before"], "sample_length": 10.0}
        outer = self

        class Trainer:
            def save_model(self, folder: str) -> None:
                from pathlib import Path

                Path(folder).mkdir(parents=True, exist_ok=True)
                (Path(folder) / "saved_at").write_text(outer.last)
        self.trainer = Trainer()

    def run(self, when: str) -> dict:
        self.last = when
        result = {"heldout_sft_nll": self.nll[when], "length_drift": drift(4.0, 1.0, 7.0)}
        for k, v in result.items():
            self.results.setdefault(k, {})[when] = v
        return result

    def at(self, when: str) -> dict:
        return {k: v[when] for k, v in self.results.items() if when in v}


def test_a_stop_keeps_the_last_policy_within_the_forgetting_guard(tmp_path):
    from types import SimpleNamespace

    from prefcurate.train.config import TrainConfig
    from prefcurate.train.guards import Guard

    cfg = TrainConfig(eval={"every_steps": 2, "max_nll_rise": 0.2, "max_length_drift": 0.25})
    evaluations = ScriptedEvaluations({"before": 2.0, "step 2": 2.1, "step 4": 2.5}, cfg)
    guard = Guard(evaluations, tmp_path / "kept")
    control = SimpleNamespace(should_training_stop=False)
    for step in (1, 2, 3, 4):
        guard.on_step_end(None, SimpleNamespace(global_step=step, max_steps=10), control)
        if control.should_training_stop:
            break
    assert step == 4 and guard.kept == "step 2" and (tmp_path / "kept" / "saved_at").read_text() == "step 2"
    verdict = guard.verdict()
    assert verdict["status"] == "stopped" and verdict["kept"] == "step 2"
    assert verdict["stopped"] == ("step 4: held-out NLL rose +0.500 nats/token over the base's 2.000, "
                                  "beyond eval.max_nll_rise 0.2")
    # The kept policy drifted too: +4 tokens over a base of 10 is past 25%, and the interval is clear of 0.
    assert verdict["drifted"] and verdict["drifted"][0].startswith("sample_length rose +4.0 tokens")


def test_a_run_within_its_guards_keeps_the_final_policy(tmp_path):
    from types import SimpleNamespace

    from prefcurate.train.config import TrainConfig
    from prefcurate.train.guards import Guard

    cfg = TrainConfig(eval={"every_steps": 1, "max_length_drift": None})
    evaluations = ScriptedEvaluations({"before": 2.0, "step 1": 2.05, "after": 2.1}, cfg)
    guard = Guard(evaluations, tmp_path / "kept")
    guard.on_step_end(None, SimpleNamespace(global_step=1, max_steps=2), SimpleNamespace(should_training_stop=False))
    guard.on_step_end(None, SimpleNamespace(global_step=2, max_steps=2), SimpleNamespace(should_training_stop=False))
    assert guard.check("after", final=True) and guard.verdict() == {"status": "ok", "stopped": None, "kept": "after",
                                                                     "drifted": []}
    assert list(evaluations.results["heldout_sft_nll"]) == ["step 1", "after"]  # the last step's is "after"
