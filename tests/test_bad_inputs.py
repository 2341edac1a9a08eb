"""Every kind of bad input through the real CLI (tools/bad_inputs.py): one line on stderr, its own exit
code, nothing written, swift never started; and the README's table of them is what they print."""

import inspect
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PLAIN_MACHINE, load_script

from qwen_tune import errors
from qwen_tune.planning.jobs import JobOptions, prepare
from qwen_tune.report import command_text
from qwen_tune.running.rundir import create_run_dir
from qwen_tune.swift.command import launchable, sft_argv, sft_env

bad_inputs = load_script("bad_inputs")
error_table = load_script("error_table")
CASES, FAKES, REPO, TINY_CONFIG, run_case = bad_inputs.CASES, bad_inputs.FAKES, bad_inputs.REPO, bad_inputs.TINY_CONFIG, bad_inputs.run_case  # fmt: skip

ERROR_CLASSES = [c for _, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, errors.UserError)]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """Each case once, in its own directory; the table test reads the same outcomes."""
    return [run_case(case, tmp_path_factory.mktemp(f"case-{n}")) for n, case in enumerate(CASES)]


@pytest.mark.parametrize("number", range(len(CASES)), ids=[case.what for case in CASES])
def test_refused_in_one_line_with_its_exit_code_and_nothing_written(outcomes, number):
    case, outcome = CASES[number], outcomes[number]
    lines = outcome.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("qwen-tune: error: "), outcome.stderr
    assert "Traceback" not in outcome.stderr
    assert outcome.code == case.code, outcome.stderr
    assert outcome.written == (), "half-written"
    assert not outcome.swift_ran


def test_every_kind_of_bad_input_has_a_case():
    kinds = {c.exit_code for c in ERROR_CLASSES} - {3, 4, 5, 130}  # these come after training has started
    assert kinds <= {case.code for case in CASES}


def test_each_error_class_has_its_own_code_and_says_why():
    codes = {}
    for cls in ERROR_CLASSES:
        assert cls.__doc__ and "\n" not in cls.__doc__.strip(), f"{cls.__name__} needs a one-line docstring"
        if cls is not errors.UserError:  # the base shares 2 with UsageError
            assert codes.setdefault(cls.exit_code, cls) is cls, f"{cls.__name__} and {codes[cls.exit_code].__name__} share a code"


def test_readme_lists_every_exit_code():
    section = README().split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    documented = {int(code) for code in re.findall(r"^\| (\d+) \|", section, flags=re.M)}
    assert documented == {0} | {c.exit_code for c in ERROR_CLASSES}


def test_readme_table_is_what_the_cases_print(outcomes):
    rendered = error_table.render(CASES, outcomes)
    assert error_table.SECTION.read(README()) == rendered, "README.md is stale: run python tools/error_table.py --write"


def test_table_goes_between_the_markers():
    section = error_table.SECTION
    readme = f"# x\n\n{section.start}\nold\n{section.end}\n\nrest\n"
    assert section.replaced(readme, "| new |\n") == f"# x\n\n{section.start}\n| new |\n{section.end}\n\nrest\n"
    assert section.read(section.replaced(readme, "| new |\n")) == "| new |\n"


def README() -> str:
    return (REPO / "README.md").read_text(encoding="utf-8")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories (the notes.txt case covers root)")
def test_read_only_output_dir_through_the_cli(tmp_path):
    MODEL, Case, run_tiny = bad_inputs.MODEL, bad_inputs.Case, bad_inputs.run_tiny

    (tmp_path / "locked").mkdir(mode=0o500)
    outcome = run_case(Case("read-only --output-dir", 15, run_tiny(output_dir="{tmp}/locked/runs"), MODEL), tmp_path)
    assert outcome.code == 15 and "locked is not writable" in outcome.stderr and outcome.written == ()


HOSTILE = 'a "b" $(touch pwned) `touch pwned` c\'d'  # a shell that ran it would make ./pwned


def shell_runs(command: str, tmp_path: Path) -> list[str]:
    """What a shell passes to swift for the pasted command: the fake swift writes its arguments down."""
    argv_file = tmp_path / "swift-argv"
    env = {**os.environ, "PATH": f"{FAKES / 'bin'}{os.pathsep}{os.environ['PATH']}", "FAKE_SWIFT_RAN": str(argv_file)}
    subprocess.run(["sh", "-c", command], env=env, capture_output=True, timeout=30, cwd=tmp_path)
    assert not (tmp_path / "pwned").exists(), "the shell ran a name"
    return argv_file.read_text(encoding="utf-8").splitlines()


def test_hostile_names_are_quoted_in_the_plan_and_never_run(tmp_path):
    model = tmp_path / HOSTILE
    model.mkdir()
    (model / "config.json").write_text(TINY_CONFIG)
    out = tmp_path / f"out {HOSTILE}"
    done = subprocess.run(
        [sys.executable, "-m", "qwen_tune", "plan", "--recipe", "demo-tiny-cpu", "--gpus", "cpu", "--model", str(model),
         "--name", HOSTILE, "--author", "$(touch pwned)", "--output-dir", str(out), "--json"],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert shlex.split(plan["shell_command"]) == [f"{k}={v}" for k, v in plan["env"].items()] + plan["argv"]
    assert str(model) in plan["argv"] and plan["output_dir"].startswith(str(out))
    assert shell_runs(plan["shell_command"], tmp_path) == plan["argv"][1:]
    assert not out.exists() and not (REPO / "pwned").exists()


def test_hostile_names_are_quoted_in_the_run_directory(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    for name, text in bad_inputs.MODEL_FILES.items():
        (model / name).write_text(text)
    options = JobOptions(recipe="demo-tiny-cpu", model=str(model), gpus="cpu", name=HOSTILE,
                         output_dir=str(tmp_path / f"runs {HOSTILE}"))  # fmt: skip
    job = prepare(options, PLAIN_MACHINE, for_run=True)
    create_run_dir(job, verify=False)
    script = (job.run_dir / "command.sh").read_text(encoding="utf-8")
    *setup, start = script.strip().splitlines()
    assert os.access(job.run_dir / "command.sh", os.X_OK) and f"cd {shlex.quote(os.getcwd())} || exit 1" in setup
    # What it starts, word for word: swift's sft script (launchable), the run's argv, a new output directory.
    argv, env = sft_argv(job.plan), sft_env(job.plan)
    at = argv.index("--output_dir")
    assert shlex.split(start) == ["exec", "env", *(f"{k}={v}" for k, v in env.items()),
                                  *launchable(argv[:at] + argv[at + 2 :], env), "--output_dir", "$out/swift"]  # fmt: skip
    made = subprocess.run(["sh", "-c", "\n".join(setup) + '\necho "$out"'], capture_output=True, text=True, cwd=tmp_path)
    rerun = Path(made.stdout.strip().splitlines()[-1])
    assert rerun.is_dir() and rerun.parent == job.run_dir.absolute()
    assert not (tmp_path / "pwned").exists() and not Path(os.getcwd(), "pwned").exists()
    assert shell_runs(command_text(job.plan), tmp_path) == sft_argv(job.plan)[1:]  # as plan and run print it
    filled = (job.run_dir / "dataset.jsonl").read_text(encoding="utf-8")
    assert json.dumps(HOSTILE, ensure_ascii=False)[1:-1] in filled
