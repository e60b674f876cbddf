"""SmolLM2-135M-Instruct, the real model `make setup` prepares: it answers in English through the
vLLM generator, the local judge reads a score for every criterion from it, and a DPO step trains
on it. Slow: its own vLLM engine (about 30 s to start) beside the session's tiny one."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import ROOT, RUBRIC, context

from prefcurate import models

pytestmark = pytest.mark.slow
SMOLLM2 = ROOT / models.default_dir("smollm2-135m-instruct")
ENGINE = {"model": str(SMOLLM2), "dtype": "float32", "max_model_len": 2048, "enforce_eager": True}


def test_smollm2_answers_in_english_through_the_vllm_generator():
    from prefcurate.config import VLLMGeneratorConfig
    from prefcurate.generate.base import GenRequest
    from prefcurate.generate.vllm_backend import VLLMGenerator

    generator = VLLMGenerator(VLLMGeneratorConfig(backend="vllm", n=1, temperature=0.0, max_tokens=24, **ENGINE))
    results = []
    question = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
    generator.generate([GenRequest("capital", question, seed=0)], results.append)
    (answer,) = results[0].samples
    assert "Paris" in answer.text, answer.text


def test_the_local_judge_reads_every_criterion_of_smollm2(tmp_path):
    from prefcurate.config import LocalJudgeConfig
    from prefcurate.judge.local import LocalJudge
    from prefcurate.judge.verdict import JudgeTask
    from prefcurate.rubric import load_rubric

    rubric = load_rubric(RUBRIC)
    judge = LocalJudge(LocalJudgeConfig(rubric=str(RUBRIC), **ENGINE), rubric)
    question = [{"role": "user", "content": "What is the capital of France?"}]
    scored, compared = judge.judge([JudgeTask(question, ("The capital of France is Paris.",)),
                                    JudgeTask(question, ("Paris.", "The capital of France is Lyon."))])
    assert scored.status == "ok" and set(scored.scores) == {c.name for c in rubric.criteria}
    assert all(rubric.scale.min <= s <= rubric.scale.max for s in scored.scores.values())
    raw = json.loads(scored.raw_response)
    # Each score is the mean of a distribution over the whole scale, given that the answer is a score;
    # how much probability the model put on a score at all is recorded beside it (a 135M judge puts
    # little: most of it goes to words).
    for name, r in raw.items():
        assert set(r["distribution"]) == {str(s) for s in range(rubric.scale.min, rubric.scale.max + 1)}
        assert abs(sum(r["distribution"].values()) - 1) < 1e-6 and 0 < r["score_mass"] <= 1
        assert scored.scores[name] == pytest.approx(sum(int(s) * p for s, p in r["distribution"].items()))
    assert compared.status == "ok" and compared.winner in ("first", "second")


def test_one_dpo_step_on_smollm2(pointwise_store, tmp_path):
    from prefcurate.audit.flags import DEFAULT_BLOCKING
    from prefcurate.snapshot import create_snapshot
    from prefcurate.store import Store
    from prefcurate.train.config import TrainConfig
    from prefcurate.train.dpo import train_dpo

    db = tmp_path / "store.duckdb"
    shutil.copy(pointwise_store, db)
    cfg = TrainConfig(model=str(SMOLLM2), max_steps=1, per_device_train_batch_size=2, max_length=128,
                      learning_rate=1e-4, output_root=str(tmp_path / "runs"),
                      # generate samples one 8-token answer sooner than a vLLM engine with LoRA starts
                      eval={"samples_per_prompt": 1, "max_prompts": 1, "max_new_tokens": 8, "engine": "transformers"})
    ctx = context(audit={"blocking_flags": [f for f in DEFAULT_BLOCKING if f != "degenerate"]})
    with Store(db) as store:
        snapshot_id = create_snapshot(store, ctx, "smollm2", test_fraction=0.34, force=True).snapshot_id
        result = train_dpo(store, snapshot_id, cfg)
    assert result.metrics["steps"] == 1 and (result.adapter_dir / "adapter_model.safetensors").is_file()
    assert set(result.metrics["eval"]["opener_rate"]) == {"before", "after"}
    assert result.metrics["eval"]["sample_length"]["before"] > 0
