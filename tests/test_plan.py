"""The planner: choices for the seed cards, golden renderings, and its rules."""

import json
import os
import shlex
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import FIXED_NOW, PLAIN_MACHINE, gpu_inventory

from qwen_tune.errors import ConfigError, DoesNotFit, ModelError, UsageError
from qwen_tune.planning.jobs import JobOptions, prepare
from qwen_tune.planning.ladder import fallback
from qwen_tune.planning.models import check_reachable, hub_offline, resolve_model
from qwen_tune.planning.plan import DataSummary, Setup
from qwen_tune.planning.planner import make_plan
from qwen_tune.planning.profiles import shipped_profiles
from qwen_tune.planning.recipes import load_recipe
from qwen_tune.report import plan_json, plan_text
from qwen_tune.swift.command import sft_argv, sft_env, shell_command

REPO = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).parent / "golden"
TINY_CONFIG = str(Path(__file__).parent / "data" / "tiny-config")

# The planner's commands for every shipped recipe × profile, on a card where the profile applies.
MATRIX = (
    [
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
    ]
    + [
        ("self-cognition-qwen3-8b-full", "large", "h100"),
        ("self-cognition-qwen3-8b-full", "multi-gpu", "2xrtx4090"),
        ("demo-tiny-cpu", "cpu", "cpu"),
    ]
    + [
        ("self-cognition-qwen3.5-9b", profile, gpus)
        for profile, gpus in (("large", "h100"), ("24gb", "rtx4090"), ("qlora", "rtx4080"), ("multi-gpu", "2xrtx4090"))
    ]
)


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
        lines.append(f"# {recipe} × {profile} on {gpus}\n{scrub(shell_command(plan))}\n")
    check_golden("commands.txt", "\n".join(lines))


def test_seed_cards_get_different_sensible_plans():
    chosen = {gpus: plan_for(gpus=gpus) for gpus in ["rtx4080", "2xrtx3090", "a6000", "h100", "t4", "rtx3080"]}
    # bf16 cards pack the rows: an H100 trains each optimizer step's tokens as one pack, no padding.
    h100 = chosen["h100"]
    assert h100.profile.name == "large" and h100.setup.packing.grad_accum == 1 and h100.attention == "torch_varlen"
    assert chosen["a6000"].profile.name == "large"
    assert (
        chosen["2xrtx3090"].profile.name == "multi-gpu" and chosen["2xrtx3090"].setup.zero == ""
    )  # plain DDP: the 7B fits one card
    assert sft_env(chosen["2xrtx3090"])["NPROC_PER_NODE"] == "2"
    # A 16 GB card fits the 7B in bf16 only with checkpointing and small packs; QLoRA's bigger packs are estimated
    # faster than PREFERENCE_SPEEDUP, so they win, and the plan says what it passed over.
    assert chosen["rtx4080"].profile.name == "qlora" and chosen["rtx4080"].setup.packing.grad_accum == 1
    assert any(r.startswith("passed over 16gb") for r in chosen["rtx4080"].reasons)
    # A T4 has no bfloat16, so no FlashAttention kernel: padded rows in float16.
    assert chosen["t4"].dtype == "float16" and chosen["t4"].profile.name == "qlora" and chosen["t4"].setup.packing is None
    assert chosen["rtx3080"].profile.name == "qlora"
    assert len({plan_text(p) for p in chosen.values()}) == len(chosen)
    # The A6000 and H100 train alike (here both save once, at the end: the job is under a minute on either).
    a6000, h100 = sft_argv(chosen["a6000"]), sft_argv(chosen["h100"])
    at = h100.index("--save_steps") + 1
    assert a6000[:at] + a6000[at + 1 :] == h100[:at] + h100[at + 1 :] and int(a6000[at]) <= int(h100[at])
    assert len({shlex.join(sft_argv(p)) for p in chosen.values()}) >= 5
    for plan in chosen.values():
        assert plan.fits and plan.steps_per_epoch == 7  # as many optimizer steps as padded rows of 16 would make


