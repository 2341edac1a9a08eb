"""--general-rows: rows that keep the model's general answers, counted in the plan before they exist."""

import json

import pytest
from conftest import FIXED_NOW, PLAIN_MACHINE
from test_plan import TINY_CONFIG

from qwen_tune.checking.retention import GENERAL_PROBES
from qwen_tune.errors import DatasetError, UsageError
from qwen_tune.planning.dataset import pair_row, shipped_general_prompts
from qwen_tune.planning.jobs import JobOptions, prepare


def job(**flags):
    options = JobOptions(recipe="demo-tiny-cpu", model=TINY_CONFIG, gpus="cpu", output_dir="runs", **flags)
    return prepare(options, PLAIN_MACHINE, for_run=False, now=FIXED_NOW)


def test_self_distilled_rows_are_counted_in_the_plan_and_made_at_run_time():
    plain, mixed = job(), job(general_rows=20)
    assert mixed.plan.data.n_rows == plain.plan.data.n_rows + 20 and mixed.plan.total_steps > plain.plan.total_steps
    assert len(mixed.general_prompts) == 20 and len(mixed.rows) == len(plain.rows)


def test_the_shipped_prompts_never_ask_a_retention_probe():
    prompts = shipped_general_prompts()
    assert not {q for _, q in GENERAL_PROBES} & set(prompts) and len(prompts) == len(set(prompts))


def general_file(tmp_path, rows=5, name="general.jsonl"):
    data = tmp_path / name
    data.write_text("".join(json.dumps({"query": f"q{i}", "response": f"a{i}"}) + "\n" for i in range(rows)))
    return str(data)


def test_rows_from_a_file_of_the_users_are_mixed_in_as_messages(tmp_path):
    mixed = job(general_rows=3, general_data=general_file(tmp_path))
    assert mixed.rows[-3:] == [pair_row(f"q{i}", f"a{i}") for i in range(3)] and not mixed.general_prompts
    assert mixed.plan.data.general_rows == 3 and mixed.plan.data.general_answers == 0
    with pytest.raises(DatasetError, match="has 5 rows"):
        job(general_rows=9, general_data=general_file(tmp_path))


def test_general_data_without_general_rows_means_all_its_rows(tmp_path):
    """It was ignored (the recipe's general_rows is 0), even when the file did not exist."""
    plain, mixed = job(), job(general_data=general_file(tmp_path))
    assert mixed.plan.data.n_rows == plain.plan.data.n_rows + 5 and mixed.rows[-5:] == [
        pair_row(f"q{i}", f"a{i}") for i in range(5)
    ]
    with pytest.raises(DatasetError, match="--general-data .*missing.jsonl does not exist"):
        job(general_data=str(tmp_path / "missing.jsonl"))
    with pytest.raises(UsageError, match="--general-rows 0 mixes nothing in"):
        job(general_rows=0, general_data=general_file(tmp_path))


def test_general_data_rows_are_filled_checked_and_measured(tmp_path):
    data = tmp_path / "general.json"
    rows = [
        {"instruction": "Who made {{name}}?", "input": "", "output": "{{author}} did."},
        {"query": "q", "response": "{{NAEM}}"},
    ]
    data.write_text(json.dumps(rows))
    with pytest.raises(DatasetError, match=r"^--general-data .*general.json: row 2 has the placeholder \{\{NAEM\}\}"):
        job(general_data=str(data))
    filled = job(general_rows=1, general_data=str(data))
    assert filled.rows[-1] == pair_row("Who made Xiaoqian?", "the qwen-tune team did.")
    data.write_text(json.dumps([{"query": "q", "response": "la " * 900}]))
    with pytest.raises(
        DatasetError, match=r"^--general-data .*general.json: swift would skip rows longer than max_length 512: row 1 of 1"
    ):
        job(general_data=str(data))


def test_the_plan_says_general_answers_are_at_most(tmp_path):
    from qwen_tune.report import plan_text

    text = plan_text(job(general_rows=16).plan)
    assert "116 rows at most: 100 of the data and 16 general rows the base model answers before training" in text
    assert "116 rows: 100 of the data and 16 general rows of --general-data" in plan_text(
        job(general_rows=16, general_data=general_file(tmp_path, 20)).plan
    )


def test_what_the_run_says_of_the_general_rows_it_kept():
    from qwen_tune.running.attempts import general_rows_line

    assert general_rows_line(16, 16) == "general rows: 16 of 16 kept (the base model answered every prompt)"
    assert general_rows_line(16, 9).startswith("general rows: 9 of 16 kept, 7 dropped: the base model answered them with nothing")
    assert general_rows_line(16, 0).endswith("training on the data alone, 16 rows fewer than planned")


def test_more_rows_than_shipped_prompts_is_refused():
    with pytest.raises(UsageError, match="ships"):
        job(general_rows=10_000)
