"""The CLI as users meet it: one-line errors with their exit codes, and a plan that stays light."""

import subprocess
import sys
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


def qwen_tune(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "qwen_tune", *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def assert_one_line_error(done, *fragments, code=2):
    assert done.returncode == code, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qwen-tune: error: "), done.stderr
    assert "Traceback" not in done.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture
def bad_recipe(tmp_path):
    text = (DATA / "no-dataset.yaml").read_text().replace("max_length: 2048, ", "")
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    return str(path)


def test_plan_prints_profile_memory_and_command():
    done = qwen_tune("plan", "--gpus", "rtx4080", "--model", "Qwen/Qwen2.5-3B-Instruct")
    assert done.returncode == 0, done.stderr
    for expected in ("Profile:   16gb", "Why:", "Memory estimate per GPU", "swift sft", "--gradient_checkpointing false"):
        assert expected in done.stdout


def test_plan_json():
    import json

    done = qwen_tune("plan", "--gpus", "2xrtx3090", "--json")
    plan = json.loads(done.stdout)
    assert plan["env"]["NPROC_PER_NODE"] == "2" and plan["profile"]["name"] == "multi-gpu"


@pytest.mark.parametrize(
    "args, fragments, code",
    [
        (("plan", "--gpus", "rtx9999"), ("unknown card",), 2),
        (("plan", "--gpus", "h100", "--profile", "nope"), ("unknown profile 'nope'",), 2),
        (("plan", "--gpus", "h100", "--dataset", "/nonexistent/data.jsonl"), ("does not exist",), 10),
        (("plan", "--gpus", "h100", "--dataset", str(DATA / "tiny-config" / "config.json")), ("row 1",), 10),
        (("plan", "--gpus", "h100", "--recipe", "nope"), ("unknown recipe",), 12),
        (("plan", "--gpus", "h100", "--model", "/nonexistent/model"), ("does not exist",), 11),
        (("run", "--gpus", "rtx4090"), ("card names are for plan",), 2),
    ],
)
def test_bad_input_is_one_line_with_its_exit_code(args, fragments, code):
    assert_one_line_error(qwen_tune(*args), *fragments, code=code)


def test_bad_recipe_field(bad_recipe):
    assert_one_line_error(qwen_tune("plan", "--gpus", "h100", "--recipe", bad_recipe), "training.max_length is missing", code=12)


def test_gpus_without_a_driver_is_one_line_exit_14():
    done = qwen_tune("gpus")
    if done.returncode == 0:
        pytest.skip("this box has an NVIDIA driver")
    assert_one_line_error(done, "NVML", code=14)


def test_plan_imports_neither_torch_nor_swift():
    code = (
        "import sys; from qwen_tune import cli;"
        "cli.cli.main(['plan', '--gpus', 'h100'], standalone_mode=False);"
        "print('HEAVY', sorted(m for m in ('torch', 'swift', 'transformers') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "HEAVY []" in done.stdout, done.stdout[-500:] + done.stderr


HOSTILE_NAMES = ["x/../../../ESCAPED", "evil\ntouch /tmp/pwned-by-a-recipe-name\n#", "\x1b]0;title\x07-dot.."]


@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=["dot-dot", "newline", "control"])
def test_a_recipe_name_becomes_one_safe_word_in_paths_and_job_scripts(tmp_path, name):
    """A recipe's name is a path component of the run directory and the job name of `plan --slurm`: `..` must not put
    the run outside --output-dir, nor a newline write a line of shell into the sbatch script."""
    import json
    import re

    recipe = (Path(__file__).parents[1] / "configs" / "recipes" / "demo-tiny-cpu.yaml").read_text()
    path = tmp_path / "r.yaml"
    path.write_text(recipe.replace("name: demo-tiny-cpu", f"name: {json.dumps(name)}"))
    runs = tmp_path / "runs"
    model = ("--model", str(DATA / "tiny-config"))
    done = qwen_tune("plan", "--recipe", str(path), *model, "--gpus", "cpu", "--output-dir", str(runs), "--json")
    assert done.returncode == 0, done.stderr
    run_dir = Path(json.loads(done.stdout)["output_dir"]).parent
    assert run_dir.parent == runs and re.fullmatch(r"[A-Za-z0-9._-]+", run_dir.name) and ".." not in run_dir.name
    script = qwen_tune("plan", "--recipe", str(path), *model, "--gpus", "4xh100", "--nnodes", "2", "--slurm")
    assert script.returncode == 0, script.stderr
    assert not any(line.startswith("touch") for line in script.stdout.splitlines())
    (job,) = [line for line in script.stdout.splitlines() if line.startswith("#SBATCH --job-name=")]
    assert re.fullmatch(r"#SBATCH --job-name=qwen-tune-[A-Za-z0-9._-]+", job)
    shown = qwen_tune("plan", "--recipe", str(path), *model, "--gpus", "cpu")
    assert shown.returncode == 0 and "\x1b" not in shown.stdout and "\x07" not in shown.stdout  # shown, not sent


def test_a_run_is_named_after_the_model_that_runs():
    """--model changing the recipe's model shows in the run directory's name; the recipe's own model does not."""
    import json

    def run_dir(*flags: str) -> str:
        done = qwen_tune("plan", "--gpus", "h100", "--json", *flags)
        assert done.returncode == 0, done.stderr
        return Path(json.loads(done.stdout)["output_dir"]).parent.name

    assert run_dir().endswith("-self-cognition-qwen2.5-7b")
    assert run_dir("--model", "qwen2.5-7b-instruct").endswith("-self-cognition-qwen2.5-7b")  # the recipe's own, any case
    assert run_dir("--model", "Qwen/Qwen3-8B").endswith("-self-cognition-qwen2.5-7b-qwen3-8b")
