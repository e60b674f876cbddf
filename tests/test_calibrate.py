"""`prefcurate calibrate`: the configured judge on human-labelled pairs, in both orders, against the
people's labels; and the human_agreement gate that makes a snapshot wait for it."""

from __future__ import annotations

import json

import pytest
from conftest import FIXTURES, claude_config, seed_scored, seeded_context, table_checksums

from prefcurate import pairs
from prefcurate.store import Store
from prefcurate.testing.messages_api import MessagesAPIServer, fenced_texts
from prefcurate.testing.planted import PlantedJudge

AUTOJ_FLAGS = ("--a-col", "response 1", "--b-col", "response 2", "--label-col", "label", "--a-wins", "0",
               "--b-wins", "1", "--tie", "2")
HUMAN = {0: "a", 1: "b", 2: "tie"}


@pytest.fixture
def labels(tmp_path):
    """The first 120 rows of the Auto-J pairwise fixture (14 of them ties), as people labelled them."""
    rows = [json.loads(line) for line in (FIXTURES / "autoj_pairwise.jsonl").read_text().splitlines()[:120]]
    path = tmp_path / "labels.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, rows


def independent_agreement(server: MessagesAPIServer, rows: list[dict]) -> tuple[float, int]:
    """Agreement with people from what the server answered: a pair's verdict is the one both orders
    agree on, else a tie; counted over the pairs people did not call a tie."""
    said = {tuple(fenced_texts(body)): answer["winner"] for body, answer in server.verdicts}
    agree = n = 0
    for r in rows:
        a, b = r["response 1"], r["response 2"]
        ab, ba = {"A": "a", "B": "b", "tie": "tie"}[said[(a, b)]], {"A": "b", "B": "a", "tie": "tie"}[said[(b, a)]]
        if HUMAN[r["label"]] != "tie":
            n += 1
            agree += (ab if ab == ba else "tie") == HUMAN[r["label"]]
    return agree / n, n


def test_calibrate_a_judge_with_a_planted_length_bias_on_the_autoj_fixture(cli, db, tmp_path, labels, monkeypatch):
    path, rows = labels
    config = claude_config(tmp_path / "claude.yaml")
    Store(db).close()
    before = table_checksums(db)
    with MessagesAPIServer(scorer=PlantedJudge(length_bonus=1.0)) as server:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-key")

        # Claude costs money: without --yes (or a --max-usd above the estimate) nothing is called or stored.
        refused = cli("calibrate", config, "--labels", path, *AUTOJ_FLAGS, "--db", db)
        assert refused.exit_code == 2 and "240 judge calls" in refused.output and "--yes" in refused.output
        assert server.requests == [] and table_checksums(db) == before
        assert cli("calibrate", config, "--labels", path, *AUTOJ_FLAGS, "--max-usd", "0.01", "--db", db).exit_code == 2

        result = cli("calibrate", config, "--labels", path, *AUTOJ_FLAGS, "--yes", "--json", "--db", db)
        assert result.exit_code == 0, result.output
        c = json.loads(result.output)
        assert len(server.requests) == 2 * len(rows) and c["calls"] == 240 and c["n"] == 120 and c["n_failed"] == 0
        agreement, n = independent_agreement(server, rows)
        assert c["agreement"] == pytest.approx(agreement) and c["agreement_n"] == n == 106
        lo, hi = c["agreement_ci"]
        assert lo < c["agreement"] < hi and c["agreement_clusters"] <= n
        # The planted judge prefers the longer answer whatever the order, more often than people do.
        assert c["swap_consistency"] == 1.0 and c["judge_p_longer"] > c["human_p_longer"]
        assert c["judge_p_longer"] > 0.75 and c["cost_usd"] > 0 and -1 <= c["kappa"] <= 1
        assert sum(sum(row.values()) for row in c["confusion"].values()) == 120

        # Asked again, nothing is paid twice: every verdict is stored under its content id.
        again = json.loads(cli("calibrate", config, "--labels", path, *AUTOJ_FLAGS, "--json", "--db", db).output)
        assert len(server.requests) == 240 and again["calls"] == 0 and again["agreement"] == c["agreement"]
    shown = cli("sql", "select n, agreement, judge from v_calibrations", "--db", db, "--json")
    assert [json.loads(line) for line in shown.output.splitlines()] == [{"n": 120, "agreement": c["agreement"], "judge": "anthropic:claude-sonnet-4-6"}]


def test_the_human_agreement_gate_waits_for_a_calibration_of_the_stores_judge(cli, db, tmp_path, labels, monkeypatch):
    path, _ = labels
    with Store(db) as store:
        # Half the rejected answers longer than the chosen, half shorter: no length gate in the way.
        seed_scored(store, {f"prompt {i}": [(f"good answer {i}", 8.0), (f"bad answer {i}" + " padded out" * (i % 2), 3.0)]
                            for i in range(20)})
        pairs.run(store, seeded_context())
    # The judge that made the store's pairs, with the gate on.
    config = claude_config(tmp_path / "gated.yaml", {"model": "test-judge"},
                           audit={"gates": {"human_agreement": {"min": 0.6}}})

    refused = cli("snapshot", "create", "--config", config, "--db", db)
    assert refused.exit_code == 2 and "human_agreement" in refused.output
    assert "no calibration of anthropic:test-judge" in refused.output and "prefcurate calibrate" in refused.output

    with MessagesAPIServer(scorer=PlantedJudge(length_bonus=1.0)) as server:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-key")
        calibrated = cli("calibrate", config, "--labels", path, *AUTOJ_FLAGS, "--yes", "--db", db)
        assert calibrated.exit_code == 0, calibrated.output
        assert "agreement" in calibrated.output

    accepted = cli("snapshot", "create", "--config", config, "--db", db)
    assert accepted.exit_code == 0, accepted.output
    audit = json.loads(cli("audit", "--config", config, "--json", "--db", db).output)
    gate = audit["gates"]["human_agreement"]
    assert gate["status"] == "passed" and gate["value"] == audit["calibration"]["agreement"] and gate["n"] == 106

    # The same calibration, held to a bar this judge is clearly below: the gate fails, and says so.
    strict = claude_config(tmp_path / "strict.yaml", {"model": "test-judge"}, audit={"gates": {"human_agreement": {"min": 0.9}}})
    failed = cli("snapshot", "create", "--config", strict, "--db", db)
    assert failed.exit_code == 2 and "human_agreement" in failed.output and "allowed min 0.9" in failed.output
    # Off by default: without it in audit.gates no gate reads the calibration.
    assert "human_agreement" not in json.loads(cli("audit", "--json", "--db", db).output)["gates"]


def test_the_test_server_reads_two_equal_responses_as_two():
    # The judge fences equal texts with the same tag: the server must still see two responses.
    from prefcurate.judge.render import pairwise_user_message
    from prefcurate.judge.verdict import JudgeTask

    message = pairwise_user_message(seeded_context().rubric, JudgeTask([{"role": "user", "content": "q"}], ("False.", "False.")))
    assert fenced_texts({"messages": [{"role": "user", "content": message}]}) == ["False.", "False."]
