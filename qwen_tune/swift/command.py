"""The argv and environment of every swift command qwen-tune starts: data, never a shell string.

CI checks every flag `sft_argv` emits against swift's own argument parser (tests/test_swift_args.py).
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from qwen_tune.errors import SwiftMissing
from qwen_tune.swift.checkpoints import SAVE_TOTAL_LIMIT
from qwen_tune.swift.version import INSTALL

if TYPE_CHECKING:
    from qwen_tune.planning.plan import Plan

# torchrun's variables: training's alone; infer and export run as one process.
TORCHRUN_ENV = ("NPROC_PER_NODE", "NNODES", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT")


def sft_argv(plan: Plan) -> list[str]:
    """The `swift sft` command line."""
    r, s = plan.recipe, plan.setup
    argv = ["swift", "sft", *option("--model", plan.model.source)]
    if plan.model.swift_model_type:
        argv += ["--model_type", plan.model.swift_model_type, "--template", plan.model.swift_template]
    if plan.model.local_dir:
        argv += ["--check_model", "false"]
    if plan.hub and not plan.model.local_dir:
        argv += ["--use_hf", "true" if plan.hub == "hf" else "false"]
    argv += [*option("--dataset", plan.dataset_path), *option("--system", r.system)]
    argv += ["--tuner_type", r.tuner, "--torch_dtype", plan.dtype]
    if plan.profile.quantization == "nf4":
        argv += [
            "--quant_method", "bnb",
            "--quant_bits", "4",
            "--bnb_4bit_quant_type", "nf4",
            "--bnb_4bit_use_double_quant", "true",
            "--bnb_4bit_compute_dtype", plan.dtype,
        ]  # fmt: skip
    argv += [
        "--num_train_epochs", f"{r.epochs:g}",
        "--per_device_train_batch_size", str(s.micro_batch_size),
        "--gradient_accumulation_steps", str(plan.grad_accum),
        "--learning_rate", f"{r.learning_rate:g}",
    ]  # fmt: skip
    if r.tuner == "lora":
        argv += [
            "--lora_rank", str(r.lora_rank),
            "--lora_alpha", str(r.lora_alpha),
            "--lora_dropout", f"{r.lora_dropout:g}",
            "--target_modules", *plan.model.shape.lora_target_modules(r.target_modules),
        ]  # fmt: skip
    argv += [
        "--max_length", str(r.max_length),
        "--warmup_ratio", f"{r.warmup_ratio:g}",
        "--gradient_checkpointing", "true" if s.gradient_checkpointing else "false",
        "--attn_impl", plan.attention,
    ]  # fmt: skip
    if s.packing:
        # One pack of at most packing_length tokens a micro-batch, no padding: swift's packing, with flash-attn, or
        # with torch_varlen, which the plugin registers (swift imports it before it checks --attn_impl).
        argv += ["--packing", "true", "--packing_length", str(s.packing.tokens)]
        argv += ["--external_plugins", str(VARLEN_PLUGIN)] if plan.attention == "torch_varlen" else []
    if s.liger:
        argv += ["--use_liger_kernel", "true"]
    if s.zero:
        argv += ["--deepspeed", s.zero]
    if plan.inventory.is_cpu and plan.n_devices > 1:
        # Without it the trainer sees no GPU and no distributed setup: each CPU process would train alone
        # (and all of them save); with it, accelerate joins them as DDP over gloo.
        argv += ["--use_cpu", "true"]
    if plan.save_steps:
        argv += ["--save_steps", str(plan.save_steps)]
    argv += [
        "--split_dataset_ratio", "0",
        "--eval_strategy", "no",
        "--save_total_limit", str(SAVE_TOTAL_LIMIT),
        "--logging_steps", "1",
        "--dataloader_num_workers", "0",
        "--report_to", "none",
        "--add_version", "false",
        *option("--output_dir", plan.output_dir),
    ]  # fmt: skip
    return argv


def option(flag: str, value: str) -> list[str]:
    """A flag and its value as two words; as one, flag=value, where the value starts with '-': swift's argparse takes
    such a word for an option (`--system --help` and `--output_dir -runs/x` fail: "expected one argument")."""
    return [f"{flag}={value}"] if value.startswith("-") else [flag, value]


def option_value(argv: list[str], flag: str) -> str | None:
    """The value of a flag in an argv, written either way (option); None where it is absent."""
    for i, word in enumerate(argv):
        if word == flag and i + 1 < len(argv):
            return argv[i + 1]
        if word.startswith(f"{flag}="):
            return word[len(flag) + 1 :]
    return None


def without_option(argv: list[str], flag: str) -> list[str]:
    """The argv without a flag and its value, written either way (option)."""
    kept: list[str] = []
    skip = False
    for word in argv:
        if skip:
            skip = False
        elif word == flag:
            skip = True
        elif not word.startswith(f"{flag}="):
            kept.append(word)
    return kept


def sft_env(plan: Plan) -> dict[str, str]:
    """The variables `swift sft` is started with, on top of the caller's environment."""
    if plan.inventory.is_cpu:
        env = {"CUDA_VISIBLE_DEVICES": ""}
    else:
        # NVML and nvidia-smi number GPUs in PCI bus order; CUDA must too, or indices drift.
        env = {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": ",".join(str(g.index) for g in plan.inventory.gpus)}
    if plan.n_devices > 1:
        env["NPROC_PER_NODE"] = str(plan.inventory.per_node)
    if plan.nodes.count > 1:
        env.update(NNODES=str(plan.nodes.count), NODE_RANK=str(plan.nodes.rank), MASTER_ADDR=plan.nodes.master_addr)
        if plan.nodes.master_port:
            env["MASTER_PORT"] = str(plan.nodes.master_port)
    if not plan.inventory.is_cpu:
        # Many short, differently padded batches fragment the caching allocator; growable segments
        # keep the reserved pool near what is allocated, which is what the estimate predicts.
        env["PYTORCH_CUDA_ALLOC_CONF"] = "expandable_segments:True"
        # torch 2.11 tries cuDNN attention first on Hopper and plans anew for every batch shape: last, the 7B job
        # trained in 10.4 s against 13.4 s, the same loss (H200, 2026-11-24, docs/hardware-validation.md).
        env["TORCH_CUDNN_SDPA_DEPRIORITIZED"] = "1"
    if plan.model.local_dir:
        env["HF_HUB_OFFLINE"] = "1"
    if plan.bytecode_cache:
        # This Python writes no bytecode: without a cache of our own, each swift process compiles its imports again.
        env.update(PYTHONDONTWRITEBYTECODE="", PYTHONPYCACHEPREFIX=plan.bytecode_cache)
    return env


def shell_command(plan: Plan) -> str:
    """The exact `swift sft` command with its environment, shell-quoted, to read or paste."""
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sft_env(plan).items())
    return f"{env} {shlex.join(sft_argv(plan))}".strip()


