"""The bad-input corpus (tests/bad_inputs/cases.yaml): every case prints one line naming where
the problem is and what to do, exits with code 2, and leaves the store exactly as it was."""

from __future__ import annotations

import pytest
import yaml
from conftest import ROOT, table_checksums

CORPUS = ROOT / "tests" / "bad_inputs"
CASES = yaml.safe_load((CORPUS / "cases.yaml").read_text())


def test_the_corpus_has_at_least_twelve_cases():
    assert len(CASES) >= 12 and len({c["name"] for c in CASES}) == len(CASES)


@pytest.fixture(scope="module")
def populated_db(tmp_path_factory):
    """A store with prompts, candidates, judgments and pairs, so 'unchanged' means something."""
    import json

    from prefcurate.judgments import import_judgments
    from prefcurate.store import Store

    folder = tmp_path_factory.mktemp("bad-inputs")
    f = folder / "judgments.jsonl"
    f.write_text("".join(json.dumps({"prompt": f"q{i}", "a": f"answer {i}", "b": f"reply {i}", "judge": "j",
                                     "verdicts": [{"order": "ab", "winner": "a"}, {"order": "ba", "winner": "a"}]}) + "\n"
                         for i in range(5)))
    with Store(folder / "store.duckdb") as store:
        import_judgments(store, str(f))
    return folder / "store.duckdb"


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(case, cli, populated_db, monkeypatch):
    monkeypatch.chdir(ROOT)  # configs name their rubrics relative to the repository, as users' do
    args = [a.format(dir=CORPUS) for a in case["args"]]
    if not case.get("own_db"):
        args += ["--db", str(populated_db)]
    before = table_checksums(populated_db)
    result = cli(*args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert case["expect"] in lines[0], lines[0]
    assert table_checksums(populated_db) == before
