"""--general-rows: rows that keep the model's general answers, counted in the plan before they exist."""

import json

import pytest
from conftest import FIXED_NOW, PLAIN_MACHINE
from test_plan import TINY_CONFIG

from qwen_tune.checking.retention import GENERAL_PROBES
from qwen_tune.errors import DatasetError, UsageError
from qwen_tune.planning.dataset import shipped_general_prompts
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


def test_rows_from_a_file_of_the_users_are_mixed_in_as_they_are(tmp_path):
    data = tmp_path / "general.jsonl"
    data.write_text("".join(json.dumps({"query": f"q{i}", "response": f"a{i}"}) + "\n" for i in range(5)))
    mixed = job(general_rows=3, general_data=str(data))
    assert mixed.rows[-3:] == [{"query": f"q{i}", "response": f"a{i}"} for i in range(3)] and not mixed.general_prompts
    with pytest.raises(DatasetError, match="has 5 rows"):
        job(general_rows=9, general_data=str(data))


def test_more_rows_than_shipped_prompts_is_refused():
    with pytest.raises(UsageError, match="ships"):
        job(general_rows=10_000)