def test_padded_plans_keep_the_effective_batch_exactly():
    """--no-packing (and boxes without the varlen attention): micro-batch × grad-accum × devices is the recipe's."""
    chosen = {gpus: plan_for(gpus=gpus, packing=False) for gpus in ["rtx4080", "2xrtx3090", "a6000", "h100", "t4", "rtx3080"]}
    assert chosen["h100"].profile.name == "large" and chosen["h100"].setup.micro_batch_size == 16
    assert chosen["rtx4080"].profile.name == "qlora" and chosen["rtx4080"].setup.micro_batch_size > 1
    for plan in chosen.values():
        assert plan.effective_batch == 16 and plan.fits and plan.setup.packing is None and plan.attention == "sdpa"
        assert "--packing" not in sft_argv(plan) and "(--no-packing)" in plan_text(plan)


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
    data = json.loads(json.dumps(plan_json(plan_for(gpus="h100"))))
    assert data["profile"]["name"] == "large"
    assert data["argv"][:2] == ["swift", "sft"]
    assert data["estimate"]["peak_bytes"] > 0 and data["total_steps"] == 70


def test_local_model_dir_gets_swift_names_and_offline_env():
    plan = plan_for(recipe="demo-tiny-cpu", gpus="cpu")
    argv = sft_argv(plan)
    assert argv[argv.index("--model_type") + 1] == "qwen2"
    assert argv[argv.index("--template") + 1] == "qwen2_5"
    assert argv[argv.index("--check_model") + 1] == "false"
    assert sft_env(plan) == {"CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1"}
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


# Every Qwen text model on a 24 GB card, two of them and an 80 GB one, LoRA and full (issue 16).
MODELS = [f"Qwen/Qwen2.5-{size}-Instruct" for size in ("0.5B", "1.5B", "3B", "7B", "14B", "32B", "72B")] + [
    f"Qwen/Qwen3-{size}"
    for size in ("0.6B", "1.7B", "4B-Instruct-2507", "8B", "14B", "32B", "30B-A3B-Instruct-2507", "235B-A22B-Instruct-2507")
]


def test_every_model_on_24gb_2x24gb_and_80gb():
    lines = []
    for model in MODELS:
        for tuner in ("lora", "full"):
            for gpus in ("rtx4090", "2xrtx4090", "h100"):
                try:
                    plan = plan_for(model=model, tuner=tuner, gpus=gpus)
                    chose = f"{plan.profile.name}: {plan.setup.describe(plan.profile)}, needs {plan.estimate.peak_bytes / 2**30:.1f} GiB"
                except DoesNotFit as refusal:
                    chose = f"refused: {str(refusal).split(': ', 1)[1]}"
                lines.append(f"{model} {tuner} on {gpus}: {chose}")
    check_golden("models.txt", "\n".join(lines) + "\n")


# The Qwen3.5/3.6 and Qwen3-Next ids (issue 24): every one on a 24 GB card, two of them and an 80 GB one, LoRA and full.
HYBRID_MODELS = [f"Qwen/Qwen3.5-{size}" for size in ("0.8B", "2B", "4B", "9B", "27B", "35B-A3B", "122B-A10B", "397B-A17B")] + [
    "Qwen/Qwen3.5-9B-Base", "Qwen/Qwen3.6-27B", "Qwen/Qwen3.6-35B-A3B", "Qwen/Qwen3-Next-80B-A3B-Instruct",
]  # fmt: skip


def test_every_hybrid_model_on_24gb_2x24gb_and_80gb():
    lines = []
    for model in HYBRID_MODELS:
        for tuner in ("lora", "full"):
            for gpus in ("rtx4090", "2xrtx4090", "h100"):
                try:
                    plan = plan_for(model=model, tuner=tuner, gpus=gpus)
                    chose = f"{plan.profile.name}: {plan.setup.describe(plan.profile)}, needs {plan.estimate.peak_bytes / 2**30:.1f} GiB"
                except DoesNotFit as refusal:
                    chose = f"refused: {str(refusal).split(': ', 1)[1]}"
                lines.append(f"{model} {tuner} on {gpus}: {chose}")
    check_golden("models-hybrid.txt", "\n".join(lines) + "\n")


