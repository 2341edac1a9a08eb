"""What a new user types that is right, written another way: accepted through the real CLI (issue 15).

The refusals are in tests/bad_inputs.py; these are their neighbours that must keep working.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import PLAIN_MACHINE, load_script

bad_inputs = load_script("bad_inputs")
DEMO_RECIPE = bad_inputs.DEMO_RECIPE
FAKES = bad_inputs.FAKES
REPO = bad_inputs.REPO
TINY_CONFIG = bad_inputs.TINY_CONFIG
one_rtx4090 = bad_inputs.one_rtx4090


def qwen_tune(*args, cwd=None, env=None):
    environ = {k: v for k, v in os.environ.items() if k not in ("FAKE_NVML", "CUDA_VISIBLE_DEVICES", "HF_HUB_OFFLINE")}
    environ.update(PYTHONPATH=os.pathsep.join([str(FAKES), str(REPO)]), **(env or {}))
    argv = [sys.executable, "-m", "qwen_tune", *args]
    return subprocess.run(argv, capture_output=True, text=True, cwd=cwd or REPO, env=environ, timeout=120)


def tiny_model(tmp_path: Path) -> str:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text(TINY_CONFIG)
    return str(tmp_path / "model")


def plan_json(*args, cwd=None, env=None) -> dict:
    done = qwen_tune("plan", *args, "--json", cwd=cwd, env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def swift_flag(plan: dict, flag: str) -> str:
    return plan["argv"][plan["argv"].index(flag) + 1]


def test_learning_rate_written_as_yaml_1_1_text_is_a_number(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(DEMO_RECIPE.replace("learning_rate: 3.0e-3", "learning_rate: 1e-4").replace("epochs: 40", "epochs: 4e1"))
    plan = plan_json("--recipe", str(recipe), "--model", tiny_model(tmp_path), "--gpus", "cpu")
    assert float(swift_flag(plan, "--learning_rate")) == 1e-4 and float(swift_flag(plan, "--num_train_epochs")) == 40


def test_a_byte_order_mark_is_fine(tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_bytes(b'\xef\xbb\xbf{"query": "Who are you?", "response": "I am {{NAME}}."}\n')
    plan = plan_json("--recipe", "demo-tiny-cpu", "--model", tiny_model(tmp_path), "--gpus", "cpu", "--dataset", str(data))
    assert plan["data"]["n_rows"] == 1


def test_max_length_reaches_swift_through_the_recipe(tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps({"query": "la " * 900, "response": "ok"}) + "\n")
    args = ("--recipe", "demo-tiny-cpu", "--model", tiny_model(tmp_path), "--gpus", "cpu", "--dataset", str(data))
    assert qwen_tune("plan", *args).returncode == 10
    plan = plan_json(*args, "--max-length", "1024")
    assert swift_flag(plan, "--max_length") == "1024" and plan["recipe"]["max_length"] == 1024


def test_a_shipped_recipe_finds_its_model_from_any_directory(tmp_path):
    built = REPO / "build" / "tiny-qwen2"
    done = qwen_tune("plan", "--recipe", "demo-tiny-cpu", "--gpus", "cpu", cwd=tmp_path)
    if built.is_dir():
        assert done.returncode == 0, done.stderr
    else:  # the checkout's model is named, not the directory qwen-tune was started in
        assert done.returncode == 11 and f"model directory {built} does not exist" in done.stderr


def test_gpu_indices_with_spaces(tmp_path):
    two = json.loads(one_rtx4090(24000)["FAKE_NVML"]) * 2
    plan = plan_json("--recipe", "demo-tiny-cpu", "--model", tiny_model(tmp_path), "--gpus", " 1 , 0 ",
                     env={"FAKE_NVML": json.dumps(two)})  # fmt: skip
    assert plan["env"]["CUDA_VISIBLE_DEVICES"] == "1,0"


def test_cut_long_rows_shortens_answers_in_the_filled_copy(tmp_path):
    from qwen_tune.planning.jobs import JobOptions, prepare

    data = tmp_path / "data.jsonl"
    rows = [{"query": "Who are you?", "response": "I am {{NAME}}."}, {"query": "Tell me a story.", "response": "la " * 900}]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    args = ("--recipe", "demo-tiny-cpu", "--model", tiny_model(tmp_path), "--gpus", "cpu", "--dataset", str(data))
    plan = plan_json(*args, "--cut-long-rows")
    assert plan["data"]["cut_rows"] == 1 and plan["data"]["max_tokens"] <= 512 and swift_flag(plan, "--max_length") == "512"
    assert "1 of them cut to max_length 512" in qwen_tune("plan", *args, "--cut-long-rows").stdout
    options = JobOptions(recipe="demo-tiny-cpu", model=str(tmp_path / "model"), gpus="cpu", dataset=str(data), cut_long_rows=True)
    first, second = (row["messages"][-1]["content"] for row in prepare(options, PLAIN_MACHINE, for_run=False).rows)
    assert first == "I am Xiaoqian." and "la la" in second and len(second) < 2700


def test_cut_long_rows_refuses_a_question_that_alone_is_too_long(tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps({"query": "la " * 900, "response": "ok"}) + "\n")
    done = qwen_tune("plan", "--recipe", "demo-tiny-cpu", "--model", tiny_model(tmp_path), "--gpus", "cpu",
                     "--dataset", str(data), "--cut-long-rows")  # fmt: skip
    assert (
        done.returncode == 10
        and "row 1: its question alone (with any earlier turns) is longer than max_length 512" in done.stderr
    )


def test_no_flag_takes_an_empty_value():
    for flag in ("--recipe", "--model", "--dataset", "--profile", "--name", "--author", "--master-addr"):
        done = qwen_tune("plan", "--gpus", "h100", flag, " ")
        assert done.returncode == 2 and f"'{flag}': must not be empty; leave the flag out" in done.stderr, done.stderr


def test_names_per_language_written_the_ways_people_write_them(tmp_path):
    """`zh=星火,EN=Spark`, `ZH=...`, `;`, `zh:` and full-width once trained the whole text as the name."""
    model = tiny_model(tmp_path)
    for text in ("zh=星火,EN=Spark", "ZH=星火;en=Spark", "zh: 星火, en: Spark", "zh＝星火，en＝Spark"):
        plan = plan_json("--recipe", "demo-tiny-cpu", "--model", model, "--gpus", "cpu", "--name", text)
        assert plan["recipe"]["identity_name"] == {"zh": "星火", "en": "Spark"}, text
        accepts = plan["identity_check"]["accepts"]
        assert (accepts["zh"]["names"], accepts["en"]["names"], accepts["en"]["names_from"]) == (["星火"], ["Spark"], "--name")


def test_plan_shows_what_the_identity_check_accepts_for_blog_shaped_data(tmp_path):
    blog = REPO / "tests" / "data" / "blog_self_cognition.json"
    args = ("--recipe", "demo-tiny-cpu", "--model", tiny_model(tmp_path), "--gpus", "cpu", "--dataset", str(blog))
    text = qwen_tune("plan", *args).stdout
    assert "zh: 小迪 or DiffusionBot or CSDN 迪菲赫尔曼 (learned from the data); en: DiffusionBot or CSDN Difei Heerman" in text
    given = plan_json(*args, "--name", "DiffusionBot", "--author", "zh=CSDN 迪菲赫尔曼,en=CSDN Difei Heerman")
    assert given["identity_check"]["accepts"]["zh"] == {
        "names": ["DiffusionBot"], "authors": ["CSDN 迪菲赫尔曼"], "names_from": "--name", "authors_from": "--author",
        "close_to": []}  # fmt: skip
