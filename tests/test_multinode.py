"""Several machines: the torchrun environment each node gets, and the sbatch script for SLURM."""

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FIXED_NOW, PLAIN_MACHINE

from qwen_tune.errors import UsageError
from qwen_tune.planning.jobs import JobOptions, prepare
from qwen_tune.planning.slurm import Launcher, sbatch_script, this_launcher
from qwen_tune.swift.command import sft_argv, sft_env

GOLDEN = Path(__file__).parent / "golden"


def plan_for(**flags):
    return prepare(JobOptions(output_dir="runs", **flags), PLAIN_MACHINE, for_run=False, now=FIXED_NOW).plan


def test_each_node_gets_torchrun_env_and_the_batch_spans_all_gpus():
    plan = plan_for(gpus="2xh100", nnodes=2, node_rank=1, master_addr="10.0.0.1", master_port=29501, packing=False)
    assert sft_env(plan) == {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": "0,1", "NPROC_PER_NODE": "2",
                        "NNODES": "2", "NODE_RANK": "1", "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29501",
                        "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True", "TORCH_CUDNN_SDPA_DEPRIORITIZED": "1"}  # fmt: skip
    assert plan.n_devices == 4 and plan.effective_batch == 16 and plan.profile.name == "multi-gpu"


def test_one_gpu_per_node_is_still_distributed():
    plan = plan_for(gpus="h100", nnodes=2, master_addr="127.0.0.1")
    assert plan.profile.name == "multi-gpu" and sft_env(plan)["NPROC_PER_NODE"] == "1" and sft_env(plan)["NNODES"] == "2"


@pytest.mark.parametrize(
    "flags, message",
    [
        (dict(gpus="h100", nnodes=2), "needs --master-addr"),
        (dict(gpus="h100", nnodes=2, node_rank=2, master_addr="a"), "--node-rank 2 must be between 0"),
    ],
)
def test_bad_node_flags(flags, message):
    with pytest.raises(UsageError, match=message):
        plan_for(**flags)


LAUNCHER = Launcher(bin_dir="/opt/qwen tune/bin", pythonpath=None)


def options(**flags):
    return JobOptions(output_dir="/scratch/runs", gpus="4xa100-80gb", nnodes=2, master_addr="MASTER", **flags)


def test_sbatch_script_golden_and_valid_bash(tmp_path):
    script = sbatch_script(prepare(options(), PLAIN_MACHINE, for_run=False, now=FIXED_NOW).plan, options(), LAUNCHER)
    path = GOLDEN / "sbatch-2x4xa100.sh"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(script)
    assert script == path.read_text()
    (tmp_path / "job.sh").write_text(script)
    assert subprocess.run(["bash", "-n", str(tmp_path / "job.sh")]).returncode == 0


def test_sbatch_quotes_hostile_names(tmp_path):
    """Each node's shell must see the name as one argument, never run it."""
    name = "O'Brien $(touch pwned) \"; rm -rf x"
    script = sbatch_script(
        prepare(options(name=name), PLAIN_MACHINE, for_run=False, now=FIXED_NOW).plan, options(name=name), LAUNCHER
    )
    srun = next(line for line in script.splitlines() if line.startswith("srun "))
    fake = tmp_path / "bin" / "qwen-tune"
    fake.parent.mkdir()
    fake.write_text(f"#!{sys.executable}\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}", "SLURM_NNODES": "2", "SLURM_NODEID": "1",
           "MASTER_ADDR": "node-a", "MASTER_PORT": "29500"}  # fmt: skip
    done = subprocess.run(["bash", "-c", srun.removeprefix("srun --kill-on-bad-exit=1 ")], capture_output=True, text=True,
                          env=env, cwd=tmp_path)  # fmt: skip
    argv = json.loads(done.stdout)
    assert argv[argv.index("--name") + 1] == name
    assert argv[-8:] == ["--nnodes", "2", "--node-rank", "1", "--master-addr", "node-a", "--master-port", "29500"]
    assert not (tmp_path / "pwned").exists()


def test_plan_slurm_cli():
    done = subprocess.run([sys.executable, "-m", "qwen_tune", "plan", "--gpus", "2xrtx3090", "--nnodes", "3", "--slurm"],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "#SBATCH --nodes=3" in done.stdout and "#SBATCH --gpus-per-node=2" in done.stdout


def slurm_cli(*args, env=None):
    environ = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "PYTHONPATH")}
    return subprocess.run([sys.executable, "-m", "qwen_tune", "plan", "--slurm", *args], capture_output=True, text=True,
                          env={**environ, **(env or {})}, cwd=Path(__file__).parents[1], timeout=120)  # fmt: skip


