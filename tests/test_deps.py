"""What a plan needs beside swift (swift/deps.py), whether torch can use the GPUs (readiness.py), and which swift starts."""

import os
import sys
from pathlib import Path

import pytest
from conftest import FIXED_NOW, PLAIN_MACHINE, load_script
from packaging.requirements import Requirement

from qwen_tune.errors import MissingPackage, TorchCannotUseGpus
from qwen_tune.machine.readiness import TorchFacts, torch_gpu_problem
from qwen_tune.planning.jobs import JobOptions, prepare
from qwen_tune.swift import command
from qwen_tune.swift.command import sft_argv, shell_command
from qwen_tune.swift.deps import BITSANDBYTES, DEEPSPEED, GPU_EXTRA, missing_package, plan_needs, unmet


def plan_for(**flags):
    return prepare(JobOptions(output_dir="runs", **flags), PLAIN_MACHINE, for_run=False, now=FIXED_NOW).plan


@pytest.mark.parametrize(
    "flags, needed",
    [
        (dict(gpus="h100"), []),
        (dict(gpus="2xrtx3090"), []),  # the 7B fits one card: plain data parallel, no DeepSpeed
        (dict(gpus="2x28GiB", recipe="self-cognition-qwen3-14b", profile="multi-gpu"), ["deepspeed"]),  # sharded: ZeRO-3
        (dict(gpus="rtx3080"), ["bitsandbytes"]),
        (dict(gpus="2xrtx3090", recipe="self-cognition-qwen3-14b"), ["bitsandbytes"]),
        # swift loads Qwen3.5's composite checkpoint with its processor: qwen_vl_utils, which imports torchvision.
        (dict(gpus="h100", recipe="self-cognition-qwen3.5-9b"), ["qwen-vl-utils", "torchvision"]),
        (dict(gpus="rtx4080", recipe="self-cognition-qwen3.5-9b"), ["bitsandbytes", "qwen-vl-utils", "torchvision"]),
        (dict(gpus="h100", model="Qwen/Qwen3-Next-80B-A3B-Instruct", profile="large"), []),  # text only
    ],
)
def test_each_plan_needs_what_it_turns_on(flags, needed):
    assert [n.name for n in plan_needs(plan_for(**flags))] == needed


def test_missing_or_too_old_is_named_with_the_install_command():
    needs = plan_needs(plan_for(gpus="rtx3080"))
    assert unmet(needs, {"bitsandbytes": "0.50.2"}) == []
    assert unmet(needs, {"bitsandbytes": "0.45.0"})[0][1] == "0.45.0"
    missing = unmet(needs, {"bitsandbytes": None})
    error = missing_package(missing, "/v/bin/python")
    assert isinstance(error, MissingPackage) and error.exit_code == 20
    assert "has no bitsandbytes: /v/bin/python -m pip install 'bitsandbytes>=0.46.1'" in str(error)


def test_versions_are_what_transformers_asks_for():
    from transformers.dependency_versions_table import deps
    from transformers.utils.import_utils import BITSANDBYTES_MIN_VERSION

    assert Requirement(BITSANDBYTES).specifier == Requirement(f"bitsandbytes>={BITSANDBYTES_MIN_VERSION}").specifier
    assert Requirement(DEEPSPEED).specifier == Requirement(deps["deepspeed"]).specifier


def test_gpu_extra_in_pyproject_is_the_same():
    import tomllib

    extra = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["optional-dependencies"]["gpu"]
    assert sorted(str(Requirement(r)).split(";")[0] for r in extra) == sorted(GPU_EXTRA)


@pytest.mark.parametrize(
    "facts, driver, says",
    [
        (TorchFacts("2.11.0+cu128", "12.8"), "13.0", None),
        (TorchFacts("2.11.0+cu128", "12.8"), "12.2", None),  # minor version compatibility within CUDA 12
        (TorchFacts("2.13.0+cpu"), "13.0", "CPU-only build"),
        (TorchFacts("2.11.0+cu130", "13.0"), "12.8", "runs CUDA 12.8 at most"),
        (TorchFacts(None), "13.0", "has no torch"),
    ],
)
def test_torch_that_cannot_use_the_gpus_is_refused_with_the_fix(facts, driver, says):
    problem = torch_gpu_problem(facts, 2, driver, "/v/bin/python")
    if says is None:
        assert problem is None
    else:
        assert isinstance(problem, TorchCannotUseGpus) and problem.exit_code == 21 and says in str(problem)
    assert torch_gpu_problem(facts, 0, driver, "/v/bin/python") is None  # the CPU: nothing to check