@pytest.mark.parametrize("gpus", ["rtx4090", "2xrtx4090", "h100"])
def test_qwen35_9b_plans(gpus):
    plan = plan_for(recipe="self-cognition-qwen3.5-9b", gpus=gpus)
    check_golden(f"plan-qwen3.5-9b-{gpus}.txt", scrub(plan_text(plan)) + "\n")
    assert plan.fits and plan.linear_attention == "torch"  # PLAIN_MACHINE has no fla
    assert any("transformers' slow torch path" in w and "fla-core" in w for w in plan.warnings)
    with_fla = prepare(JobOptions(output_dir="runs", recipe="self-cognition-qwen3.5-9b", gpus=gpus),
                       replace(PLAIN_MACHINE, fla_installed=True), for_run=False, now=FIXED_NOW).plan  # fmt: skip
    assert with_fla.linear_attention == "fla" and not any("torch path" in w for w in with_fla.warnings)
    assert with_fla.estimate.peak_bytes <= plan.estimate.peak_bytes  # fla keeps less than the torch path
    argv = sft_argv(plan)
    assert argv[3] == "Qwen/Qwen3.5-9B" and "--model_type" not in argv  # swift knows the hub id: qwen3_5, its template


def test_hybrid_ids_in_any_case_and_local_dirs_of_every_hybrid_type(tmp_path):
    for given in ("Qwen/Qwen3.5-9B", "qwen3.5-9b", "QWEN/QWEN3.5-9B", "Qwen3.6-27B", "qwen3-next-80b-a3b-thinking"):
        model = resolve_model(given)
        assert model.shape.is_hybrid and model.local_dir is None and model.source.startswith("Qwen/Qwen3")
    assert resolve_model("qwen3.6-35b-a3b").shape == resolve_model("Qwen/Qwen3.5-35B-A3B").shape
    nine = resolve_model("Qwen/Qwen3.5-9B").shape
    assert (nine.linear_layers, nine.full_attention_layers, nine.vision_params) == (24, 8, 456_010_480)
    text = {"hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 32,
            "intermediate_size": 128, "vocab_size": 1024, "layer_types": ["linear_attention"] * 3 + ["full_attention"],
            "linear_num_key_heads": 2, "linear_num_value_heads": 4, "linear_key_head_dim": 16, "linear_value_head_dim": 16,
            "linear_conv_kernel_dim": 4}  # fmt: skip
    moe = {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32, "shared_expert_intermediate_size": 32}
    vision = {"depth": 2, "hidden_size": 64, "intermediate_size": 96, "num_heads": 4, "out_hidden_size": 64}
    configs = {
        "qwen3_5": ({"model_type": "qwen3_5", "text_config": text, "vision_config": vision}, ("qwen3_5", "qwen3_5")),
        "qwen3_5_moe": ({"model_type": "qwen3_5_moe", "text_config": {**text, **moe}, "vision_config": vision},
                        ("qwen3_5_moe", "qwen3_5")),
        "qwen3_next": ({"model_type": "qwen3_next", **text, **moe}, ("qwen3_next", "qwen3_nothinking")),
        "qwen3_5_text": ({"model_type": "qwen3_5_text", **text}, ("qwen3_next", "qwen3")),
    }  # fmt: skip
    for name, (config, swift_names) in configs.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps(config))
        model = resolve_model(str(tmp_path / name))
        assert model.shape.linear_layers == 3 and (model.swift_model_type, model.swift_template) == swift_names, name
        assert bool(model.shape.vision_params) == (name in ("qwen3_5", "qwen3_5_moe")), name
        plan = plan_for(model=str(tmp_path / name), gpus="h100")
        assert plan.fits and plan.linear_attention == "torch"
    with pytest.raises(ModelError, match="without vision_config"):
        (tmp_path / "broken").mkdir()
        (tmp_path / "broken" / "config.json").write_text(json.dumps({"model_type": "qwen3_5", "text_config": text}))
        resolve_model(str(tmp_path / "broken"))