def rerun_script(plan: Plan, run_dir: Path, cwd: Path, pythonpath: str | None) -> str:
    """command.sh: this run's `swift sft` again, from any shell: started as qwen-tune starts it (the same Python on
    swift's own sft script, or torchrun on it; else the swift command qwen-tune found, by its full path), from the
    directory the plan was made in (its relative paths), each time into a new directory beside command.sh."""
    argv, env = sft_argv(plan), sft_env(plan)
    command = launchable(without_option(argv, "--output_dir"), env)
    assignments = [f"{k}={v}" for k, v in {**env, **({"PYTHONPATH": pythonpath} if pythonpath else {})}.items()]
    return "\n".join([
        "#!/bin/sh",
        "# This run's training again, as qwen-tune started it (command.json has the `swift sft` form), from any shell.",
        "# Each start trains into a new directory beside this file, rerun-DATE-TIME/, never into this run's swift/.",
        f"cd {shlex.quote(str(cwd))} || exit 1",
        f"out={shlex.quote(str(run_dir.absolute()))}/rerun-$(date +%Y%m%d-%H%M%S)",
        'mkdir "$out" || exit 1',
        'echo "training into $out/swift"',
        f'exec env {shlex.join(assignments)} {shlex.join(command)} --output_dir "$out/swift"',
        "",
    ])  # fmt: skip