def test_swift_beside_this_python_comes_before_path(tmp_path, monkeypatch):
    venv = tmp_path / "venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "python").symlink_to(sys.executable)
    monkeypatch.setattr(sys, "executable", str(venv / "python"))
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.setattr(command, "swift_cli_dir", lambda: None)  # this Python has no ms-swift: a `swift` command runs
    assert command.swift_executable() is None and command.launchable(["swift", "sft"], {}) == ["swift", "sft"]
    (venv / "swift").write_text("#!/bin/sh\n")
    (venv / "swift").chmod(0o755)
    assert command.launchable(["swift", "sft", "--x"], {}) == [str(venv / "swift"), "sft", "--x"]
    plan = plan_for(gpus="h100")
    assert sft_argv(plan)[0] == "swift" and " swift sft " in shell_command(plan)  # what is printed stays pasteable
    assert os.access(command.swift_executable(), os.X_OK)


@pytest.mark.parametrize(
    "args, cards",
    [
        (("run", "--output-dir", "{tmp}/runs"), "RTX3080TI"),  # QLoRA: bitsandbytes
        (
            ("run", "--recipe", "self-cognition-qwen3-14b", "--profile", "multi-gpu", "--output-dir", "{tmp}/runs"),
            "TWO_28GB",
        ),  # deepspeed
    ],
)
def test_with_the_gpu_extra_present_the_package_check_passes(args, cards, tmp_path):
    """The real CLI with fake NVML and qwen-tune[gpu]'s packages present (stubs): past the package check, it stops
    at the next one, a CPU-only torch (exit 21); nothing written, nothing started."""
    bad_inputs = load_script("bad_inputs")

    case = bad_inputs.Case(
        "gpu extra present", 21, args, env=bad_inputs.gpus(*getattr(bad_inputs, cards), fakes=("gpu_extra", "cpu_torch"))
    )
    (tmp_path / "case").mkdir()
    outcome = bad_inputs.run_case(case, tmp_path / "case")
    assert outcome.code == 21 and "CPU-only build" in outcome.stderr, outcome.stderr
    assert not outcome.written and not outcome.swift_ran


def test_torch_is_read_from_its_version_file_without_importing_it(tmp_path, monkeypatch):
    from qwen_tune.planning.jobs import read_torch

    fake = tmp_path / "torch"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise SystemExit('imported')\n")
    (fake / "version.py").write_text(
        "from typing import Optional\n__version__ = '2.11.0+cu130'\ncuda: Optional[str] = '13.0'\nhip = None\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "torch", raising=False)  # find_spec answers from sys.modules first
    assert read_torch() == TorchFacts("2.11.0+cu130", "13.0")
    (fake / "version.py").write_text("__version__ = '2.13.0+cpu'\ncuda = None\n")
    assert read_torch() == TorchFacts("2.13.0+cpu", None)
    monkeypatch.setattr(sys, "path", [str(tmp_path / "nowhere")])
    assert read_torch() == TorchFacts(None)


def test_qwen35_without_its_processor_packages_is_named_with_what_to_install():
    needs = plan_needs(plan_for(gpus="h100", recipe="self-cognition-qwen3.5-9b"))
    error = str(missing_package(unmet(needs, {"qwen-vl-utils": None, "torchvision": None}), "/v/bin/python"))
    assert "needs qwen-vl-utils>=0.0.14 (and torchvision), but /v/bin/python has no qwen-vl-utils" in error
    assert "/v/bin/python -m pip install 'qwen-vl-utils>=0.0.14' torchvision" in error and "build of this Python's torch" in error