def test_qwen3_next_names_its_lora_targets_and_its_thinking_template(tmp_path):
    """swift's all-linear on Qwen3-Next names gate/up/down_proj, which peft 0.20 turns into LoRA on all 512 routed experts
    (and refuses with dropout): the plan names attention, the Gated DeltaNet and the shared expert's gate instead."""
    argv = sft_argv(plan_for(model="Qwen/Qwen3-Next-80B-A3B-Instruct", gpus="h100", profile="large"))  # fits nothing
    at = argv.index("--target_modules") + 1
    assert argv[at : at + 8] == [
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "in_proj_qkvz",
        "in_proj_ba",
        "out_proj",
        "shared_expert_gate",
    ]
    assert argv[at + 8].startswith("--")
    folder = tmp_path / "Qwen3-Next-80B-A3B-Thinking"
    folder.mkdir()
    config = {"model_type": "qwen3_next", "hidden_size": 2048, "num_hidden_layers": 48, "num_attention_heads": 16,
              "num_key_value_heads": 2, "head_dim": 256, "vocab_size": 151936, "num_experts": 512, "num_experts_per_tok": 10,
              "moe_intermediate_size": 512, "shared_expert_intermediate_size": 512}  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config))
    model = resolve_model(str(folder))
    assert model.swift_template == "qwen3_thinking" and model.shape == resolve_model("Qwen3-Next-80B-A3B-Thinking").shape


def test_an_unreachable_hub_is_one_short_fetch(tmp_path, monkeypatch):
    """An unknown id on a hub that accepts the connection and never answers: one request, given up after the timeout."""
    import socket
    import time

    from qwen_tune.planning import models

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)
    monkeypatch.setattr(models, "HUB_TIMEOUT_SECONDS", 1)
    fetch = models.hub_fetcher(offline=False, use_hf=True, environ={"HF_ENDPOINT": f"http://127.0.0.1:{silent.getsockname()[1]}"})
    started = time.monotonic()
    with pytest.raises(
        ModelError,
        match=r"cannot fetch config.json of someone/x from the hub \(127.0.0.1:\d+ cannot be reached: no answer in 1 s\)",
    ):
        resolve_model("someone/x", fetch=fetch, cache_dir=tmp_path)
    assert time.monotonic() - started < 5
    silent.close()
    url, headers = models.hub_file_url("Qwen/Qwen3.5-9B", "config.json", use_hf=False, environ={})
    assert url == "https://www.modelscope.cn/api/v1/models/Qwen/Qwen3.5-9B/repo?Revision=master&FilePath=config.json"
    url, headers = models.hub_file_url("Qwen/Qwen3.5-9B", "config.json", use_hf=True, environ={"HF_TOKEN": "t"})
    assert url == "https://huggingface.co/Qwen/Qwen3.5-9B/resolve/main/config.json" and headers == {"Authorization": "Bearer t"}


@pytest.mark.parametrize("gpus", ["h100", "2xrtx4090", "4xa100-40gb"])
def test_full_fine_tuning_plans(gpus):
    plan = plan_for(recipe="self-cognition-qwen3-8b-full", gpus=gpus)
    check_golden(f"plan-full-qwen3-8b-{gpus}.txt", scrub(plan_text(plan)) + "\n")
    assert not plan.warnings
    argv = sft_argv(plan)
    assert argv[argv.index("--tuner_type") + 1] == "full"
    assert not [flag for flag in argv if flag.startswith(("--lora", "--target_modules"))]


