"""`prefcurate run CONFIG`: the Prefect flow runs every stage for real (vLLM generation, local
judge), and a rerun with the same config adds no rows and calls no model."""

from __future__ import annotations

import json

import pytest

from prefcurate.store import Store


def test_flow_run_fills_every_stage(pipeline_store):
    with Store(pipeline_store) as store:
        counts = store.counts()
        assert counts["prompts"] == 6 and counts["candidates"] == 18 and counts["pairs"] >= 3
        # Hybrid mode: every candidate scored, then every pair judged in both orders; then the probes.
        assert store.scalar("SELECT count(*) FROM judgments WHERE probe IS NULL") == 18 + 2 * counts["pairs"]
        assert counts["judgment failures"] == 0
        probes = dict(store.con.execute("SELECT probe, count(*) FROM judgments WHERE probe IS NOT NULL GROUP BY probe").fetchall())
        assert probes["swap"] == 2 * counts["pairs"] and probes["padding"] == counts["pairs"]
        assert probes["null_response"] == store.scalar("SELECT count(DISTINCT prompt_id) FROM pairs")
        verdicts = store.query("SELECT verdict, n_verdicts FROM v_pair_verdicts")
        assert len(verdicts) == counts["pairs"] and all(v["n_verdicts"] == 2 for v in verdicts)
        run = store.query("SELECT * FROM runs")[0]
        assert run["command"] == "run" and run["status"] == "ok"
        stats = json.loads(run["stats"])
        assert stats["generate"]["candidates_new"] == 18 and stats["judge"]["judged"] == 18
        v = stats["verify"]
        assert v["judged"] == 2 * counts["pairs"] and v["consistent"] + v["inconsistent"] + v["reversed"] == counts["pairs"]
        assert stats["pairs"]["pairs_new"] + stats["pairs"]["dropped_tie"] + stats["pairs"]["dropped_low_margin"] == 6
        # Every row carries the id of the run that wrote it.
        for table in ("prompts", "candidates", "judgments", "pairs"):
            assert store.scalar(f"SELECT count(DISTINCT run_id) FROM {table} WHERE run_id = ?", [run["run_id"]]) == 1
        v = store.query("SELECT * FROM v_pairs")[0]
        assert v["chosen_score"] - v["rejected_score"] == pytest.approx(v["margin"]) and v["chosen_chars"] > 0


def test_rerun_adds_nothing_calls_no_model_and_reads_the_rubric_once(pipeline_store, config_path, config_dict, cli,
                                                                      monkeypatch):
    from pathlib import Path

    from prefcurate.generate import vllm_backend
    from prefcurate.judge.local import LocalJudge

    def no_model(*args, **kwargs):
        raise AssertionError("a model was called on a rerun")

    monkeypatch.setattr(vllm_backend.VLLMGenerator, "generate", no_model)
    monkeypatch.setattr(LocalJudge, "__init__", no_model)
    read, real_read = [], Path.read_text
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: read.append(self.resolve()) or real_read(self, *a, **k))
    with Store(pipeline_store) as store:
        before = {t: n for t, n in store.counts().items()}

    result = cli("run", config_path, "--db", pipeline_store, "--quiet")
    assert result.exit_code == 0, result.output
    # Decided once: the config and its rubric are each read one time in the whole run, by its context.
    assert read.count(Path(config_dict["judge"]["rubric"]).resolve()) == 1 and read.count(config_path.resolve()) == 1
    assert "candidates_new=0" in result.output and "already_judged=18" in result.output and "todo=0" in result.output
    with Store(pipeline_store) as store:
        assert store.counts() == before
        assert store.scalar("SELECT count(*) FROM runs WHERE command = 'run' AND status = 'ok'") == 2


def test_run_with_bad_prompts_file_leaves_the_store_unchanged(pipeline_store, config_dict, tmp_path, cli):
    import yaml
    from conftest import table_checksums

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "fine"}\n{"prompt": 42}\n')
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump(config_dict | {"prompts": {"path": str(bad)}}))
    before = table_checksums(pipeline_store)
    with pytest.raises(Exception, match=f"{bad}:2: `prompt` must be a non-empty string"):
        from prefcurate.flows.curate import curate

        curate(str(cfg), str(pipeline_store))
    assert table_checksums(pipeline_store) == before


def test_the_flow_audits_and_publishes_a_markdown_artifact(pipeline_store, prefect_harness):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with Store(pipeline_store) as store:
        run = store.query("SELECT run_id, stats FROM runs WHERE command = 'run' ORDER BY started_at DESC LIMIT 1")[0]
        audit = store.query("SELECT * FROM audits WHERE run_id = ?", [run["run_id"]])[0]
        assert store.scalar("SELECT count(*) FROM pair_flags WHERE audit_id = ?", [audit["audit_id"]]) > 0
    assert json.loads(run["stats"])["audit"]["audit_id"] == audit["audit_id"]
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["prefcurate-audit"])))
    ours = [a for a in artifacts if f"audit {audit['audit_id']}" in a.data]  # other tests' flows publish theirs too
    assert ours and ours[0].type == "markdown"
    assert "| swap_consistency |" in ours[0].data and "## Flags" in ours[0].data
