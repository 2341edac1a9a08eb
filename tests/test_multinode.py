"""Several machines: the torchrun environment each node gets, and the sbatch script for SLURM."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FIXED_NOW, PLAIN_MACHINE

from qwen_tune.errors import UsageError
from qwen_tune.jobs import JobOptions, prepare
from qwen_tune.slurm import sbatch_script

GOLDEN = Path(__file__).parent / "golden"


def plan_for(**flags):
    return prepare(JobOptions(output_dir="runs", **flags), PLAIN_MACHINE, for_run=False, now=FIXED_NOW).plan


def test_each_node_gets_torchrun_env_and_the_batch_spans_all_gpus():
    plan = plan_for(gpus="2xh100", nnodes=2, node_rank=1, master_addr="10.0.0.1", master_port=29501)
    assert plan.env == {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": "0,1", "NPROC_PER_NODE": "2",
                        "NNODES": "2", "NODE_RANK": "1", "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29501",
                        "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}  # fmt: skip
    assert plan.n_devices == 4 and plan.effective_batch == 16 and plan.profile.name == "multi-gpu"


def test_one_gpu_per_node_is_still_distributed():
    plan = plan_for(gpus="h100", nnodes=2, master_addr="127.0.0.1")
    assert plan.profile.name == "multi-gpu" and plan.env["NPROC_PER_NODE"] == "1" and plan.env["NNODES"] == "2"


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


def options(**flags):
    return JobOptions(output_dir="runs", gpus="4xa100", nnodes=2, master_addr="MASTER", **flags)


def test_sbatch_script_golden_and_valid_bash(tmp_path):
    script = sbatch_script(prepare(options(), PLAIN_MACHINE, for_run=False, now=FIXED_NOW).plan, options())
    path = GOLDEN / "sbatch-2x4xa100.sh"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(script)
    assert script == path.read_text()
    (tmp_path / "job.sh").write_text(script)
    assert subprocess.run(["bash", "-n", str(tmp_path / "job.sh")]).returncode == 0


def test_sbatch_quotes_hostile_names(tmp_path):
    """Each node's shell must see the name as one argument, never run it."""
    name = "O'Brien $(touch pwned) \"; rm -rf x"
    script = sbatch_script(prepare(options(name=name), PLAIN_MACHINE, for_run=False, now=FIXED_NOW).plan, options(name=name))
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


def test_cpu_nodes_get_the_same_torchrun_env():
    """Several CPU machines rendezvous like GPU ones (gloo instead of NCCL): what the CI two-node test runs."""
    tiny = str(Path(__file__).parent / "data" / "tiny-config")
    plan = plan_for(
        gpus="cpu", nnodes=2, node_rank=1, master_addr="127.0.0.1", master_port=29533, recipe="demo-tiny-cpu", model=tiny
    )
    assert plan.env == {"CUDA_VISIBLE_DEVICES": "", "NPROC_PER_NODE": "1", "NNODES": "2", "NODE_RANK": "1",
                        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29533", "HF_HUB_OFFLINE": "1"}  # fmt: skip
    assert plan.setup.micro_batch_size * plan.grad_accum * 2 == plan.recipe.effective_batch_size


def test_cpu_processes_on_one_machine_get_torchrun_without_deepspeed():
    """--gpus cpu:2: what tests/test_e2e.py runs for real; two GPUs whose model fits one card run the same way."""
    tiny = str(Path(__file__).parent / "data" / "tiny-config")
    plan = plan_for(gpus="cpu:2", recipe="demo-tiny-cpu", model=tiny)
    assert plan.env["NPROC_PER_NODE"] == "2" and plan.n_devices == 2 and plan.setup.zero == ""
    assert plan.argv[plan.argv.index("--use_cpu") + 1] == "true"  # else each CPU process trains alone
    gpus = plan_for(gpus="2xrtx4090")
    assert gpus.env["NPROC_PER_NODE"] == "2" and "--deepspeed" not in gpus.argv
    with pytest.raises(UsageError, match="1 to 64 CPU processes"):
        plan_for(gpus="cpu:0")
