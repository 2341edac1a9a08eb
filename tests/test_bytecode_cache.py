"""Boxes whose Python writes no bytecode: swift's imports are compiled once into our cache, not every run."""

import os
import subprocess
import sys

from conftest import FIXED_NOW

from qwen_tune.jobs import JobOptions, bytecode_cache, prepare, probe_machine
from qwen_tune.ladder import fallback
from qwen_tune.profiles import shipped_profiles
from qwen_tune.report import plan_text


def test_cache_only_where_python_writes_no_bytecode():
    assert bytecode_cache({}) is None
    assert bytecode_cache({"PYTHONDONTWRITEBYTECODE": ""}) is None  # empty means unset, as Python reads it
    assert bytecode_cache({"PYTHONDONTWRITEBYTECODE": "1", "PYTHONPYCACHEPREFIX": "/mine"}) is None  # the user's choice
    assert bytecode_cache({"PYTHONDONTWRITEBYTECODE": "1", "XDG_CACHE_HOME": "/c"}) == "/c/qwen-tune/pycache"
    assert bytecode_cache({"PYTHONDONTWRITEBYTECODE": "1"}).endswith(os.path.join(".cache", "qwen-tune", "pycache"))


def test_plan_shows_and_keeps_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    plan = prepare(JobOptions(gpus="h100", output_dir="runs"), probe_machine(os.environ), for_run=False, now=FIXED_NOW).plan
    cache = str(tmp_path / "qwen-tune" / "pycache")
    assert plan.env["PYTHONPYCACHEPREFIX"] == cache and plan.env["PYTHONDONTWRITEBYTECODE"] == ""
    assert f"PYTHONDONTWRITEBYTECODE='' PYTHONPYCACHEPREFIX={cache} swift sft" in plan.shell_command()
    assert f"compiled imports are kept in {cache}" in plan_text(plan)
    retried, _ = fallback(plan, shipped_profiles())
    assert retried.env["PYTHONPYCACHEPREFIX"] == cache


def test_the_plans_environment_makes_python_write_into_the_cache(monkeypatch, tmp_path):
    """The real interpreter, not our reading of its docs: with the plan's env an import leaves a .pyc in the cache."""
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    plan = prepare(JobOptions(gpus="h100", output_dir="runs"), probe_machine(os.environ), for_run=False, now=FIXED_NOW).plan
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "probe_module.py").write_text("X = 1\n")
    importing = [sys.executable, "-c", "import probe_module"]

    def pyc_files():
        return list((tmp_path / "cache").rglob("probe_module*.pyc"))

    subprocess.run(importing, cwd=tmp_path / "src", env=dict(os.environ), check=True)
    assert not pyc_files() and not (tmp_path / "src" / "__pycache__").exists()  # as the box: nothing written
    subprocess.run(importing, cwd=tmp_path / "src", env={**os.environ, **plan.env}, check=True)
    assert pyc_files() and not (tmp_path / "src" / "__pycache__").exists()
