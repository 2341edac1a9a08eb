"""Every flag the planner emits is accepted by the installed ms-swift's own argument parser.

swift rejects unknown flags only after it has loaded the model; here its HfArgumentParser
parses our argv without running __post_init__, strictly (no abbreviations), so a renamed
or misspelt flag fails in CI, not on the user's GPU.
"""

import argparse
from pathlib import Path

import pytest
from test_plan import MATRIX, plan_for

from qwen_tune.swift.command import VARLEN_PLUGIN, sft_argv, sft_env

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.requires_swift


def sft_arguments():
    from swift.arguments import SftArguments

    return SftArguments


def strict_parser(cls):
    from swift.utils.utils import _patch_get_type_hints
    from transformers import HfArgumentParser

    with _patch_get_type_hints():  # swift's own parse_args patches type hints the same way
        parser = HfArgumentParser([cls], allow_abbrev=False)
    parser.exit_on_error = False

    def fail(message):
        raise ValueError(message)

    parser.error = fail
    return parser


def unknown_flags(argv, cls=None):
    _, unknown = strict_parser(cls or sft_arguments()).parse_known_args(argv)
    return unknown


@pytest.mark.parametrize("recipe, profile, gpus", MATRIX)
def test_rendered_argv_is_accepted_by_swift(recipe, profile, gpus):
    argv = sft_argv(plan_for(recipe=recipe, profile=profile, gpus=gpus))
    assert argv[:2] == ["swift", "sft"]
    assert unknown_flags(argv[2:]) == []


@pytest.mark.parametrize("hub", ["hf", "modelscope"])
def test_hub_flag_is_accepted_by_swift(hub):
    from dataclasses import replace

    argv = sft_argv(replace(plan_for(recipe=MATRIX[0][0], profile=MATRIX[0][1], gpus=MATRIX[0][2]), hub=hub))
    assert "--use_hf" in argv and unknown_flags(argv[2:]) == []


def test_cpu_processes_flags_are_accepted_by_swift():
    from pathlib import Path

    from conftest import FIXED_NOW, PLAIN_MACHINE

    from qwen_tune.planning.jobs import JobOptions, prepare

    tiny = str(Path(__file__).parent / "data" / "tiny-config")
    options = JobOptions(output_dir="runs", gpus="cpu:2", recipe="demo-tiny-cpu", model=tiny)
    argv = sft_argv(prepare(options, PLAIN_MACHINE, for_run=False, now=FIXED_NOW).plan)
    assert argv[argv.index("--use_cpu") + 1] == "true" and unknown_flags(argv[2:]) == []


def test_parser_rejects_the_blog_flags():
    assert unknown_flags(["--train_type", "lora"]) == ["--train_type", "lora"]
    assert unknown_flags(["--use_gradient_checkpointing", "true"]) == ["--use_gradient_checkpointing", "true"]
    with pytest.raises(argparse.ArgumentError):
        unknown_flags(["--torch_dtype", "bf16"])
    with pytest.raises(argparse.ArgumentError):
        unknown_flags(["--gradient_checkpointing", "maybe"])


def flag_values(argv, flag):
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def test_free_text_flags_name_things_swift_has():
    """swift's parser takes these as plain strings; check them against swift's registries."""
    from pathlib import Path

    import swift
    from swift.model import MODEL_MAPPING
    from swift.template import TEMPLATE_MAPPING

    presets = Path(swift.__file__).parent / "config"
    for recipe, profile, gpus in MATRIX:
        argv = sft_argv(plan_for(recipe=recipe, profile=profile, gpus=gpus))
        for preset in flag_values(argv, "--deepspeed"):
            assert (presets / f"{preset}.json").is_file(), preset
        assert all(v in MODEL_MAPPING for v in flag_values(argv, "--model_type"))
        assert all(v in TEMPLATE_MAPPING for v in flag_values(argv, "--template"))
        assert set(flag_values(argv, "--attn_impl")) <= {"sdpa", "flash_attn", "torch_varlen"}
        if flag_values(argv, "--attn_impl") == ["torch_varlen"]:  # a name the plugin registers, not swift
            plugins = argv[argv.index("--external_plugins") + 1 :]
            assert str(VARLEN_PLUGIN) in plugins and flag_values(argv, "--packing") == ["true"]
        assert flag_values(argv, "--tuner_type") in (["lora"], ["full"])
    assert "qwen3_moe" in MODEL_MAPPING and "qwen3" in TEMPLATE_MAPPING  # a local Qwen3 MoE directory's names
    from qwen_tune.planning.models import SWIFT_NAMES

    for model_type, template in SWIFT_NAMES.values():  # every local directory's names, Qwen3.5's among them
        assert model_type in MODEL_MAPPING and template in TEMPLATE_MAPPING, (model_type, template)


