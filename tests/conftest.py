"""Shared test set-up: one tiny model, one vLLM engine, one Prefect harness per session.

The environment is set before anything imports Prefect or vLLM: Prefect's home and vLLM's
socket files go to a temporary folder, and nothing may be fetched from a model hub.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_TMP = Path(tempfile.mkdtemp(prefix="prefcurate-tests-"))
os.environ.update({
    "TMPDIR": str(_TMP),
    "PREFECT_HOME": str(_TMP / "prefect"),
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_MEMO_STORE_PATH": str(_TMP / "prefect" / "memo_store.toml"),
    "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(_TMP / "prefect" / "storage"),
    "DO_NOT_TRACK": "1",
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "VLLM_LOGGING_LEVEL": "WARNING",
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "TOKENIZERS_PARALLELISM": "false",
})
os.environ.pop("PREFCURATE_DB", None)

import pytest  # noqa: E402
import yaml  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT.parent / "shared" / "fixtures"
RUBRIC = ROOT / "rubrics" / "helpfulness.yaml"


def context(**sections):
    """The run context of a config given as sections over the defaults (the judge's rubric: the shipped
    helpfulness rubric), as `prefcurate run` would resolve it from a file."""
    from prefcurate.config import Config
    from prefcurate.context import RunContext

    sections["judge"] = {"rubric": str(RUBRIC)} | sections.get("judge", {})
    return RunContext.of(Config.model_validate(sections))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from prefcurate.tinymodel import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("model") / "tiny-model")


def model_settings(tiny_model: Path) -> dict:
    """Engine settings shared by generator and judge, so the whole session uses one vLLM engine."""
    return {"model": str(tiny_model), "dtype": "float32", "max_model_len": 2048, "enforce_eager": True}


@pytest.fixture(scope="session")
def config_dict(tiny_model) -> dict:
    return {
        "name": "test",
        "prompts": {"path": str(ROOT / "data" / "prompts" / "basics.jsonl"), "limit": 6},
        "generator": {"backend": "vllm", "n": 3, "max_tokens": 24, "temperature": 0.8, **model_settings(tiny_model)},
        "judge": {"backend": "local", "engine": "vllm", "rubric": str(ROOT / "rubrics" / "helpfulness.yaml"),
                  "mode": "hybrid", **model_settings(tiny_model)},
        "pairs": {"min_margin": 0.1},
        "snapshot": {"test_fraction": 0.34},
    }


@pytest.fixture(scope="session")
def config_path(config_dict, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("config") / "test.yaml"
    path.write_text(yaml.safe_dump(config_dict))
    return path


@pytest.fixture(scope="session")
def prefect_harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def pipeline_store(prefect_harness, config_path, tmp_path_factory) -> Path:
    """A store after one full flow run on the test config (hybrid: pairs verified in both orders)."""
    from prefcurate.flows.curate import curate

    db = tmp_path_factory.mktemp("pipeline") / "prefcurate.duckdb"
    curate(str(config_path), str(db))
    return db


@pytest.fixture(scope="session")
def pointwise_store(prefect_harness, config_dict, tmp_path_factory) -> Path:
    """A store after a flow run in pointwise mode: the tiny random judge flips on swapped order, so
    pairwise verification would leave too few pairs to train on."""
    from prefcurate.flows.curate import curate

    folder = tmp_path_factory.mktemp("pointwise")
    cfg = folder / "pointwise.yaml"
    cfg.write_text(yaml.safe_dump(config_dict | {"judge": config_dict["judge"] | {"mode": "pointwise"}}))
    curate(str(cfg), str(folder / "prefcurate.duckdb"))
    return folder / "prefcurate.duckdb"


@pytest.fixture
def db(tmp_path) -> Path:
    return tmp_path / "store.duckdb"


@pytest.fixture
def cli(monkeypatch):
    """Invoke the CLI in-process, as a user would from a shell: cli("import", "prompts", FILE)."""
    from typer.testing import CliRunner

    from prefcurate.cli import app
    from prefcurate.generate import vllm_backend

    # `prefcurate run` stops its engines when it ends; here the engine belongs to the test session.
    monkeypatch.setattr(vllm_backend, "shutdown_engines", lambda: None)

    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)

    return invoke


def table_checksums(db: Path) -> dict[str, int]:
    """A checksum per table, to show that a refused command changed nothing."""
    import duckdb

    if not db.exists():
        return {}
    con = duckdb.connect(str(db), read_only=True)
    try:
        tables = [t for (t,) in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()]
        return {t: con.execute(f"SELECT count(*), coalesce(sum(hash(t::VARCHAR)), 0) FROM {t} t").fetchone()
                for t in tables}
    finally:
        con.close()


def pytest_sessionfinish(session, exitstatus):
    from prefcurate.generate import vllm_backend

    vllm_backend.shutdown_engines()


def seeded_context(**sections):
    """The context of the judge that `seed_scored` pretends to be (its pairs are this judge's)."""
    return context(judge={"backend": "anthropic", "model": "test-judge"}, **sections)


def seed_scored(store, groups: dict[str, list[tuple[str, float | None]]]) -> None:
    """Prompts with candidates and one judgment each by the judge of ``seeded_context()``:
    {prompt text: [(candidate text, overall), ...]}; an overall of None is stored as a failed judgment."""
    from prefcurate.ids import canonical_json, content_id, judgment_id
    from prefcurate.inputs import prompt_id_for

    ctx = seeded_context()

    for text, cands in groups.items():
        messages = [{"role": "user", "content": text}]
        pid = prompt_id_for(messages)
        store.insert("prompts", [{"prompt_id": pid, "messages": canonical_json(messages), "prompt_text": text}])
        for i, (ctext, score) in enumerate(cands):
            cid = content_id("candidate", pid, "test", ctext, i)
            store.insert("candidates", [{"candidate_id": cid, "prompt_id": pid, "sample_index": i, "text": ctext,
                                         "generator": "vllm:test-model", "completion_tokens": len(ctext.split())}])
            store.insert("judgments", [{
                "judgment_id": judgment_id(cid, ctx.judge, ctx.rubric.hash), "prompt_id": pid, "candidate_id": cid,
                "judge": ctx.judge, "rubric_hash": ctx.rubric.hash, "mode": "pointwise", "repeat_index": 0,
                "overall": score, "status": "ok" if score is not None else "api_error"}])


def child_env(server, folder: Path, **extra: str) -> dict[str, str]:
    """The environment of a `prefcurate` process a test starts: its Claude judge is the local
    Messages-API ``server``; its Prefect is the session's harness (a run that starts a temporary
    Prefect server of its own takes 10 s longer), with its own Prefect home under ``folder``."""
    from prefect.settings import PREFECT_API_URL

    return os.environ | {"ANTHROPIC_BASE_URL": server.url, "ANTHROPIC_API_KEY": "sk-ant-test-key",
                         "PREFECT_HOME": str(folder / "prefect"), "PREFECT_API_URL": PREFECT_API_URL.value(), **extra}


def claude_config(path: Path, judge: dict | None = None, **sections) -> Path:
    """A run config that judges the candidates already in the store with Claude (the local
    Messages-API server): no generator, every pair kept, no probes unless ``sections`` say so."""
    path.write_text(yaml.safe_dump({
        "generator": {"backend": "none"},
        "judge": {"backend": "anthropic", "model": "claude-sonnet-4-6", "rubric": str(ROOT / "rubrics" / "helpfulness.yaml"),
                  **(judge or {})},
        "pairs": {"min_margin": 0.0},
        "probes": {"sample": 0},
    } | sections))
    return path


def store_with_candidates(db: Path, lines: list[dict]) -> Path:
    """``db`` after `prefcurate import candidates` of ``lines`` ({prompt, candidates}), run as a user would."""
    import json
    import subprocess
    import sys

    f = db.with_suffix(".candidates.jsonl")
    f.write_text("".join(json.dumps(line) + "\n" for line in lines))
    subprocess.run([sys.executable, "-m", "prefcurate.cli", "import", "candidates", str(f), "--db", str(db)],
                   cwd=ROOT, check=True, capture_output=True)
    return db
