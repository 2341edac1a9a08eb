"""The planner: choices for the seed cards, golden renderings, and its rules."""

import json
import os
import shlex
from pathlib import Path

import pytest
from conftest import FIXED_NOW, PLAIN_MACHINE, gpu_inventory

from qwen_tune.errors import DoesNotFit, ModelError, UsageError
from qwen_tune.jobs import JobOptions, prepare
from qwen_tune.models import check_reachable, hub_offline, resolve_model
from qwen_tune.plan import DataSummary
from qwen_tune.planner import make_plan
from qwen_tune.profiles import shipped_profiles
from qwen_tune.recipes import load_recipe
from qwen_tune.report import plan_text

REPO = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).parent / "golden"
TINY_CONFIG = str(Path(__file__).parent / "data" / "tiny-config")

# The planner's commands for every shipped recipe × profile, on a card where the profile applies.
MATRIX = [
    (recipe, profile, gpus)
    for recipe in ("self-cognition-qwen2.5-7b", "self-cognition-qwen3-14b")
    for profile, gpus in (
        ("large", "h100"),
        ("24gb", "rtx4090"),
        ("16gb", "rtx4080"),
        ("qlora", "rtx3080"),
        ("qlora", "t4"),
        ("multi-gpu", "2xrtx3090"),
        ("multi-gpu", "4xa100-40gb"),
    )  # fmt: skip
] + [("demo-tiny-cpu", "cpu", "cpu")]


def plan_for(**flags):
    flags.setdefault("output_dir", "runs")
    if flags.get("recipe") == "demo-tiny-cpu":
        flags.setdefault("model", TINY_CONFIG)
    return prepare(JobOptions(**flags), PLAIN_MACHINE, for_run=False, now=FIXED_NOW).plan


def scrub(text: str) -> str:
    return text.replace(str(REPO), "<repo>")


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.exists(), f"{path} missing: run UPDATE_GOLDEN=1 pytest {__file__}"
    assert text == path.read_text(), f"{name} changed; if intended, rerun with UPDATE_GOLDEN=1 and review the diff"


@pytest.mark.parametrize("gpus", ["rtx4080", "2xrtx3090", "a6000", "h100", "t4", "rtx3080"])
def test_plan_text_for_seed_cards(gpus):
    check_golden(f"plan-{gpus}.txt", scrub(plan_text(plan_for(gpus=gpus))) + "\n")


def test_command_matrix():
    lines = []
    for recipe, profile, gpus in MATRIX:
        plan = plan_for(recipe=recipe, profile=profile, gpus=gpus)
        lines.append(f"# {recipe} × {profile} on {gpus}\n{scrub(plan.shell_command())}\n")
    check_golden("commands.txt", "\n".join(lines))


def test_seed_cards_get_different_sensible_plans():
    chosen = {gpus: plan_for(gpus=gpus) for gpus in ["rtx4080", "2xrtx3090", "a6000", "h100", "t4", "rtx3080"]}
    assert chosen["h100"].profile.name == "large" and chosen["h100"].setup.micro_batch_size == 16
    assert chosen["a6000"].profile.name == "large"
    assert (
        chosen["2xrtx3090"].profile.name == "multi-gpu" and chosen["2xrtx3090"].setup.zero == ""
    )  # plain DDP: the 7B fits one card
    assert chosen["2xrtx3090"].env["NPROC_PER_NODE"] == "2"
    assert chosen["rtx4080"].profile.name == "16gb"
    assert chosen["t4"].dtype == "float16" and chosen["t4"].profile.name == "qlora"
    assert chosen["rtx3080"].profile.name == "qlora"
    assert len({plan_text(p) for p in chosen.values()}) == len(chosen)
    assert len({shlex.join(p.argv) for p in chosen.values()}) == 5  # the A6000 and H100 run the same command
    for plan in chosen.values():
        assert plan.effective_batch == 16 and plan.fits


def test_qwen3_14b_on_two_24gb_cards_plans_qlora_not_zero3():
    """Measured: swift's zero3 ran out of memory at 22.5 GiB/GPU for this model."""
    plan = plan_for(recipe="self-cognition-qwen3-14b", gpus="2x24GiB")
    assert plan.profile.name == "qlora"
    assert any("skipped multi-gpu" in r and "zero3" in r for r in plan.reasons)


