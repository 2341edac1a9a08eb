"""NVML answers only some queries on some cards, drivers and containers: whatever it cannot answer, the real
`qwen-tune gpus` and `plan` print sensibly (an unknown fact as ?) or stop with one line (exit 14), never a
traceback. NVML is tests/fakes/pynvml.py, told by FAKE_NVML_UNSUPPORTED which queries raise NotSupported."""

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qwen_tune.errors import GpuSelectionError, NoGpuError

REPO = Path(__file__).resolve().parents[1]
FAKES = REPO / "tests" / "fakes"
RTX4090 = {"name": "NVIDIA GeForce RTX 4090", "total_mib": 24564, "free_mib": 24000, "cc": [8, 9]}

# Facts a plan can do without: unknown, they are None (null in --json, ? in the text).
OPTIONAL = ("nvmlSystemGetDriverVersion", "nvmlSystemGetCudaDriverVersion_v2", "nvmlDeviceGetUUID",
            "nvmlDeviceGetComputeRunningProcesses", "nvmlShutdown")  # fmt: skip
# Facts it cannot: unknown, they stop qwen-tune with NoGpuError naming them.
REQUIRED = {
    "nvmlDeviceGetCount": "the number of GPUs",
    "nvmlDeviceGetHandleByIndex": "GPU 0 ",
    "nvmlDeviceGetMemoryInfo": "GPU 0's memory",
    "nvmlDeviceGetName": "GPU 0's name",
    "nvmlDeviceGetCudaComputeCapability": "GPU 0's compute capability",
}


def fake_queries() -> list[str]:
    """Every query the fake answers (nvmlInit is the no-driver case of tests/test_bad_inputs.py)."""
    source = (FAKES / "pynvml.py").read_text(encoding="utf-8")
    return sorted({line[4:].split("(")[0] for line in source.splitlines() if line.startswith("def nvml")} - {"nvmlInit"})


def qwen_tune(*args: str, unsupported: str = "", gpus=(RTX4090,), **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "PYTHONPATH")}
    environ.update(PYTHONPATH=str(FAKES), FAKE_NVML=json.dumps(list(gpus)), FAKE_NVML_UNSUPPORTED=unsupported, **env)
    argv = [sys.executable, "-m", "qwen_tune", *args]
    return subprocess.run(argv, capture_output=True, text=True, env=environ, cwd=REPO, timeout=120)


def test_every_query_the_fake_answers_is_sorted_into_optional_or_required():
    assert set(fake_queries()) == set(OPTIONAL) | set(REQUIRED)


@pytest.mark.parametrize("query", fake_queries())
def test_no_query_nvml_cannot_answer_is_a_traceback(query):
    done = qwen_tune("gpus", unsupported=query)
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == (14 if query in REQUIRED else 0), done.stderr


def test_unknown_optional_facts_are_none_and_printed_as_unknown():
    everything = ",".join(OPTIONAL)
    text = qwen_tune("gpus", unsupported=everything)
    assert text.returncode == 0, text.stderr
    assert text.stdout.startswith("driver ?, CUDA ?, 1 GPU(s)\n")
    assert "NVIDIA GeForce RTX 4090" in text.stdout and text.stdout.rstrip().endswith("uuid ?")
    inventory = json.loads(qwen_tune("gpus", "--json", unsupported=everything).stdout)
    assert inventory["driver_version"] is None and inventory["cuda_version"] is None
    assert inventory["gpus"][0]["uuid"] is None and inventory["gpus"][0]["processes"] == []
    assert inventory["gpus"][0]["free_bytes"] == 24000 * 1024**2  # what NVML did answer stays


def test_plan_goes_on_without_the_optional_facts():
    done = qwen_tune("plan", unsupported=",".join(OPTIONAL))
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert "1× NVIDIA GeForce RTX 4090" in done.stdout and "Command:" in done.stdout