@pytest.mark.parametrize("model", ["Qwen/Qwen3-Next-80B-A3B-Instruct", "Qwen/Qwen3.5-35B-A3B", "Qwen/Qwen3.6-27B"])
def test_hybrid_models_flags_are_accepted_by_swift(model):
    """Qwen3-Next's named --target_modules list among them (swift takes a list there)."""
    argv = sft_argv(plan_for(model=model, gpus="h100", profile="large"))
    assert unknown_flags(argv[2:]) == []
    parsed, _ = strict_parser(sft_arguments()).parse_known_args(argv[2:])
    assert parsed.target_modules == argv[argv.index("--target_modules") + 1 : argv.index("--max_length")]


def test_swift_knows_every_hybrid_hub_id_as_the_family_it_is():
    """swift infers model_type and template for the Qwen3.5/3.6/Qwen3-Next ids we name: they must be in its registry, and
    as the family our shape says (it loads Qwen3.5's composite checkpoint, vision tower included)."""
    from swift.model import MODEL_MAPPING

    from qwen_tune.planning.models import BUILTIN_SHAPES, HUB_IDS

    registered = {m.ms_model_id: meta.model_type for meta in MODEL_MAPPING.values() for g in meta.model_groups for m in g.models}
    for hub_id in HUB_IDS.values():
        family = BUILTIN_SHAPES[hub_id.lower()].family
        if family in ("qwen3_5", "qwen3_5_moe", "qwen3_next"):
            assert registered.get(hub_id) == family, hub_id


def test_the_in_training_probe_flags_are_accepted_by_swift(tmp_path):
    from qwen_tune.swift.command import with_train_probe

    plan = plan_for(recipe="demo-tiny-cpu", profile="cpu", gpus="cpu")
    argv, env = with_train_probe(sft_argv(plan), sft_env(plan), tmp_path / "request.json")
    assert unknown_flags(argv[2:]) == [] and env["QWEN_TUNE_PROBE"] == str(tmp_path / "request.json")
    assert with_train_probe(sft_argv(plan), {**sft_env(plan), "NPROC_PER_NODE": "2"}, tmp_path / "request.json") is None


def test_the_plugin_registers_the_callback_the_flags_name():
    from qwen_tune.swift import train_probe
    from qwen_tune.swift.command import TRAIN_PROBE_CALLBACK, TRAIN_PROBE_ENV

    assert (train_probe.CALLBACK, train_probe.REQUEST_ENV) == (TRAIN_PROBE_CALLBACK, TRAIN_PROBE_ENV)
    assert train_probe.CALLBACK in __import__("swift.callbacks").callbacks.callbacks_map


@pytest.mark.parametrize("recipe, profile, gpus", MATRIX)
def test_the_base_models_answers_are_asked_with_flags_swift_infer_accepts(recipe, profile, gpus, tmp_path):
    """Self-distillation (--general-rows) loads the base model exactly as training does, without an adapter."""
    from qwen_tune.swift.command import distill_argv

    sft = sft_argv(plan_for(recipe=recipe, profile=profile, gpus=gpus))
    argv = distill_argv(sft, tmp_path / "q.jsonl", tmp_path / "a.jsonl")
    assert (
        argv[:2] == ["swift", "infer"] and unknown_flags(argv[2:], __import__("swift.arguments").arguments.InferArguments) == []
    )
    for flag in ("--model", "--system", "--torch_dtype", "--quant_bits"):
        assert flag_values(argv, flag) == flag_values(sft, flag)
    assert "--dataset" not in argv and "--lora_rank" not in argv


def test_the_identity_checks_swift_infer_flags_are_accepted_by_swift(tmp_path):
    """The fallback `swift infer` (adapter, then with thinking on) and the worker's arguments."""
    from qwen_tune.swift.command import infer_argv, probe_args

    infer = __import__("swift.arguments").arguments.InferArguments
    argv = infer_argv(["--adapters", "ckpt"], tmp_path / "q.jsonl", tmp_path / "a.jsonl", 64) + ["--enable_thinking", "true"]
    assert unknown_flags(argv[2:], infer) == [] and unknown_flags(probe_args("ckpt"), infer) == []


def test_the_thinking_templates_are_swifts_own():
    """qwen-tune tells plain `swift infer` to think from the adapter's template: swift's registry decides which think."""
    from swift.template import TEMPLATE_MAPPING

    from qwen_tune.swift.infer import HYBRID_TEMPLATES, THINKING_TEMPLATES

    qwen = {k: m for k, m in TEMPLATE_MAPPING.items() if k.startswith(("qwen", "qwq"))}
    assert set(HYBRID_TEMPLATES) == {k for k, m in qwen.items() if m.is_thinking and m.non_thinking_prefix}
    assert set(THINKING_TEMPLATES) == {k for k, m in qwen.items() if m.is_thinking and not m.non_thinking_prefix}


