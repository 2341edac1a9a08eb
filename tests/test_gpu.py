"""On a GPU box (`make test-gpu`): the NVML reader against the real card, and a real run on it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from qwen_tune.machine.gpus import GIB, read_inventory

pytestmark = pytest.mark.gpu
REPO = Path(__file__).resolve().parents[1]


def test_nvml_reader_matches_torch():
    import torch

    inventory = read_inventory()
    assert len(inventory.gpus) == torch.cuda.device_count()
    assert inventory.driver_version and inventory.cuda_version
    for gpu in inventory.gpus:
        props = torch.cuda.get_device_properties(gpu.index)
        assert gpu.name == props.name
        assert gpu.compute_capability == (props.major, props.minor)
        assert gpu.bf16 == (props.major >= 8)
        assert gpu.uuid.startswith("GPU-")
        assert abs(gpu.total_bytes - props.total_memory) < 0.02 * gpu.total_bytes
        assert 0 < gpu.free_bytes <= gpu.total_bytes


def test_hopper_card_reads_as_such():
    gpu = read_inventory().gpus[0]
    if "H100" not in gpu.name and "H200" not in gpu.name:
        pytest.skip(f"not a Hopper card: {gpu.name}")
    assert gpu.compute_capability == (9, 0) and gpu.total_bytes > 75 * GIB


def test_cuda_visible_devices_is_honoured():
    inventory = read_inventory({"CUDA_VISIBLE_DEVICES": "0"})
    assert [g.index for g in inventory.gpus] == [0]


def test_gpus_command_json():
    done = subprocess.run([sys.executable, "-m", "qwen_tune", "gpus", "--json"], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["gpus"][0]["compute_capability"][0] >= 7


@pytest.mark.requires_swift
def test_real_run_on_the_gpu(tmp_path):
    model = tmp_path / "tiny-qwen2"
    subprocess.run([sys.executable, str(REPO / "tools" / "make_model.py"), "tiny", str(model)], check=True)
    done = subprocess.run(
        [sys.executable, "-m", "qwen_tune", "run", "--recipe", "demo-tiny-cpu", "--model", str(model), "--gpus", "0",
         "--output-dir", str(tmp_path / "runs")],  # fmt: skip
        capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs").iterdir()
    result = json.loads((run_dir / "result.json").read_text())
    assert result["identity_check"] == "pass"
    assert result["nvml_peak_used_gib"]["0"] > 0 and result["swift_peak_reserved_gib"] > 0
    plan = json.loads((run_dir / "plan.json").read_text())
    assert plan["dtype"] == "bfloat16" and plan["env"]["CUDA_VISIBLE_DEVICES"] == "0"


def test_busy_gpu_is_refused_naming_the_process(tmp_path):
    """Another process holds most of the card: plan warns, run refuses before writing anything."""
    hog = subprocess.Popen(
        [sys.executable, "-c",
         "import torch, time; free, _ = torch.cuda.mem_get_info(0);"
         "x = torch.empty(int(free - 8 * 2**30), dtype=torch.uint8, device='cuda:0'); print('held', flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert hog.stdout.readline().strip() == "held"
        plan = subprocess.run(
            [sys.executable, "-m", "qwen_tune", "plan", "--gpus", "0"], capture_output=True, text=True, cwd=REPO
        )
        assert f"pid {hog.pid}" in plan.stdout and "run out of memory" in plan.stdout
        runs = tmp_path / "runs"
        # Every earlier guard passes, so only the busy GPU can stop it: the hub id resolves, and a swift is on
        # PATH (tests/fakes/bin's, which only notes that it ran) where ms-swift is not installed.
        online = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
        online.update(
            PATH=f"{os.environ['PATH']}{os.pathsep}{REPO / 'tests' / 'fakes' / 'bin'}", FAKE_SWIFT_RAN=str(tmp_path / "swift-ran")
        )
        run = subprocess.run([sys.executable, "-m", "qwen_tune", "run", "--gpus", "0", "--output-dir", str(runs)],
                             capture_output=True, text=True, cwd=REPO, env=online)  # fmt: skip
        assert run.returncode == 17 and f"pid {hog.pid}" in run.stderr and "--force" in run.stderr, run.stderr
        assert not runs.exists() and not (tmp_path / "swift-ran").exists()
    finally:
        hog.kill()
        hog.wait()
