"""`prefcurate import prompts FILE`: valid files are stored once; a bad line names file:line, exit 2,
and nothing is written."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import FIXTURES, table_checksums

from prefcurate.prompts import import_prompts
from prefcurate.store import Store


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_import_prompts_counts_new_and_duplicates(cli, tmp_path, db):
    f = write_jsonl(tmp_path / "p.jsonl", [
        {"prompt": "What is 2 + 2?", "id": "q1", "metadata": {"topic": "math"}},
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}]},
        {"prompt": "  What is 2 + 2?  "},  # the same prompt once whitespace is trimmed
    ])
    result = cli("import", "prompts", f, "--db", db)
    assert result.exit_code == 0, result.output
    assert "prompts: read 3, new 2, duplicates 1" in result.output

    again = cli("import", "prompts", f, "--db", db)
    assert "prompts: read 3, new 0, duplicates 1" in again.output
    with Store(db) as store:
        rows = store.query("SELECT prompt_text, source_id, metadata FROM prompts ORDER BY prompt_text")
    assert [r["prompt_text"] for r in rows] == ["Name a colour.", "What is 2 + 2?"]
    assert json.loads(rows[1]["metadata"]) == {"topic": "math"} and rows[1]["source_id"] == "q1"


BAD_LINES = [
    ('{"prompt": "ok"}\n{"prompt": "unterminated\n', 2, "invalid JSON"),
    ('{"prompt": ""}\n', 1, "`prompt[0].content` is empty"),
    ('{"text": "hi"}\n', 1, "unknown field(s) ['text']"),
    ('{"prompt": "a", "messages": [{"role": "user", "content": "b"}]}\n', 1, "give exactly one of `prompt`"),
    ('{"messages": [{"role": "robot", "content": "b"}]}\n', 1, "role` is 'robot'"),
    ('{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}\n', 1,
     "last message of `messages` must be from the user"),
    ('["a list"]\n', 1, "must be a JSON object"),
    ('{"prompt": "x", "metadata": "not an object"}\n', 1, "`metadata` must be an object"),
]


@pytest.mark.parametrize(("content", "line", "problem"), BAD_LINES)
def test_bad_line_is_refused_with_file_and_line(cli, tmp_path, db, content, line, problem):
    with Store(db) as store:  # a store with one prompt already in it
        import_prompts(store, str(write_jsonl(tmp_path / "good.jsonl", [{"prompt": "kept"}])))
    before = table_checksums(db)
    f = tmp_path / "bad.jsonl"
    f.write_text(content)
    result = cli("import", "prompts", f, "--db", db)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"Error: {f}:{line}: ") and problem in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert table_checksums(db) == before


def test_non_utf8_bytes_name_the_line(cli, tmp_path, db):
    f = tmp_path / "latin1.jsonl"
    f.write_bytes(b'{"prompt": "fine"}\n{"prompt": "caf\xe9"}\n')
    result = cli("import", "prompts", f, "--db", db)
    assert result.exit_code == 2 and f"{f}:2: not valid UTF-8" in result.stderr


def test_parquet_prompts(cli, tmp_path, db):
    f = tmp_path / "p.parquet"
    pq.write_table(pa.table({"prompt": ["one?", "two?"], "id": ["a", "b"]}), f)
    result = cli("import", "prompts", f, "--db", db)
    assert result.exit_code == 0 and "read 2, new 2" in result.output


def test_real_prompts_from_the_autoj_fixture(tmp_path, db):
    """1,392 human-labelled rows of real, messy text: long, markdown, non-English, repeated prompts."""
    rows = [json.loads(line) for line in (FIXTURES / "autoj_pairwise.jsonl").read_text().splitlines()]
    f = write_jsonl(tmp_path / "autoj.jsonl", [{"prompt": r["prompt"], "metadata": {"scenario": r["scenario"]}}
                                                for r in rows])
    with Store(db) as store:
        stats = import_prompts(store, str(f))
        distinct = len({r["prompt"].strip() for r in rows})
        assert (stats.read, stats.new, stats.duplicates) == (len(rows), distinct, len(rows) - distinct)
        assert store.scalar("SELECT count(*) FROM prompts") == distinct


def test_datasets_loadable_folder(cli, tmp_path, db):
    folder = tmp_path / "my_dataset"
    folder.mkdir()
    (folder / "train.csv").write_text('prompt,id\n"What is DPO?",a\n"Define entropy.",b\n')
    result = cli("import", "prompts", folder, "--db", db)
    assert result.exit_code == 0, result.output
    assert "read 2, new 2" in result.output


def test_unloadable_source(cli, tmp_path, db):
    result = cli("import", "prompts", tmp_path / "missing.jsonl", "--db", db)
    assert result.exit_code == 2 and "missing.jsonl: file not found" in result.stderr
    result = cli("import", "prompts", tmp_path / "no_such_folder", "--db", db)
    assert result.exit_code == 2 and "cannot load as a dataset" in result.stderr


def test_prompts_where_keeps_the_prompts_whose_metadata_matches():
    import json

    from conftest import ROOT

    from prefcurate.inputs import load_prompts

    source = ROOT / "data" / "prompts" / "arithmetic.jsonl"
    heldout = load_prompts(str(source), where={"split": "heldout"})
    lines = [json.loads(line) for line in source.read_text().splitlines()]
    assert [p.text for p in heldout.prompts] == [r["prompt"] for r in lines if r["metadata"]["split"] == "heldout"]
    first = load_prompts(str(source), limit=5, where={"split": "heldout"})  # the limit counts matching prompts
    assert [p.text for p in first.prompts] == [p.text for p in heldout.prompts[:5]] and first.rows == 5
