"""Can this Python's torch use the GPUs NVML sees? Pure: jobs.probe_torch reads torch, in a child process."""

from __future__ import annotations

from dataclasses import dataclass

from qwen_tune.errors import TorchCannotUseGpus


@dataclass(frozen=True)
class TorchFacts:
    """What torch says in a process that sees the plan's GPUs (CUDA_VISIBLE_DEVICES as the run sets it)."""

    version: str | None  # None: torch is not importable
    cuda: str | None = None  # torch.version.cuda: None for a CPU-only build
    available: bool = False  # torch.cuda.is_available()
    device_count: int = 0
    error: str = ""  # what torch's CUDA start-up said, when it failed


def _major_minor(version: str) -> tuple[int, int]:
    parts = (version.split(".") + ["0"])[:2]
    return int(parts[0]), int(parts[1])


def torch_gpu_problem(torch: TorchFacts, n_gpus: int, driver_cuda: str, python: str) -> TorchCannotUseGpus | None:
    """Why torch cannot train on the n_gpus GPUs that NVML sees (driver_cuda: the newest CUDA the driver runs), with the fix."""
    if not n_gpus:
        return None
    if torch.version is None:
        return TorchCannotUseGpus(f"{python} has no torch: {python} -m pip install torch (PyPI's Linux build uses CUDA)")
    fix = f"install PyPI's CUDA build with `{python} -m pip install --force-reinstall torch`"
    if torch.cuda is None:
        return TorchCannotUseGpus(
            f"NVML sees {n_gpus} GPU(s), but this Python's torch {torch.version} is a CPU-only build: {fix}; nothing was started"
        )
    if torch.available and torch.device_count >= n_gpus:
        return None
    if driver_cuda and _major_minor(torch.cuda) > _major_minor(driver_cuda):
        return TorchCannotUseGpus(
            f"torch {torch.version} is built for CUDA {torch.cuda}, but the NVIDIA driver runs CUDA {driver_cuda} at most: "
            f"update the driver, or install a torch built for CUDA {driver_cuda} or older "
            f"(https://pytorch.org/get-started/previous-versions/); nothing was started"
        )
    said = f" ({torch.error})" if torch.error else ""
    return TorchCannotUseGpus(
        f"NVML sees {n_gpus} GPU(s), but torch {torch.version} (CUDA {torch.cuda}) can use {torch.device_count}{said}: "
        "check `nvidia-smi` and CUDA_VISIBLE_DEVICES; nothing was started"
    )