def test_plan_slurm_names_a_local_model_and_keeps_the_hub_off(tmp_path):
    tiny = Path(__file__).parent / "data" / "tiny-config"
    (tmp_path / "data.jsonl").write_text('{"query": "Who are you?", "response": "I am {{NAME}}."}\n')
    done = slurm_cli("--gpus", "2xh100", "--nnodes", "2", "--recipe", "demo-tiny-cpu", "--model", "tests/data/tiny-config",
                     "--dataset", str(tmp_path / "data.jsonl"), "--max-length", "1024")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "export HF_HUB_OFFLINE=1" in done.stdout
    node = done.stdout.splitlines()[-1]
    for expected in (f"--model {tiny}", f"--dataset {tmp_path / 'data.jsonl'}", "--max-length 1024"):
        assert expected in node


def test_plan_slurm_activates_its_environment_and_asks_for_a_free_port(tmp_path):
    done = slurm_cli("--gpus", "h100", "--nnodes", "2", env={"PYTHONPATH": "site"})
    script = done.stdout
    assert f"export PYTHONPATH={Path(__file__).parents[1] / 'site'}" in script and "export PATH=/" in script
    assert "HF_HUB_OFFLINE" not in script  # a hub model is downloaded on each node
    for placeholder in ("partition", "account", "time", "mem", "cpus-per-task"):
        assert f"##SBATCH --{placeholder}=" in script
    port = next(line for line in script.splitlines() if line.startswith("MASTER_PORT="))
    printed = subprocess.run(["bash", "-c", f"{port}; echo $MASTER_PORT"], capture_output=True, text=True, timeout=30)
    assert 0 < int(printed.stdout) < 65536
    assert "MASTER_PORT=29511" in slurm_cli("--gpus", "h100", "--nnodes", "2", "--master-port", "29511").stdout


@pytest.mark.parametrize("flags", [("--json",), ("--node-rank", "1"), ("--master-addr", "10.0.0.1")])
def test_plan_slurm_refuses_flags_it_would_drop(flags):
    done = slurm_cli("--gpus", "h100", "--nnodes", "2", *flags)
    assert done.returncode == 2 and done.stderr.startswith("qwen-tune: error: --slurm") and flags[0] in done.stderr


def test_this_launcher_is_this_pythons_qwen_tune_else_paths(tmp_path, monkeypatch):
    """The script runs the qwen-tune it was written from (a .venv need not be on PATH), else the one PATH finds."""
    venv, on_path = tmp_path / "venv" / "bin", tmp_path / "path"
    for folder in (venv, on_path):
        folder.mkdir(parents=True)
        (folder / "qwen-tune").write_text("#!/bin/sh\n")
        (folder / "qwen-tune").chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(venv / "python"))
    environ = {"PATH": str(on_path), "PYTHONPATH": "/a:b"}
    assert this_launcher(environ) == Launcher(str(venv), f"/a:{os.path.abspath('b')}")
    (venv / "qwen-tune").unlink()
    assert this_launcher(environ).bin_dir == str(on_path)