def downloads_from_hf(sft: list[str], env: dict[str, str]) -> bool | None:
    """Whether this `swift sft` downloads its model from Hugging Face (True) or ModelScope (False); None when it
    downloads nothing (a local directory, or the hub switched off)."""
    model = option_value(sft, "--model") or ""
    if not model or Path(model).is_dir() or env.get("HF_HUB_OFFLINE") == "1":
        return None
    if (use_hf := option_value(sft, "--use_hf")) is not None:
        return use_hf == "true"
    return env.get("USE_HF", "").lower() in ("1", "true")  # swift's own default: ModelScope unless USE_HF


def resume_argv(sft: list[str], checkpoint: Path | None) -> list[str]:
    """The same `swift sft`, continuing from a checkpoint (its model, optimizer and step)."""
    return sft + (["--resume_from_checkpoint", str(checkpoint)] if checkpoint else [])


# After training nothing runs packed: swift infer, deploy and export take the run's --attn_impl from the checkpoint's
# args.json unless told, and torch_varlen is a name only the plugin registers, which they do not import (no plugin a
# file names is imported: swift/launch.py). They are told sdpa, which generation runs anyway.
AFTER_TRAINING_ATTENTION = ("--attn_impl", "sdpa")


def infer_argv(model_args: list[str], questions: Path, answers: Path, max_new_tokens: int) -> list[str]:
    """Greedy answers of a model: `--adapters CKPT` (swift reads the base model, template and quantization from its
    args.json) or `--model DIR` (model_args, as option() writes them)."""
    return [
        "swift", "infer",
        *model_args,
        *option("--val_dataset", str(questions)),
        "--temperature", "0",
        "--max_new_tokens", str(max_new_tokens),
        *option("--result_path", str(answers)),
        *AFTER_TRAINING_ATTENTION,
    ]  # fmt: skip


TRAIN_PROBE = Path(__file__).with_name("train_probe.py")  # swift imports it: --external_plugins
VARLEN_PLUGIN = Path(__file__).with_name("plugins") / "varlen_attention.py"  # the attention packed rows run through
TRAIN_PROBE_CALLBACK, TRAIN_PROBE_ENV = "qwen_tune_probe", "QWEN_TUNE_PROBE"  # train_probe.py's CALLBACK, REQUEST_ENV


def with_train_probe(argv: list[str], env: dict[str, str], request: Path) -> tuple[list[str], dict[str, str]] | None:
    """`swift sft` that also answers the identity probes at the end of training (swift/train_probe.py), in its own
    process: one process only (torchrun's DDP and DeepSpeed leave the model split or wrapped); None otherwise."""
    if "--deepspeed" in argv or any(k in env for k in ("NPROC_PER_NODE", "NNODES")):
        return None
    if os.environ.get("QWEN_TUNE_TRAIN_PROBE") == "0":  # to compare with the worker, which loads the adapter again
        return None
    return [*with_plugin(argv, TRAIN_PROBE), "--callbacks", TRAIN_PROBE_CALLBACK], {**env, TRAIN_PROBE_ENV: str(request)}


def with_plugin(argv: list[str], plugin: Path) -> list[str]:
    """argv with one more file in --external_plugins: swift's flag takes a list, and a second flag would replace the first."""
    if "--external_plugins" not in argv:
        return [*argv, "--external_plugins", str(plugin)]
    at = argv.index("--external_plugins") + 1
    while at < len(argv) and not argv[at].startswith("--"):
        at += 1
    return [*argv[:at], str(plugin), *argv[at:]]