def test_without_uuids_cuda_visible_devices_can_still_name_gpus_by_index():
    two = (RTX4090, {**RTX4090, "name": "NVIDIA GeForce RTX 3090", "total_mib": 24576, "cc": [8, 6]})
    by_index = qwen_tune("gpus", unsupported="nvmlDeviceGetUUID", gpus=two, CUDA_VISIBLE_DEVICES="1")
    assert by_index.returncode == 0 and "RTX 3090" in by_index.stdout and "RTX 4090" not in by_index.stdout
    by_uuid = qwen_tune("gpus", unsupported="nvmlDeviceGetUUID", gpus=two, CUDA_VISIBLE_DEVICES="GPU-fake-1")
    assert by_uuid.returncode == GpuSelectionError.exit_code and len(by_uuid.stderr.splitlines()) == 1, by_uuid.stderr


@pytest.mark.parametrize("command", [("gpus",), ("plan",)])
@pytest.mark.parametrize("query", sorted(REQUIRED))
def test_an_unreadable_required_fact_is_one_line_naming_it(query, command):
    done = qwen_tune(*command, unsupported=query)
    assert done.returncode == NoGpuError.exit_code, done.stderr
    assert done.stderr.splitlines() == [done.stderr.strip()] and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"qwen-tune: error: NVML cannot read {REQUIRED[query]}")
    assert "(Not Supported)" in done.stderr and done.stdout == ""


@pytest.fixture
def fake_nvml(monkeypatch):
    """The fake as the `pynvml` gpus.py imports in this process; call it with the unsupported queries."""

    def load(unsupported: str = ""):
        monkeypatch.setenv("FAKE_NVML", json.dumps([RTX4090, RTX4090]))
        monkeypatch.setenv("FAKE_NVML_UNSUPPORTED", unsupported)
        spec = importlib.util.spec_from_file_location("pynvml", FAKES / "pynvml.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        monkeypatch.setitem(sys.modules, "pynvml", module)
        return module

    return load


def sample(indices: list[int]) -> dict[int, int]:
    from qwen_tune.machine.gpus import MemorySampler

    with MemorySampler(indices, interval_s=0.01) as sampler:
        time.sleep(0.1)
    return sampler.peak_bytes


def test_memory_sampler_keeps_the_peak(fake_nvml):
    fake_nvml()
    assert sample([0, 1]) == {0: 564 * 1024**2, 1: 564 * 1024**2}


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")  # a crashed sampler thread fails
@pytest.mark.parametrize("query", ["nvmlDeviceGetMemoryInfo", "nvmlDeviceGetHandleByIndex", "nvmlShutdown"])
def test_memory_sampler_goes_on_without_what_nvml_cannot_answer(fake_nvml, query):
    fake_nvml(unsupported=query)
    peaks = sample([0, 1])  # neither the thread nor the exit raises
    assert peaks == ({0: 564 * 1024**2, 1: 564 * 1024**2} if query == "nvmlShutdown" else {})


def test_memory_sampler_keeps_a_bounded_series_per_gpu(fake_nvml):
    from qwen_tune.machine.gpus import MemorySampler

    fake_nvml()
    with MemorySampler([0, 1], interval_s=0.002, max_samples=8) as sampler:
        time.sleep(0.3)
    for index in (0, 1):
        points = sampler.samples[index]
        assert 4 <= len(points) <= 8  # thinned to every other one each time it filled
        assert all(used == 564 * 1024**2 for _, used in points)
        seconds = [t for t, _ in points]
        assert seconds == sorted(seconds) and seconds[0] < 0.05
    assert sampler._stride > 1


def test_memory_sampler_without_a_driver_keeps_nothing(monkeypatch):
    from qwen_tune.machine.gpus import MemorySampler

    monkeypatch.delenv("FAKE_NVML", raising=False)
    spec = importlib.util.spec_from_file_location("pynvml", FAKES / "pynvml.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setitem(sys.modules, "pynvml", module)
    with MemorySampler([0]) as sampler:
        pass
    assert sampler.samples == {} and sampler.peak_bytes == {}
