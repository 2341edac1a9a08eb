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


def test_recipe_knobs_as_flags_reach_the_command_and_the_plan():
    import json

    flags = ("--epochs", "3", "--learning-rate", "2e-4", "--lora-rank", "16", "--lora-alpha", "64", "--max-length", "1024")
    done = qwen_tune("plan", "--gpus", "rtx4090", *flags, "--json")
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    argv = plan["argv"]
    for swift_flag, value in (("--num_train_epochs", "3"), ("--learning_rate", "0.0002"), ("--lora_rank", "16"),
                              ("--lora_alpha", "64"), ("--max_length", "1024")):  # fmt: skip
        assert argv[argv.index(swift_flag) + 1] == value
    assert plan["recipe"]["overridden"] == [["--epochs", 10], ["--learning-rate", 1e-4], ["--max-length", 2048],
                                            ["--lora-rank", 8], ["--lora-alpha", 32]]  # fmt: skip
    text = qwen_tune("plan", "--gpus", "rtx4090", "--epochs", "3").stdout
    assert "Flags:     --epochs 3 (the recipe's 10)" in text.splitlines()[1]


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--epochs", "0", "must be a number from 0.01 to 1000 (got 0)"),
        ("--learning-rate", "fast", "must be a number from 1e-08 to 1 (got fast)"),
        ("--lora-rank", "2.5", "must be an integer from 1 to 1024 (got 2.5)"),
        ("--lora-alpha", "5000", "must be an integer from 1 to 4096 (got 5000)"),
        ("--max-length", "1200128", "must be an integer from 16 to 131072 (got 1200128)"),
    ],
)
def test_recipe_knobs_take_the_recipe_fields_ranges(flag, value, message):
    assert_one_line_error(qwen_tune("plan", "--gpus", "h100", flag, value), f"Invalid value for '{flag}': {message}")


HOSTILE_NAMES = ["x/../../../ESCAPED", "evil\ntouch /tmp/pwned-by-a-recipe-name\n#", "\x1b]0;title\x07-dot.."]


@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=["dot-dot", "newline", "control"])
def test_a_recipe_name_that_is_no_safe_word_is_refused_in_one_line(tmp_path, name):
    """A recipe's name is a path component of the run directory and the job name of `plan --slurm`: `..` must not put
    the run outside --output-dir, nor a newline write a line of shell into the sbatch script. The recipe is refused,
    naming the field, and nothing of the name reaches the terminal as control characters."""
    import json

    recipe = (Path(__file__).parents[1] / "configs" / "recipes" / "demo-tiny-cpu.yaml").read_text()
    path = tmp_path / "r.yaml"
    path.write_text(recipe.replace("name: demo-tiny-cpu", f"name: {json.dumps(name)}"))
    model = ("--model", str(DATA / "tiny-config"))
    for flags in (("--gpus", "cpu"), ("--gpus", "4xh100", "--nnodes", "2", "--slurm")):
        done = qwen_tune("plan", "--recipe", str(path), *model, *flags)
        assert done.returncode == 12 and done.stdout == "" and "name must be" in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and "\x1b" not in done.stderr and "\x07" not in done.stderr


@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=["dot-dot", "newline", "control"])
def test_a_run_name_is_one_safe_word_whatever_it_is_made_of(name):
    """Behind the recipe's own check, the run directory and job names are slugs of it (a model's name joins them)."""
    import re

    from qwen_tune.running.rundir import run_name

    for made in (run_name(name), run_name("demo", name), run_name(name, None, 1)):
        assert re.fullmatch(r"[A-Za-z0-9._-]+", made) and ".." not in made and "/" not in made


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


def test_qwen_tune_alone_prints_its_help():
    done = qwen_tune()
    assert done.returncode == 0 and done.stdout.startswith("Usage: qwen-tune") and "plan" in done.stdout and not done.stderr