DISTILL_MAX_NEW_TOKENS = 256
# The flags of `swift sft` that say which base model, how loaded, and with which template and system prompt.
_BASE_MODEL_FLAGS = ("--model", "--model_type", "--template", "--system", "--torch_dtype", "--attn_impl",
                     "--quant_method", "--quant_bits", "--bnb_4bit_quant_type", "--bnb_4bit_use_double_quant",
                     "--bnb_4bit_compute_dtype")  # fmt: skip


def distill_argv(sft: list[str], questions: Path, answers: Path) -> list[str]:
    """The base model (as `swift sft` loads it, no adapter) answering questions greedily, in batches."""
    base, i = [], 2
    while i < len(sft):  # flag and value as two words, or one (option)
        words = sft[i : i + (1 if "=" in sft[i] else 2)]
        if sft[i].split("=", 1)[0] in _BASE_MODEL_FLAGS:
            base += words
        i += len(words)
    if "torch_varlen" in base:  # the base model answers padded batches: no plugin in this process
        base[base.index("torch_varlen")] = "sdpa"
    return [
        "swift", "infer", *base,
        *option("--val_dataset", str(questions)),
        "--temperature", "0",
        "--max_new_tokens", str(DISTILL_MAX_NEW_TOKENS),
        "--max_batch_size", "64",
        *option("--result_path", str(answers)),
    ]  # fmt: skip


def is_adapter(checkpoint: str) -> bool:
    """A LoRA checkpoint (an adapter on the base model), not full fine-tuning's whole model."""
    return (Path(checkpoint) / "adapter_config.json").is_file()


def tuned_model(checkpoint: str) -> list[str]:
    """How swift loads the tuned model: the adapter on its base model, or full fine-tuning's checkpoint as the model
    (swift then reads its args.json as it does an adapter's)."""
    return option("--adapters" if is_adapter(checkpoint) else "--model", checkpoint)


def probe_args(checkpoint: str) -> list[str]:
    """swift infer's arguments for loading the tuned adapter once (swift/infer_worker.py's probe asks it greedily)."""
    return [*option("--adapters", checkpoint), "--temperature", "0", *AFTER_TRAINING_ATTENTION]


def chat_argv(checkpoint: str, max_new_tokens: int) -> list[str]:
    """swift's interactive chat with the tuned model: reads stdin, streams each answer (system prompt from args.json)."""
    return ["swift", "infer", *tuned_model(checkpoint), "--stream", "true", "--max_new_tokens", str(max_new_tokens),
            *AFTER_TRAINING_ATTENTION]  # fmt: skip


def deploy_argv(checkpoint: str, host: str, port: int, name: str) -> list[str]:
    """swift's OpenAI-compatible server (/v1/models, /v1/chat/completions) for the tuned model."""
    return [
        "swift", "deploy",
        *tuned_model(checkpoint),
        *option("--host", host),
        "--port", str(port),
        *option("--served_model_name", name),
        *AFTER_TRAINING_ATTENTION,
    ]  # fmt: skip


def export_argv(checkpoint: str, target: Path) -> list[str]:
    """Merge the adapter into the base weights."""
    return ["swift", "export", *option("--adapters", checkpoint), "--merge_lora", "true", *option("--output_dir", str(target)),
            *AFTER_TRAINING_ATTENTION]  # fmt: skip


def single_process_env(train_env: Mapping[str, str]) -> dict[str, str]:
    """Training's devices, as one process (infer, export): swift spreads a model over several GPUs by itself."""
    return swift_environment({k: v for k, v in train_env.items() if k not in TORCHRUN_ENV})