@pytest.mark.parametrize(
    "route, env",
    [
        ("sft", {}),
        ("sft", {"NPROC_PER_NODE": "2"}),
        ("sft", {"NPROC_PER_NODE": "8", "NNODES": "2", "NODE_RANK": "1", "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29511"}),
        ("infer", {}),
        ("export", {}),
        ("deploy", {}),
    ],
)
def test_what_runs_is_what_swifts_launcher_would_run(route, env, monkeypatch):
    """qwen-tune starts swift's route script itself, skipping the launcher's Python: swift's own cli_main, given the
    same command and environment, would start exactly this argv, with swift/launch.py before the route script (it keeps
    a model's own code off unless --trust-remote-code)."""
    import subprocess
    import sys

    from swift.cli import main as swift_main

    from qwen_tune.swift.command import LAUNCH, LAUNCH_MODULE_FLAG, launchable

    argv = ["swift", route, "--model", "m", "--system", "a b"]
    started: list[list[str]] = []
    for name in ("NPROC_PER_NODE", "MASTER_PORT", "NNODES", "NODE_RANK", "MASTER_ADDR"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(sys, "argv", argv)
    monkeypatch.setattr(subprocess, "run", lambda args: started.append(args) or subprocess.CompletedProcess(args, 0))
    swift_main.cli_main()
    ran = launchable(argv, env)
    if ran[1:3] == [str(LAUNCH), LAUNCH_MODULE_FLAG]:  # torchrun, through swift/launch.py as `python -m` would run it
        ran = [ran[0], "-m", *ran[3:]]
    at = ran.index(str(LAUNCH))
    assert ran[:at] + ran[at + 1 :] == started[0]
    trusted = launchable(argv, env, trust_remote_code=True)
    last = len(trusted) - 1 - trusted[::-1].index(str(LAUNCH))  # the one before the route script
    assert trusted[last + 1] == "--trust-remote-code"


def parsed(argv, cls=None):
    namespace, unknown = strict_parser(cls or sft_arguments()).parse_known_args(argv)
    assert unknown == []
    return namespace


def test_values_that_start_with_a_dash_reach_swift_as_values(tmp_path):
    """`--system --help` made swift's argparse print its help, `--output_dir -runs/x` failed ("expected one
    argument"): such a value goes as --flag=VALUE, which swift's own parser reads as the value."""
    from qwen_tune.swift.command import distill_argv, export_argv, infer_argv, option

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        (REPO / "configs/recipes/demo-tiny-cpu.yaml").read_text().replace("system: You are", "system: --help You are")
    )
    plan = plan_for(recipe=str(recipe), model=str(REPO / "tests/data/tiny-config"), gpus="cpu", output_dir="-runs")
    argv = sft_argv(plan)
    assert (
        "--system=--help You are a helpful assistant." in argv
        and "--output_dir=-runs/20261123-120000-demo-tiny-cpu-tiny-config/swift" in argv
    )
    sft = parsed(argv[2:])
    assert sft.system == "--help You are a helpful assistant." and sft.output_dir.startswith("-runs/")
    assert sft.dataset == ["-runs/20261123-120000-demo-tiny-cpu-tiny-config/dataset.jsonl"]

    from swift.arguments import ExportArguments, InferArguments

    base = distill_argv(argv, Path("-runs/q.jsonl"), Path("-runs/a.jsonl"))
    infer = parsed(base[2:], InferArguments)
    assert infer.system == sft.system and infer.val_dataset == ["-runs/q.jsonl"] and infer.result_path == "-runs/a.jsonl"
    assert parsed(infer_argv(option("--adapters", "-runs/ck"), Path("q"), Path("a"), 64)[2:], InferArguments).adapters == [
        "-runs/ck"
    ]
    assert parsed(export_argv("-runs/ck", Path("-runs/merged"))[2:], ExportArguments).output_dir == "-runs/merged"


def test_the_cli_takes_an_output_dir_that_starts_with_a_dash(tmp_path):
    import json
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "qwen_tune", "plan", "--recipe", "demo-tiny-cpu", "--model", str(REPO / "tests/data/tiny-config"),
         "--gpus", "cpu", "--output-dir", "-runs", "--json"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    argv = json.loads(done.stdout)["argv"]
    assert any(word.startswith("--output_dir=-runs/") for word in argv) and parsed(argv[2:]).output_dir.startswith("-runs/")


def test_a_recipes_module_names_reach_swift_as_its_list(tmp_path):
    """`target_modules: q_proj, v_proj` is two names to swift (one word 'q_proj,v_proj' would match no module)."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text((REPO / "configs/recipes/demo-tiny-cpu.yaml").read_text().replace("all-linear", "q_proj, v_proj"))
    argv = sft_argv(plan_for(recipe=str(recipe), model=str(REPO / "tests/data/tiny-config"), gpus="cpu"))
    parsed, _ = strict_parser(sft_arguments()).parse_known_args(argv[2:])
    assert parsed.target_modules == ["q_proj", "v_proj"]