def test_refuses_with_the_nearest_thing_that_works():
    with pytest.raises(DoesNotFit) as error:
        plan_for(recipe="self-cognition-qwen3-14b", gpus="8GiB")
    assert "does not fit" in str(error.value) and "a GPU with at least" in str(error.value)
    with pytest.raises(DoesNotFit, match="samples of at most"):
        plan_for(gpus="8GiB", dataset=None, recipe=str(_recipe_without_dataset()))


def _recipe_without_dataset() -> Path:
    path = GOLDEN.parent / "data" / "no-dataset.yaml"
    return path


def test_forced_profile_warns_when_it_will_not_fit():
    plan = plan_for(gpus="rtx3080", profile="24gb")
    assert plan.profile.name == "24gb" and not plan.fits
    assert any("does not fit" in w for w in plan.warnings)
    with pytest.raises(UsageError, match="needs two or more GPUs"):
        plan_for(gpus="h100", profile="multi-gpu")
    with pytest.raises(UsageError, match="unknown profile"):
        plan_for(gpus="h100", profile="huge")


def test_micro_batch_keeps_the_effective_batch_over_devices():
    recipe = load_recipe("self-cognition-qwen2.5-7b")
    model = resolve_model(recipe.model)
    data = DataSummary(n_rows=100, max_tokens=80, how="estimated")
    for n in (1, 2, 4, 8):
        plan = make_plan(recipe=recipe, model=model, inventory=gpu_inventory(*[80] * n), profiles=shipped_profiles(),
                         data=data, dataset_path="d.jsonl", output_dir="out", machine=PLAIN_MACHINE)  # fmt: skip
        assert plan.effective_batch == 16, n
    three = make_plan(recipe=recipe, model=model, inventory=gpu_inventory(80, 80, 80), profiles=shipped_profiles(),
                      data=data, dataset_path="d.jsonl", output_dir="out", machine=PLAIN_MACHINE)  # fmt: skip
    assert any("effective batch 18" in w for w in three.warnings)


def test_longer_data_turns_checkpointing_on_or_shrinks_the_micro_batch():
    recipe = load_recipe("self-cognition-qwen2.5-7b")
    model = resolve_model(recipe.model)
    long_data = DataSummary(n_rows=100, max_tokens=2048, how="tokenized")
    plan = make_plan(recipe=recipe, model=model, inventory=gpu_inventory(48), profiles=shipped_profiles(),
                     data=long_data, dataset_path="d.jsonl", output_dir="out", machine=PLAIN_MACHINE)  # fmt: skip
    assert plan.profile.name == "large" and plan.setup.micro_batch_size < 16 and plan.fits


def test_plan_json_is_data():
    data = json.loads(json.dumps(plan_for(gpus="h100").to_dict()))
    assert data["profile"]["name"] == "large"
    assert data["argv"][:2] == ["swift", "sft"]
    assert data["estimate"]["peak_bytes"] > 0 and data["total_steps"] == 70


def test_local_model_dir_gets_swift_names_and_offline_env():
    plan = plan_for(recipe="demo-tiny-cpu", gpus="cpu")
    argv = plan.argv
    assert argv[argv.index("--model_type") + 1] == "qwen2"
    assert argv[argv.index("--template") + 1] == "qwen2_5"
    assert argv[argv.index("--check_model") + 1] == "false"
    assert plan.env == {"CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1"}
    assert plan.dtype == "float32"


def test_model_errors(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        plan_for(gpus="h100", model=str(tmp_path / "missing"))
    with pytest.raises(ModelError, match="config.json is missing"):
        plan_for(gpus="h100", model=str(tmp_path))
    with pytest.raises(ModelError, match="unknown hub model"):
        plan_for(gpus="h100", model="meta-llama/Llama-3-8B")


def test_a_hub_id_cannot_train_offline():
    hub, local = resolve_model("Qwen/Qwen2.5-7B-Instruct"), resolve_model(str(GOLDEN.parent / "data" / "tiny-config"))
    assert hub_offline({"HF_HUB_OFFLINE": "1"}) and hub_offline({"HF_HUB_OFFLINE": "true"})
    assert not hub_offline({}) and not hub_offline({"HF_HUB_OFFLINE": "0"})
    with pytest.raises(ModelError, match="is a hub id, but HF_HUB_OFFLINE is set"):
        check_reachable(hub, offline=True)
    check_reachable(hub, offline=False)
    check_reachable(local, offline=True)