def test_full_fine_tuning_rules():
    with pytest.raises(ConfigError, match="--tuner lora needs a lora section"):
        plan_for(recipe="self-cognition-qwen3-8b-full", tuner="lora", gpus="h100")
    with pytest.raises(DoesNotFit, match="full fine-tuning needs bfloat16"):
        plan_for(tuner="full", gpus="2xv100-32gb")
    refusal = pytest.raises(DoesNotFit, match="2× NVIDIA H100 80GB HBM3 with zero3_offload and 248 GiB of host memory")
    with refusal:
        plan_for(model="Qwen/Qwen3-14B", tuner="full", gpus="h100")
    plan = plan_for(model="Qwen/Qwen3-14B", tuner="full", gpus="2xh100")
    assert plan.setup.zero == "zero3_offload" and any("pins" in r for r in plan.reasons)
    small = plan_for(model="Qwen/Qwen2.5-0.5B-Instruct", tuner="full", gpus="rtx4090")
    assert any("skipped qlora: trains LoRA on 4-bit weights" in r for r in small.reasons) or small.profile.name != "qlora"
    assert any("is a LoRA rate" in w for w in plan.warnings)


def test_full_fine_tuning_ladder_never_turns_into_lora():
    plan = plan_for(model="Qwen/Qwen2.5-7B-Instruct", tuner="full", gpus="2xrtx4090")
    assert plan.setup.zero == "zero3_offload"
    while (step := fallback(plan, shipped_profiles())) is not None:
        plan = step[0]
        assert plan.recipe.tuner == "full" and plan.profile.quantization == "none"
    zero3 = replace(plan, setup=Setup(1, True, "zero3"))
    assert fallback(zero3, shipped_profiles())[1] == "DeepSpeed zero3 → zero3_offload"


def test_hub_ids_in_any_case_with_or_without_the_prefix():
    for given in ("Qwen/Qwen3-8B", "qwen/qwen3-8b", "Qwen3-8B", "QWEN3-8B"):
        model = resolve_model(given)
        assert model.source == "Qwen/Qwen3-8B" and model.local_dir is None
    assert resolve_model("Qwen2.5-Coder-7B-Instruct").shape == resolve_model("Qwen/Qwen2.5-7B-Instruct").shape
    assert resolve_model("Qwen/Qwen3-30B-A3B").shape.is_moe
    assert sft_argv(plan_for(model="qwen3-8b", gpus="h100"))[3] == "Qwen/Qwen3-8B"


def test_an_unknown_hub_id_fetches_its_config_and_tokenizer(tmp_path):
    calls = []

    def fetch(repo_id, filename, folder):
        calls.append((repo_id, filename))
        folder.mkdir(parents=True, exist_ok=True)
        if filename == "config.json":
            (folder / filename).write_text((REPO / "tests/data/tiny-config/config.json").read_text())
        elif filename == "tokenizer.json":
            raise OSError("no tokenizer.json in this repo")  # only config.json is required
        else:
            (folder / filename).write_text("{}")
        return folder / filename

    model = resolve_model("someone/qwen-finetune", fetch=fetch, cache_dir=tmp_path)
    plan = make_plan(recipe=load_recipe("self-cognition-qwen2.5-7b"), model=model, inventory=gpu_inventory(24),
                     profiles=shipped_profiles(), data=DataSummary(100, 80, "estimated"), dataset_path="d", output_dir="o", machine=PLAIN_MACHINE)  # fmt: skip
    assert json.loads(json.dumps(plan_json(plan)))["model"]["files_dir"] == str(tmp_path / "someone--qwen-finetune")
    assert sft_argv(plan)[3] == "someone/qwen-finetune" and "--check_model" not in sft_argv(plan)
    assert sft_argv(plan)[sft_argv(plan).index("--model_type") + 1] == "qwen2"  # swift cannot infer it for an id it does not know
    assert model.source == "someone/qwen-finetune" and model.local_dir is None and model.shape.family == "qwen2"
    assert [name for _, name in calls] == ["config.json", "tokenizer.json", "tokenizer_config.json"]
    resolve_model("someone/qwen-finetune", fetch=fetch, cache_dir=tmp_path)
    assert len(calls) == 3  # cached

    def offline_hub(repo_id, filename, folder):
        raise ConnectionError("no network")

    with pytest.raises(ModelError, match="cannot fetch config.json of someone/else"):
        resolve_model("someone/else", fetch=offline_hub, cache_dir=tmp_path)
    with pytest.raises(ModelError, match="unknown hub model someone/else, and HF_HUB_OFFLINE is set"):
        resolve_model("someone/else")


