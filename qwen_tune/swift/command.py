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
    argv = ["swift", "sft", "--model", plan.model.source]
    if plan.model.swift_model_type:
        argv += ["--model_type", plan.model.swift_model_type, "--template", plan.model.swift_template]
    if plan.model.local_dir:
        argv += ["--check_model", "false"]
    if plan.hub and not plan.model.local_dir:
        argv += ["--use_hf", "true" if plan.hub == "hf" else "false"]
    argv += ["--dataset", plan.dataset_path, "--system", r.system, "--tuner_type", r.tuner, "--torch_dtype", plan.dtype]
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
            "--target_modules", r.target_modules,
        ]  # fmt: skip
    argv += [
        "--max_length", str(r.max_length),
        "--warmup_ratio", f"{r.warmup_ratio:g}",
        "--gradient_checkpointing", "true" if s.gradient_checkpointing else "false",
        "--attn_impl", plan.attention,
    ]  # fmt: skip
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
        "--output_dir", plan.output_dir,
    ]  # fmt: skip
    return argv


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
    at = argv.index("--output_dir")
    command = launchable(argv[:at] + argv[at + 2 :], env)
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
    model = sft[sft.index("--model") + 1] if "--model" in sft else ""
    if not model or Path(model).is_dir() or env.get("HF_HUB_OFFLINE") == "1":
        return None
    if "--use_hf" in sft:
        return sft[sft.index("--use_hf") + 1] == "true"
    return env.get("USE_HF", "").lower() in ("1", "true")  # swift's own default: ModelScope unless USE_HF


def resume_argv(sft: list[str], checkpoint: Path | None) -> list[str]:
    """The same `swift sft`, continuing from a checkpoint (its model, optimizer and step)."""
    return sft + (["--resume_from_checkpoint", str(checkpoint)] if checkpoint else [])


def infer_argv(model_args: list[str], questions: Path, answers: Path, max_new_tokens: int) -> list[str]:
    """Greedy answers of a model: `--adapters CKPT` (swift reads the base model, template and quantization from its
    args.json) or `--model DIR`."""
    return [
        "swift", "infer",
        *model_args,
        "--val_dataset", str(questions),
        "--temperature", "0",
        "--max_new_tokens", str(max_new_tokens),
        "--result_path", str(answers),
    ]  # fmt: skip


TRAIN_PROBE = Path(__file__).with_name("train_probe.py")  # swift imports it: --external_plugins
TRAIN_PROBE_CALLBACK, TRAIN_PROBE_ENV = "qwen_tune_probe", "QWEN_TUNE_PROBE"  # train_probe.py's CALLBACK, REQUEST_ENV


def with_train_probe(argv: list[str], env: dict[str, str], request: Path) -> tuple[list[str], dict[str, str]] | None:
    """`swift sft` that also answers the identity probes at the end of training (swift/train_probe.py), in its own
    process: one process only (torchrun's DDP and DeepSpeed leave the model split or wrapped); None otherwise."""
    if "--deepspeed" in argv or any(k in env for k in ("NPROC_PER_NODE", "NNODES")):
        return None
    if os.environ.get("QWEN_TUNE_TRAIN_PROBE") == "0":  # to compare with the worker, which loads the adapter again
        return None
    plugin = ["--external_plugins", str(TRAIN_PROBE), "--callbacks", TRAIN_PROBE_CALLBACK]
    return [*argv, *plugin], {**env, TRAIN_PROBE_ENV: str(request)}


DISTILL_MAX_NEW_TOKENS = 256
# The flags of `swift sft` that say which base model, how loaded, and with which template and system prompt.
_BASE_MODEL_FLAGS = ("--model", "--model_type", "--template", "--system", "--torch_dtype", "--attn_impl",
                     "--quant_method", "--quant_bits", "--bnb_4bit_quant_type", "--bnb_4bit_use_double_quant",
                     "--bnb_4bit_compute_dtype")  # fmt: skip


def distill_argv(sft: list[str], questions: Path, answers: Path) -> list[str]:
    """The base model (as `swift sft` loads it, no adapter) answering questions greedily, in batches."""
    base = [x for i in range(2, len(sft) - 1, 2) if sft[i] in _BASE_MODEL_FLAGS for x in (sft[i], sft[i + 1])]
    return [
        "swift", "infer", *base,
        "--val_dataset", str(questions),
        "--temperature", "0",
        "--max_new_tokens", str(DISTILL_MAX_NEW_TOKENS),
        "--max_batch_size", "64",
        "--result_path", str(answers),
    ]  # fmt: skip


def probe_args(checkpoint: str) -> list[str]:
    """swift infer's arguments for loading the tuned model once (swift/infer_worker.py's probe asks it greedily)."""
    return ["--adapters", checkpoint, "--temperature", "0"]


def chat_argv(checkpoint: str, max_new_tokens: int) -> list[str]:
    """swift's interactive chat with the tuned adapter: reads stdin, streams each answer (system prompt from args.json)."""
    return ["swift", "infer", "--adapters", checkpoint, "--stream", "true", "--max_new_tokens", str(max_new_tokens)]


def deploy_argv(checkpoint: str, host: str, port: int, name: str) -> list[str]:
    """swift's OpenAI-compatible server (/v1/models, /v1/chat/completions) for the tuned adapter."""
    return [
        "swift", "deploy",
        "--adapters", checkpoint,
        "--host", host,
        "--port", str(port),
        "--served_model_name", name,
    ]  # fmt: skip


def export_argv(checkpoint: str, target: Path) -> list[str]:
    """Merge the adapter into the base weights."""
    return ["swift", "export", "--adapters", checkpoint, "--merge_lora", "true", "--output_dir", str(target)]


def single_process_env(train_env: dict[str, str]) -> dict[str, str]:
    """Training's devices, as one process (infer, export): swift spreads a model over several GPUs by itself."""
    env = {k: v for k, v in train_env.items() if k not in TORCHRUN_ENV}
    return {**os.environ, **env, "PYTHONUNBUFFERED": "1"}


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


def launchable(argv: list[str], env: Mapping[str, str]) -> list[str]:
    """The argv to start, in the environment env. The printed and recorded one says `swift ...`; what runs is
    what swift's launcher would run, started directly where this Python has swift: the launcher is a Python of
    its own that imports torch only to start another (3.7 s on the H100 box). Else the `swift` that is installed."""
    if not argv or argv[0] != "swift":
        return argv
    route, cli = (argv[1] if len(argv) > 1 else ""), swift_cli_dir()
    if cli is None or route not in _ROUTE_SCRIPTS:
        return [swift_executable() or "swift", *argv[1:]]
    script = str(cli / _ROUTE_SCRIPTS[route])
    if route in _TORCHRUN_ROUTES and ("NPROC_PER_NODE" in env or "NNODES" in env):
        torchrun = [x for k in _TORCHRUN_FLAGS if k in env for x in (f"--{k.lower()}", env[k])]
        return [sys.executable, "-m", "torch.distributed.run", *torchrun, script, *argv[2:]]
    return [sys.executable, script, *argv[2:]]


def require_swift() -> None:
    """Refuse before anything is written when swift is missing."""
    if swift_cli_dir() is None and swift_executable() is None:
        raise missing_swift()


def missing_swift() -> SwiftMissing:
    return SwiftMissing(f"the `swift` command is not installed: {INSTALL}")
