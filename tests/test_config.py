"""Config files: the committed demo config loads; bad ones fail with the file, line or field, exit 2."""

from __future__ import annotations

import pytest

from prefcurate.config import Config, load_config
from prefcurate.errors import ConfigError


def test_the_demo_runs_smollm2_on_the_prompts_copied_from_auto_j():
    from prefcurate.inputs import load_prompts
    from prefcurate.models import default_dir

    cfg = load_config("configs/demo.yaml")
    assert cfg.generator.backend == "vllm" and cfg.generator.n == 4
    # One engine: the generator and the local judge name the model setup prepares, with the same settings.
    assert cfg.generator.model == cfg.judge.model == str(default_dir("smollm2-135m-instruct"))
    assert cfg.judge.backend == "local" and cfg.judge.rubric == "rubrics/helpfulness.yaml"
    # Real prompts, read from the project's own copy (never ../shared at run time), with their source.
    prompts = load_prompts(cfg.prompts.path, limit=cfg.prompts.limit).prompts
    assert cfg.prompts.path.startswith("data/") and len(prompts) == cfg.prompts.limit
    assert all(p.metadata["source"].startswith("Auto-J pairwise test set") for p in prompts)
    assert len({p.metadata["scenario"] for p in prompts}) == 12


def test_every_field_is_documented():
    from typing import get_args

    from prefcurate.config import BACKENDS

    def walk(model):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"
            for sub in (field.annotation, *get_args(field.annotation)):
                if isinstance(sub, type) and hasattr(sub, "model_fields"):
                    walk(sub)

    walk(Config)
    for models in BACKENDS.values():
        for model in models.values():
            walk(model)


def test_the_readme_configuration_reference_is_generated_from_config_py():
    from conftest import ROOT

    from prefcurate.config_reference import DEMO, REFERENCE, block, demo_block, reference

    readme = (ROOT / "README.md").read_text()
    fix = "run `python -m prefcurate.config_reference --write README.md`"
    assert block(readme, REFERENCE) == reference(), fix
    assert block(readme, DEMO) == demo_block(ROOT), f"the README's copy of configs/demo.yaml differs; {fix}"


def test_a_field_the_backend_does_not_use_is_an_error_naming_it(tmp_path):
    path = tmp_path / "c.yaml"
    for text, expected in [
        ("judge:\n  backend: anthropic\n  engine: vllm\n",
         "judge.engine is not used by judge.backend anthropic (only by local); remove it or change the backend"),
        ("judge:\n  backend: anthropic\n  batch: true\n  concurrency: 64\n",
         "judge.concurrency is not used with judge.batch true; remove it"),
        ("judge:\n  engine: transformers\n  enforce_eager: true\n",
         "judge.enforce_eager is not used with judge.engine transformers; remove it"),
        ("generator:\n  backend: none\n  n: 8\n", "generator.n is not used by generator.backend none"),
        ("judge:\n  batch_size: 8\n", "judge.batch_size: no such field any more: it meant three things, now "
                                      "judge.write_batch (verdicts per store write), judge.engine_batch and "
                                      "judge.forward_batch (local judge)"),
    ]:
        path.write_text(text)
        with pytest.raises(ConfigError) as e:
            load_config(path)
        assert str(e.value).startswith(f"{path}: {expected}"), str(e.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("generator:\n  n: [1\n", "bad.yaml:3: invalid YAML"),
        ("generator:\n  n: many\n", "bad.yaml: generator.n: Input should be a valid integer"),
        ("generator:\n  backend: tgi\n", "bad.yaml: generator.backend: Input should be 'vllm', 'transformers', 'openai' or "
                                          "'none' (got 'tgi')"),
        ("judge:\n  rubrik: x.yaml\n", "bad.yaml: judge.rubrik: Extra inputs are not permitted"),
        ("- just\n- a list\n", "bad.yaml: expected a YAML mapping"),
    ],
)
def test_bad_config_names_the_place(tmp_path, text, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value).startswith(str(tmp_path / expected.split(":")[0])) and expected.split(" ", 1)[1] in str(e.value)


def test_cli_run_with_bad_config_exits_2_and_writes_nothing(cli, tmp_path, db):
    path = tmp_path / "bad.yaml"
    path.write_text("generator:\n  n: 0\n")
    result = cli("run", path, "--db", db)
    assert result.exit_code == 2
    assert "generator.n: Input should be greater than or equal to 1" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not db.exists()
