"""Guards before a run starts: the output dir, the disk, GPUs busy with another program, and GPUs held
by another qwen-tune run. Each refuses before anything is written."""

import errno
import os
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import pytest
from conftest import PLAIN_MACHINE

from qwen_tune import attempts, locks, rundir
from qwen_tune.attempts import execute
from qwen_tune.errors import DiskSpaceError, GpuBusyError, OutputError
from qwen_tune.gpus import GIB, MIB, Gpu, GpuProcess, Inventory
from qwen_tune.jobs import Job
from qwen_tune.memory import checkpoint_bytes
from qwen_tune.models import ModelShape, resolve_model
from qwen_tune.plan import DataSummary
from qwen_tune.planner import RUN_FILES_BYTES, disk_bytes_needed, make_plan
from qwen_tune.profiles import shipped_profiles
from qwen_tune.recipes import load_recipe
from qwen_tune.rundir import check_disk_space, check_output_dir, create_run_dir, nearest_existing


def plan_on(gpu: Gpu):
    recipe = load_recipe("self-cognition-qwen2.5-7b")
    return make_plan(recipe=recipe, model=resolve_model(recipe.model), inventory=Inventory(gpus=(gpu,), source="nvml"),
                     profiles=shipped_profiles(), data=DataSummary(100, 80, "estimated"),
                     dataset_path="d.jsonl", output_dir="out", machine=PLAIN_MACHINE)  # fmt: skip


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


def test_disk_estimate_counts_three_checkpoints_the_data_and_the_logs():
    plan = plan_on(Gpu(0, "H100", 80 * GIB, (9, 0), free_bytes=79 * GIB))
    checkpoint = 20_185_088 * 12 + MIB  # Qwen2.5-7B, rank 8: adapter and AdamW moments in fp32
    assert disk_bytes_needed(plan, dataset_bytes=1000) == 3 * checkpoint + 1000 + RUN_FILES_BYTES
    assert 0.7 * GIB < disk_bytes_needed(plan, 0) < 0.8 * GIB


def test_checkpoint_estimate_covers_the_measured_one():
    """checkpoint-520 of the CPU demo (the tiny shape, rank 64) took 4,540,828 bytes on disk."""
    tiny = ModelShape("qwen2", 128, 2, 4, 2, 32, 512, 1152, True)
    assert 4_540_828 <= checkpoint_bytes(tiny, 64) <= 1.25 * 4_540_828
    assert checkpoint_bytes(tiny, 64, zero=True) > checkpoint_bytes(tiny, 64)


def test_disk_check_compares_with_what_is_free(tmp_path):
    short = r"needs about 730 MiB \(checkpoints, data, logs\), 100 MiB is free; .* --output-dir"
    with pytest.raises(DiskSpaceError, match=short):
        check_disk_space(730 * MIB, tmp_path / "runs", free_bytes=lambda path: 100 * MIB)
    check_disk_space(730 * MIB, tmp_path / "runs", free_bytes=lambda path: 2 * GIB)
    asked = []
    check_disk_space(1, tmp_path / "runs", free_bytes=lambda path: asked.append(path) or GIB)
    assert asked == [tmp_path / "runs"]


def test_output_dir_under_a_file_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("")
    assert nearest_existing(tmp_path / "notes.txt" / "runs" / "a") == tmp_path / "notes.txt"
    with pytest.raises(OutputError, match="notes.txt is not a directory; pick another --output-dir"):
        check_output_dir(tmp_path / "notes.txt" / "runs")
    check_output_dir(tmp_path / "new" / "runs")  # made when the run starts
    assert not (tmp_path / "new").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_output_dir_is_refused(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(OutputError, match="locked is not writable"):
        check_output_dir(locked / "runs")


def test_run_refuses_a_full_disk_before_writing_anything(tmp_path, monkeypatch):
    monkeypatch.setattr(attempts, "check_disk_space", partial(check_disk_space, free_bytes=lambda path: 10 * MIB))
    job = Job(plan=plan_on(Gpu(0, "H100", 80 * GIB, (9, 0), free_bytes=79 * GIB)), rows=[{"query": "q", "response": "r"}],
              run_dir=tmp_path / "runs" / "run")  # fmt: skip
    with pytest.raises(DiskSpaceError):
        execute(job, verify=False, force=True, on_progress=print)
    assert not (tmp_path / "runs").exists()


def test_a_run_directory_that_cannot_be_written_is_removed(tmp_path, monkeypatch):
    def disk_full():
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(rundir, "package_versions", disk_full)
    job = Job(plan=plan_on(Gpu(0, "H100", 80 * GIB, (9, 0))), rows=[{"query": "q", "response": "r"}], run_dir=tmp_path / "run")
    with pytest.raises(OutputError, match="No space left on device, so it was removed"):
        create_run_dir(job, verify=False)
    assert not (tmp_path / "run").exists()
