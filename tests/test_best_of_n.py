"""`prefcurate best-of-n`: the judge's best of the first N candidates per prompt, and the majority answer;
the curve's pass rates against an independent count over the stored scores and checks, and the SFT
snapshot of what is kept."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import yaml
from conftest import RUBRIC, claude_config, context, seed_scored

from prefcurate import checks
from prefcurate.store import Store


def test_best_of_n_picks_the_stored_argmax_and_votes_the_majority(cli, db, tmp_path):
    rubric = yaml.safe_load(RUBRIC.read_text()) | {"checks": [{"name": "right_number", "kind": "numeric_answer"}]}
    (tmp_path / "checked.yaml").write_text(yaml.safe_dump(rubric))
    config = claude_config(tmp_path / "c.yaml", {"model": "test-judge", "rubric": str(tmp_path / "checked.yaml")})
    # Prompt i asks for i + 40. Four samples each: the judge likes the wrong "41" best on even prompts,
    # while three of the four samples give the right answer on prompts divisible by 3.
    groups = {}
    for i in range(10):
        right, wrong = f"{i} + 40 = {i + 40}", f"I think {i + 41}"
        votes = [right, right, right, wrong] if i % 3 == 0 else [wrong, right, wrong, wrong]
        scores = [5.0, 4.0, 3.0, 9.0] if i % 2 == 0 else [2.0, 8.0, 3.0, 1.0]
        groups[f"what is {i} + 40?"] = list(zip(votes, scores))
    with Store(db) as store:
        seed_scored(store, groups)
        store.execute("UPDATE prompts SET metadata = json_object('reference', "
                      "(regexp_extract(prompt_text, '(\\d+) \\+', 1)::INTEGER + 40)::VARCHAR, 'split', "
                      "CASE WHEN prompt_text LIKE '%9 +%' THEN 'heldout' ELSE 'train' END)")
        checks.run(store, context(judge={"backend": "anthropic", "model": "test-judge", "rubric": str(tmp_path / "checked.yaml")}))
        # Independently: per prompt, the argmax of the stored scores among the first N samples, and its check.
        independent = {n: store.scalar("""
            WITH firsts AS (SELECT c.prompt_id, c.candidate_id, s.overall FROM candidates c JOIN v_scores s USING (candidate_id)
                            WHERE c.sample_index < ?)
            SELECT avg(k.passed::INTEGER) FROM (SELECT prompt_id, arg_max(candidate_id, overall) AS pick FROM firsts GROUP BY prompt_id) b
            JOIN candidate_checks k ON k.candidate_id = b.pick""", [n]) for n in (1, 2, 4)}

    result = cli("best-of-n", config, "--ns", "1,2,4,8", "--json", "--db", db)
    assert result.exit_code == 0, result.output
    points = {p["n"]: p for p in json.loads(result.output)["curve"]}
    for n in (1, 2, 4):
        assert points[n]["prompts"] == 10 and points[n]["pass_rate"] == independent[n]
    assert points[8]["prompts"] == 0 and points[8]["pass_rate"] is None  # no prompt has 8 samples
    # Of 4: the judge picks sample 3 (wrong) on even prompts and sample 1 (right) on odd ones; the majority
    # is right exactly on the prompts divisible by 3.
    assert points[4]["pass_rate"] == 0.5 and points[4]["majority_pass_rate"] == 0.4
    assert points[4]["mean_score"] == (5 * 9.0 + 5 * 8.0) / 10

    # What is kept of the 4 samples, frozen for SFT: the majority answer, since every prompt has a reference.
    snapshot_id = json.loads(result.output)["snapshot_id"]
    folder = db.parent / "snapshots" / snapshot_id
    rows = [r for split in ("train", "test") for r in pq.read_table(folder / f"{split}.parquet").to_pylist()]
    assert len(rows) == 10 and cli("snapshot", "verify", snapshot_id, "--db", db).exit_code == 0
    for r in rows:
        i = int(r["messages"][0]["content"].split()[2])
        assert r["messages"][1] == {"role": "assistant", "content": f"{i} + 40 = {i + 40}" if i % 3 == 0 else f"I think {i + 41}"}
    refused = cli("train", "dpo", "--snapshot", snapshot_id, "--db", db)
    assert refused.exit_code == 2 and "not preference pairs" in refused.output

    heldout = json.loads(cli("best-of-n", config, "--ns", "4", "--split", "heldout", "--no-snapshot", "--json",
                             "--db", db).output)
    assert heldout["curve"] == [{"n": 4, "prompts": 1, "pass_rate": 1.0, "pass_rate_ci": [1.0, 1.0], "mean_score": 8.0,
                                 "majority_pass_rate": 1.0}]
    assert heldout["snapshot_id"] is None
    # Each curve is stored; the latest of each judge, rubric and split is v_best_of_n, which the report plots.
    with Store(db) as store:
        assert store.scalar("SELECT count(DISTINCT run_id) FROM best_of_n") == 2
        latest = store.query("SELECT split, n, pass_rate, majority_pass_rate FROM v_best_of_n ORDER BY split NULLS FIRST, n")
    assert [(r["split"], r["n"]) for r in latest] == [(None, 1), (None, 2), (None, 4), (None, 8), ("heldout", 4)]
    assert [r["pass_rate"] for r in latest[:3]] == [independent[n] for n in (1, 2, 4)]
    report = tmp_path / "report.html"
    assert cli("audit", "--config", config, "--html", report, "--db", db).exit_code == 0
    page = report.read_text()
    assert "Best of N: pass rate of the answer kept, against GRPO at N = 1" in page
    assert "best of 4 (heldout prompts)" in page and "majority answer of N" in page
    bad = cli("best-of-n", config, "--ns", "1,two", "--db", db)
    assert bad.exit_code == 2 and "--ns" in bad.output
