"""Guards before a run starts: GPUs busy with another program, and GPUs held by another qwen-tune run."""

import subprocess
import sys
import time
from pathlib import Path

import pytest

from qwen_tune import locks
from qwen_tune.errors import GpuBusyError
from qwen_tune.gpus import GIB, Gpu, GpuProcess, Inventory
from qwen_tune.jobs import Job
from qwen_tune.models import resolve_model
from qwen_tune.plan import DataSummary, make_plan
from qwen_tune.profiles import shipped_profiles
from qwen_tune.recipes import load_recipe
from qwen_tune.runner import execute


def plan_on(gpu: Gpu):
    recipe = load_recipe("self-cognition-qwen2.5-7b")
    return make_plan(recipe=recipe, model=resolve_model(recipe.model), inventory=Inventory(gpus=(gpu,), source="nvml"),
                     profiles=shipped_profiles(), data=DataSummary(100, 80, "estimated"),
                     dataset_path="d.jsonl", output_dir="out")  # fmt: skip


BUSY = Gpu(0, "NVIDIA H100 80GB HBM3", 80 * GIB, (9, 0), free_bytes=10 * GIB,
           processes=(GpuProcess(4242, "python3", 69 * GIB),))  # fmt: skip


def test_busy_gpu_is_named_with_its_processes():
    plan = plan_on(BUSY)
    (busy,) = plan.busy_gpus()
    assert "GPU 0 has 10.00 GiB free" in busy and "pid 4242 python3 69.00 GiB" in busy
    assert any("run out of memory" in w for w in plan.warnings)
    assert not plan_on(Gpu(0, "H100", 80 * GIB, (9, 0), free_bytes=79 * GIB)).busy_gpus()


def test_run_refuses_a_busy_gpu_before_writing_anything(tmp_path):
    job = Job(plan=plan_on(BUSY), rows=[{"query": "q", "response": "r"}], run_dir=tmp_path / "run")
    with pytest.raises(GpuBusyError, match="pass --force"):
        execute(job, verify=False, force=False, on_progress=print)
    assert not (tmp_path / "run").exists()


def test_a_held_gpu_names_the_other_run(tmp_path, monkeypatch):
    monkeypatch.setattr(locks, "LOCK_DIR", tmp_path)
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from pathlib import Path; from qwen_tune import locks;"
         f"locks.LOCK_DIR = Path({str(tmp_path)!r});"
         "ctx = locks.gpu_locks([1], 'runs/other'); ctx.__enter__(); print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(GpuBusyError, match=rf"GPU 1 is in use by another qwen-tune run \(pid {holder.pid}, runs/other\)"):
            with locks.gpu_locks([0, 1], "runs/mine"):
                pass
        with locks.gpu_locks([0], "runs/mine"):  # other GPUs stay usable
            pass
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.1)
    with locks.gpu_locks([1], "runs/mine"):  # released when the holder dies
        assert "runs/mine" in Path(tmp_path / "gpu-1.lock").read_text()
