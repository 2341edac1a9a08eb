"""What people look at (issue 15): every --help has examples that run as printed, and the plan's screen
says nothing that contradicts itself or cannot be pasted."""

import os
import shlex
import subprocess
import sys

import pytest
from conftest import load_script

from qwen_tune.cli import cli

bad_inputs = load_script("bad_inputs")
FAKES = bad_inputs.FAKES
REPO = bad_inputs.REPO
TINY_CONFIG = bad_inputs.TINY_CONFIG

COMMANDS = ("", "gpus", "plan", "run", "export")


def qwen_tune(*args, env=None, cwd=None):
    environ = {k: v for k, v in os.environ.items() if k not in ("FAKE_NVML", "CUDA_VISIBLE_DEVICES", "HF_HUB_OFFLINE")}
    environ.update(PYTHONPATH=os.pathsep.join([str(FAKES), str(REPO)]), **(env or {}))
    argv = [sys.executable, "-m", "qwen_tune", *args]
    return subprocess.run(argv, capture_output=True, text=True, cwd=cwd or REPO, env=environ, timeout=120)


def examples(command: str) -> list[list[str]]:
    """The Examples: lines of a command's --help, as argv (comments and redirections dropped)."""
    done = qwen_tune(*([command] if command else []), "--help")
    assert done.returncode == 0, done.stderr
    text = done.stdout.split("Examples:\n", 1)[1].split("\n\n", 1)[0]
    found = []
    for line in text.splitlines():
        words = shlex.split(line.split(" #")[0].split(" > ")[0])
        found.append(words[words.index("qwen-tune") + 1 :])
    return found


@pytest.mark.parametrize("command", COMMANDS)
def test_every_help_has_examples(command):
    assert examples(command)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_example_parses(command):
    for argv in examples(command):
        if "--help" in argv:
            continue
        sub = cli.commands[argv[0]]
        sub.make_context(argv[0], argv[1:])  # raises on an unknown flag or a bad value


def test_plan_examples_run_as_printed(tmp_path):
    for argv in examples("plan") + [a for a in examples("") if a[:1] == ["plan"] and "--help" not in a]:
        done = qwen_tune(*argv, cwd=tmp_path)
        assert done.returncode == 0, (argv, done.stderr)
    assert list(tmp_path.iterdir()) == []  # plan writes nothing


def test_help_lists_recipes_profiles_and_cards():
    text = qwen_tune("plan", "--help").stdout
    for name in ("demo-tiny-cpu", "self-cognition-qwen3-14b", "qlora", "rtx3090", "h100"):
        assert name in text


def test_resume_names_its_argument_once():
    text = qwen_tune("run", "--help").stdout
    assert "--resume RUN_DIR" in text and "DIRECTORY" not in text


def test_the_plan_says_what_its_command_needs():
    text = qwen_tune("plan", "--gpus", "h100").stdout
    assert "plan writes nothing: `qwen-tune run` with the same flags writes runs/" in text


def test_a_forced_profile_does_not_contradict_itself():
    text = qwen_tune("plan", "--gpus", "rtx4080", "--profile", "large").stdout
    assert "gradient checkpointing on" in text and "no gradient checkpointing" not in text


def test_a_tiny_model_is_counted_in_millions(tmp_path):
    (tmp_path / "config.json").write_text(TINY_CONFIG)
    text = qwen_tune("plan", "--recipe", "demo-tiny-cpu", "--gpus", "cpu", "--model", str(tmp_path)).stdout
    assert "(1.5M params" in text


def test_readme_offers_only_what_exists():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    exit_2 = next(line for line in readme.splitlines() if line.startswith("| 2 |"))
    assert "swift" not in exit_2  # a missing swift is 19
    assert "zero3_offload" not in qwen_tune("plan", "--gpus", "2xrtx3090").stdout


def test_make_help_lists_the_targets():
    done = subprocess.run(["make", "-s", "help"], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.returncode == 0 and "demo" in done.stdout and "test" in done.stdout, done.stderr