def test_hub_fetcher_is_none_offline():
    from qwen_tune.planning.models import hub_fetcher

    assert hub_fetcher(offline=True, use_hf=False) is None
    assert callable(hub_fetcher(offline=False, use_hf=False))


def test_a_local_qwen3_moe_dir_plans(tmp_path):
    config = {"model_type": "qwen3_moe", "hidden_size": 2048, "num_hidden_layers": 48, "num_attention_heads": 32,
              "num_key_value_heads": 4, "head_dim": 128, "intermediate_size": 6144, "vocab_size": 151936,
              "num_experts": 128, "num_experts_per_tok": 8, "moe_intermediate_size": 768}  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(config))
    model = resolve_model(str(tmp_path))
    assert model.shape == resolve_model("Qwen/Qwen3-30B-A3B").shape
    assert (model.swift_model_type, model.swift_template) == ("qwen3_moe", "qwen3")


def test_zero3_offload_needs_the_host_memory_it_pins():
    recipe, data = load_recipe("self-cognition-qwen3-8b-full"), DataSummary(n_rows=100, max_tokens=80, how="estimated")
    model = resolve_model(recipe.model)

    def plan_with_ram(gib_of_ram):
        inventory = replace(gpu_inventory(24, 24), host_memory_bytes=gib_of_ram * 2**30)
        return make_plan(recipe=recipe, model=model, inventory=inventory, profiles=shipped_profiles(), data=data,
                         dataset_path="d.jsonl", output_dir="out", machine=PLAIN_MACHINE)  # fmt: skip

    assert plan_with_ram(256).setup.zero == "zero3_offload"
    assert any("pins 137.31 GiB of host memory on each node of 256.00 GiB" in r for r in plan_with_ram(256).reasons)
    with pytest.raises(DoesNotFit):
        plan_with_ram(64)


def test_each_card_is_timed_by_its_own_peak_and_the_plan_tells_the_whole_run():
    """An H20 (148 dense bf16 TFLOP/s) was timed as an H100 (989): both are compute capability 9.0."""
    from qwen_tune.planning.plan import LOAD_SECONDS_PER_GIB, STARTUP_SECONDS
    from qwen_tune.report import _duration as duration

    h100, h20 = plan_for(gpus="h100"), plan_for(gpus="h20")
    assert h20.step_seconds > 2 * h100.step_seconds
    load = h100.model.shape.n_params * 2 / (1 << 30) * LOAD_SECONDS_PER_GIB
    assert h100.estimated_seconds == round(h100.total_steps * h100.step_seconds + STARTUP_SECONDS + load, 1)
    assert h100.download_bytes == h100.model.shape.n_params * 2
    text = plan_text(h20)
    assert f"Time:      about {duration(h20.estimated_seconds)} ({h20.total_steps} optimizer steps" in text
    assert "Download:  Qwen/Qwen2.5-7B-Instruct from the hub (ModelScope unless USE_HF=1): about 14.2 GiB" in text
    cpu = plan_for(recipe="demo-tiny-cpu", gpus="cpu")
    assert cpu.estimated_seconds is None and cpu.download_bytes is None and "Download:  nothing" in plan_text(cpu)


def test_the_profile_line_says_what_trains():
    assert "Profile:   large: full fine-tuning in bfloat16; " in plan_text(
        plan_for(recipe="self-cognition-qwen3-8b-full", gpus="h100")
    )
    assert "Profile:   24gb: LoRA in bfloat16; " in plan_text(plan_for(gpus="rtx4090"))
    assert "Profile:   qlora: QLoRA (LoRA on 4-bit NF4 base weights) in float16; " in plan_text(plan_for(gpus="t4"))
