"""Boxes whose Python writes no bytecode: swift's imports are compiled once into our cache, not every run."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import FIXED_NOW

from qwen_tune.planning.jobs import JobOptions, bytecode_cache, prepare, probe_machine
from qwen_tune.planning.ladder import fallback
from qwen_tune.planning.profiles import shipped_profiles
from qwen_tune.report import plan_text
from qwen_tune.swift import bytecode
from qwen_tune.swift.bytecode import COMPILE, NotWarmed, package_root, package_roots, run_child
from qwen_tune.swift.command import sft_env, shell_command

REPO = Path(__file__).resolve().parents[1]


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
    assert sft_env(plan)["PYTHONPYCACHEPREFIX"] == cache and sft_env(plan)["PYTHONDONTWRITEBYTECODE"] == ""
    assert f"PYTHONDONTWRITEBYTECODE='' PYTHONPYCACHEPREFIX={cache} swift sft" in shell_command(plan)
    assert f"compiled imports are kept in {cache}" in plan_text(plan)
    retried, _ = fallback(plan, shipped_profiles())
    assert sft_env(retried)["PYTHONPYCACHEPREFIX"] == cache


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
    subprocess.run(importing, cwd=tmp_path / "src", env={**os.environ, **sft_env(plan)}, check=True)
    assert pyc_files() and not (tmp_path / "src" / "__pycache__").exists()


def test_package_roots_are_the_top_level_packages_outside_the_standard_library(tmp_path):
    site, std = tmp_path / "site-packages", tmp_path / "lib"
    files = {
        "swift": f"{site}/swift/__init__.py",
        "swift.pipelines.sft": f"{site}/swift/pipelines/sft.py",
        "google.protobuf": f"{site}/google/protobuf/__init__.py",  # under a namespace package, which has no __file__
        "six": f"{site}/six.py",
        "json": f"{std}/json/__init__.py",
        "os.path": f"{std}/posixpath.py",  # aliases: the file is not where the name says
        "requests.packages.urllib3": f"{site}/urllib3/__init__.py",
        "_frozen_importlib": f"{std}/importlib/_bootstrap.py",
        "torch.ops": "_ops.py",
    }
    assert package_roots(files, [str(std)]) == [f"{site}/google", f"{site}/six.py", f"{site}/swift"]
    assert package_roots(files, [str(std)], only=["swift"]) == [f"{site}/swift"]
    assert package_root("swift.pipelines.sft", f"{site}/swift/pipelines/sft.py") == f"{site}/swift"


def test_compiling_writes_into_the_cache_not_beside_the_sources(tmp_path):
    """The real compileall under the children's environment: .pyc files under the prefix, none in __pycache__."""
    (tmp_path / "src" / "pkg" / "sub").mkdir(parents=True)
    (tmp_path / "src" / "pkg" / "tests").mkdir()
    for name in ("pkg/__init__.py", "pkg/sub/mod.py", "pkg/tests/test_mod.py", "single.py"):
        (tmp_path / "src" / name).write_text("X = 1\n")
    cache = tmp_path / "cache"
    cache.mkdir()
    run_child(COMPILE, [str(tmp_path / "src" / "pkg"), str(tmp_path / "src" / "single.py")], str(cache))
    mirror = cache / tmp_path.relative_to("/")  # the cache also holds the child's own imports (compileall...)
    compiled = {p.relative_to(mirror).as_posix() for p in mirror.rglob("*.pyc")}
    tag = sys.implementation.cache_tag
    assert compiled == {f"src/pkg/__init__.{tag}.pyc", f"src/pkg/sub/mod.{tag}.pyc", f"src/single.{tag}.pyc"}  # no tests
    assert not list((tmp_path / "src").rglob("__pycache__"))


def test_a_child_that_fails_is_one_line(tmp_path):
    why = r"^could not compile swift's imports \(ModuleNotFoundError: No module named 'no_such_mod'\): the first run"
    with pytest.raises(NotWarmed, match=why):
        run_child("import no_such_mod", [], str(tmp_path))


def test_nothing_to_do_where_python_writes_bytecode(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert bytecode.main([]) == 0
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    monkeypatch.setenv("PYTHONPYCACHEPREFIX", str(tmp_path / "mine"))  # the user's own prefix: theirs to fill
    assert bytecode.main([]) == 0
    assert capsys.readouterr() == ("", "") and not list(tmp_path.iterdir())


def test_without_swift_one_line_and_the_install_goes_on(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setitem(sys.modules, "swift", None)  # find_spec("swift") is None, as where it is not installed
    assert bytecode.main([]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "cannot import swift: nothing to compile" in out


@pytest.mark.requires_swift
def test_install_compiles_swifts_imports_into_the_cache(tmp_path):
    """`make install`'s step on a box like the GPU box's image: one line, the cache filled, nothing beside the sources.

    --packages swift: the import compiles all that swift imports (transformers' too), and compileall adds the rest
    of swift alone, not all of torch and transformers: 16 s on the 2-core CI machine, against 35 s for everything.
    """
    import swift

    env = {k: v for k, v in os.environ.items() if k not in ("XDG_CACHE_HOME", "PYTHONPYCACHEPREFIX")}
    env.update(PYTHONDONTWRITEBYTECODE="1", HOME=str(tmp_path))
    start = time.time()
    argv = [sys.executable, "-m", "qwen_tune.swift.bytecode", "--packages", "swift"]
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, check=True)
    assert done.stderr == "" and done.stdout.count("\n") == 1
    assert done.stdout.startswith("qwen-tune: compiled swift's imports into ~/.cache/qwen-tune/pycache (")
    cache = tmp_path / ".cache" / "qwen-tune" / "pycache"
    compiled = [p.as_posix() for p in cache.rglob("*.pyc")]
    assert any("/swift/pipelines/" in p for p in compiled) and any("/transformers/trainer" in p for p in compiled)
    assert any(p.endswith(f"/swift/cli/web_ui.{sys.implementation.cache_tag}.pyc") for p in compiled)  # not imported: compileall
    swift_dir = Path(swift.__file__).parent
    assert not [p for p in swift_dir.rglob("*.pyc") if p.stat().st_mtime >= start]
