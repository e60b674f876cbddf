"""Packaging: the wheel installs one top-level package, `prefcurate`, with the judge, the flows and
the training stage inside it (their folders stay at the top of the repository)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile

from conftest import ROOT


def test_the_wheel_holds_one_top_level_package_and_it_imports(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".venv", ".git", ".cache", "data", "runs", "build",
                                                             "__pycache__", "*.egg-info", ".pytest_cache", ".ruff_cache"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("prefcurate-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"prefcurate", f"{wheel.name.split('-py3')[0]}.dist-info"}
    for module in ("judge/stage.py", "flows/curate.py", "train/dpo.py", "audit/flags.py", "migrations/001_initial.sql"):
        assert f"prefcurate/{module}" in names

    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)
    probe = subprocess.run([sys.executable, "-c", "import prefcurate.judge.stage as j, prefcurate.flows.curate, "
                            "prefcurate.train.config; print(j.__file__)"],
                           cwd=tmp_path, env={"PYTHONPATH": str(target), "PATH": ""}, capture_output=True, text=True)
    assert probe.returncode == 0, probe.stderr[-3000:]
    assert probe.stdout.strip().startswith(str(target))