def swift_environment(added: Mapping[str, str], base: Mapping[str, str] | None = None) -> dict[str, str]:
    """What a swift process starts with: this environment, the plan's variables on top, unbuffered output. Where
    the hub is switched off (a local model), no MODELSCOPE_API_TOKEN: swift would log in to ModelScope with it at
    start-up, and fail on an offline box."""
    env = {**(os.environ if base is None else base), **added, "PYTHONUNBUFFERED": "1"}
    if env.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE"):
        env.pop("MODELSCOPE_API_TOKEN", None)
    for name in (LAUNCH_API_KEY_ENV, LAUNCH_HOSTS_ENV):  # only qwen-tune serve sets these, for its own server
        env.pop(name, None)
    return env


def swift_executable() -> str | None:
    """The `swift` of qwen-tune's own environment (beside sys.executable, so a venv need not be activated),
    else the one on PATH; None when there is neither."""
    beside = Path(sys.executable).parent / "swift"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("swift")


# swift/cli/main.py (cli_main) only starts a second Python on its route's script, or torchrun on it where
# NPROC_PER_NODE or NNODES is set (for these routes), passing torchrun the variables below in this order.
_ROUTE_SCRIPTS = {"sft": "sft.py", "infer": "infer.py", "export": "export.py", "deploy": "deploy.py"}
_TORCHRUN_ROUTES = ("sft", "infer")
_TORCHRUN_FLAGS = ("NPROC_PER_NODE", "MASTER_PORT", "NNODES", "NODE_RANK", "MASTER_ADDR")


def swift_cli_dir() -> Path | None:
    """swift/cli of this Python's ms-swift, found without importing it; None where this Python has none."""
    try:
        spec = importlib.util.find_spec("swift")
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        cli = Path(folder) / "cli"
        if (cli / "main.py").is_file():
            return cli
    return None


# swift/launch.py runs swift's route script with a model's own code switched off (swift 4.6 always trusts it).
LAUNCH = Path(__file__).with_name("launch.py")
LAUNCH_TRUST_FLAG, LAUNCH_API_KEY_ENV, LAUNCH_HOSTS_ENV = "--trust-remote-code", "QWEN_TUNE_API_KEY", "QWEN_TUNE_ALLOWED_HOSTS"
LAUNCH_MODULE_FLAG = "--module"  # swift/launch.py runs torchrun as `python -m` would, ended with qwen-tune


def launchable(argv: list[str], env: Mapping[str, str], *, trust_remote_code: bool = False) -> list[str]:
    """The argv to start, in the environment env. The printed and recorded one says `swift ...`; what runs is
    what swift's launcher would run, started directly where this Python has swift: the launcher is a Python of
    its own that imports torch only to start another (3.7 s on the H100 box), and its route script starts through
    swift/launch.py, which keeps a model's own code off unless trust_remote_code. Else the `swift` that is
    installed (and qwen-tune's refusal of a model with code of its own, before the start, is the only lock)."""
    if not argv or argv[0] != "swift":
        return argv
    route, cli = (argv[1] if len(argv) > 1 else ""), swift_cli_dir()
    if cli is None or route not in _ROUTE_SCRIPTS:
        return [swift_executable() or "swift", *argv[1:]]
    script = [str(LAUNCH), *([LAUNCH_TRUST_FLAG] if trust_remote_code else []), str(cli / _ROUTE_SCRIPTS[route])]
    if route in _TORCHRUN_ROUTES and ("NPROC_PER_NODE" in env or "NNODES" in env):
        torchrun = [x for k in _TORCHRUN_FLAGS if k in env for x in (f"--{k.lower()}", env[k])]
        return [sys.executable, str(LAUNCH), LAUNCH_MODULE_FLAG, "torch.distributed.run", *torchrun, *script, *argv[2:]]
    return [sys.executable, *script, *argv[2:]]


def require_swift() -> None:
    """Refuse before anything is written when swift is missing."""
    if swift_cli_dir() is None and swift_executable() is None:
        raise missing_swift()


def missing_swift() -> SwiftMissing:
    return SwiftMissing(f"the `swift` command is not installed: {INSTALL}")
