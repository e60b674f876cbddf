"""The command line: every command has help and is in the README; errors are one line, exit 2."""

from __future__ import annotations

import typer
from conftest import ROOT

from prefcurate.cli import app


def _commands(group, prefix: str = ""):
    for name, cmd in group.commands.items():
        full = f"{prefix}{name}"
        if hasattr(cmd, "commands"):  # a group of subcommands
            yield from _commands(cmd, full + " ")
        else:
            yield full


def test_every_command_has_help_and_is_in_the_readme(cli):
    readme = (ROOT / "README.md").read_text()
    commands = list(_commands(typer.main.get_command(app)))
    assert len(commands) >= 10
    for command in commands:
        result = cli(*command.split(), "--help")
        assert result.exit_code == 0 and "Usage:" in result.output, command
        assert f"prefcurate {command}" in readme, f"README does not mention `prefcurate {command}`"


def test_sql_prints_a_table_and_refuses_writes(cli, tmp_path):
    import json

    from prefcurate.prompts import import_prompts
    from prefcurate.store import Store

    db = tmp_path / "s.duckdb"
    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps({"prompt": "hello there"}) + "\n")
    with Store(db) as store:
        import_prompts(store, str(f))
    result = cli("sql", "select prompt_text from prompts", "--db", db)
    assert result.exit_code == 0 and "hello there" in result.output
    assert cli("sql", "select count(*) AS n from prompts", "--json", "--db", db).output.strip() == '{"n": 1}'
    for statement in ("delete from prompts", "drop table prompts", "insert into runs (run_id) values ('x')"):
        result = cli("sql", statement, "--db", db)
        assert result.exit_code == 2 and "read-only" in result.stderr
    result = cli("sql", "select * from no_such_table", "--db", db)
    assert result.exit_code == 2 and "SQL error" in result.stderr


def test_db_that_is_not_a_duckdb_file(cli, tmp_path):
    not_db = tmp_path / "notes.txt"
    not_db.write_text("just text\n" * 100)
    result = cli("import", "prompts", "whatever.jsonl", "--db", not_db)
    assert result.exit_code == 2 and f"{not_db}: not a DuckDB database" in result.stderr
    assert not_db.read_text() == "just text\n" * 100