def test_cpu_nodes_get_the_same_torchrun_env():
    """Several CPU machines rendezvous like GPU ones (gloo instead of NCCL): what the CI two-node test runs."""
    tiny = str(Path(__file__).parent / "data" / "tiny-config")
    plan = plan_for(
        gpus="cpu", nnodes=2, node_rank=1, master_addr="127.0.0.1", master_port=29533, recipe="demo-tiny-cpu", model=tiny
    )
    assert sft_env(plan) == {"CUDA_VISIBLE_DEVICES": "", "NPROC_PER_NODE": "1", "NNODES": "2", "NODE_RANK": "1",
                        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29533", "HF_HUB_OFFLINE": "1"}  # fmt: skip
    assert plan.setup.micro_batch_size * plan.grad_accum * 2 == plan.recipe.effective_batch_size


def test_cpu_processes_on_one_machine_get_torchrun_without_deepspeed():
    """--gpus cpu:2: what tests/test_e2e.py runs for real; two GPUs whose model fits one card run the same way."""
    tiny = str(Path(__file__).parent / "data" / "tiny-config")
    plan = plan_for(gpus="cpu:2", recipe="demo-tiny-cpu", model=tiny)
    assert sft_env(plan)["NPROC_PER_NODE"] == "2" and plan.n_devices == 2 and plan.setup.zero == ""
    assert sft_argv(plan)[sft_argv(plan).index("--use_cpu") + 1] == "true"  # else each CPU process trains alone
    gpus = plan_for(gpus="2xrtx4090")
    assert sft_env(gpus)["NPROC_PER_NODE"] == "2" and "--deepspeed" not in sft_argv(gpus)
    with pytest.raises(UsageError, match="1 to 64 CPU processes"):
        plan_for(gpus="cpu:0")


# A value unlike the default for every JobOptions field: a new field must be added here, and then either
# reaches each node's command or is one of slurm.PER_NODE (SLURM sets it there).
NOT_DEFAULT = dict(
    recipe="self-cognition-qwen3-14b", model="Qwen/Qwen2.5-3B-Instruct", dataset="builtin:self_cognition", profile="24gb",
    tuner="lora", gpus="cpu:2", name="Spark", author="ACME", output_dir="/scratch/runs", nnodes=2, node_rank=1,
    master_addr="10.0.0.1", master_port=29511, epochs=3.0, learning_rate=2e-5, max_length=1024, lora_rank=16,
    lora_alpha=64, cut_long_rows=True, hub="hf", general_rows=4, general_data="/data/general.jsonl", packing=False,
    trust_remote_code=True,
)  # fmt: skip


def test_every_job_option_reaches_each_node_unless_slurm_sets_it():
    from dataclasses import fields

    from qwen_tune.cli import run
    from qwen_tune.planning.slurm import PER_NODE, node_command

    assert set(NOT_DEFAULT) == {f.name for f in fields(JobOptions)}, "give the new JobOptions field a value above"
    options = JobOptions(**NOT_DEFAULT)
    plan = plan_for(gpus="h100")  # node_command reads only whether the model is a local directory: a hub id here
    argv = shlex.split(node_command(options, plan).removeprefix("exec "))
    run_flags = {opt for param in run.params for opt in param.opts}
    for name, value in NOT_DEFAULT.items():
        flag = "--" + name.replace("_", "-")
        assert flag in run_flags or flag in {o for param in run.params for o in param.secondary_opts}, flag
        if name in PER_NODE and name != "gpus":
            assert argv[argv.index(flag) + 1].startswith("$SLURM_") or argv[argv.index(flag) + 1] in (
                "$MASTER_ADDR",
                "$MASTER_PORT",
            )
        elif value is False:  # --packing/--no-packing: the off switch is passed on as such
            assert "--no-" + flag.removeprefix("--") in argv
        elif isinstance(value, bool):
            assert flag in argv
        else:  # numbers as people write them: --epochs 3, not 3.0
            whole = isinstance(value, float) and value.is_integer()
            assert argv[argv.index(flag) + 1] == (str(int(value)) if whole else str(value)), flag


def test_plan_slurm_passes_every_choice_on_with_absolute_paths(tmp_path):
    """Issue 21: --tuner full, --general-rows, --general-data and --hub were dropped, and --output-dir stayed relative."""
    (tmp_path / "general.jsonl").write_text('{"query": "1+1?", "response": "2"}\n' * 4)
    (tmp_path / "recipe.yaml").write_text(
        (Path(__file__).parents[1] / "configs/recipes/self-cognition-qwen3-8b-full.yaml").read_text()
    )
    done = subprocess.run(
        [sys.executable, "-m", "qwen_tune", "plan", "--slurm", "--gpus", "2xh100", "--nnodes", "2", "--recipe", "recipe.yaml",
         "--tuner", "full", "--general-rows", "4", "--general-data", "general.jsonl", "--hub", "hf", "--output-dir", "out/runs",
         "--epochs", "2", "--learning-rate", "1e-5"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    node = shlex.split(shlex.split(done.stdout.splitlines()[-1])[-1])
    given = dict(zip(node[3::2], node[4::2], strict=False))  # exec qwen-tune run --flag value ...
    assert given["--recipe"] == str(tmp_path / "recipe.yaml") and given["--tuner"] == "full" and given["--hub"] == "hf"
    assert given["--general-rows"] == "4" and given["--general-data"] == str(tmp_path / "general.jsonl")
    assert given["--output-dir"] == str(tmp_path / "out" / "runs")
    assert float(given["--epochs"]) == 2 and float(given["--learning-rate"]) == 1e-5
