"""Can this Python's torch use the GPUs NVML sees? Pure: jobs.read_torch reads torch's version file."""

from __future__ import annotations

from dataclasses import dataclass

from qwen_tune.errors import TorchCannotUseGpus


@dataclass(frozen=True)
class TorchFacts:
    """What torch's build says of itself (torch/version.py)."""

    version: str | None  # None: torch is not installed for this Python
    cuda: str | None = None  # torch.version.cuda: None for a CPU-only build


def torch_gpu_problem(torch: TorchFacts, n_gpus: int, driver_cuda: str, python: str) -> TorchCannotUseGpus | None:
    """Why torch cannot train on the n_gpus GPUs that NVML sees (driver_cuda: the newest CUDA the driver runs), with the fix.

    A CUDA build runs on a driver of its CUDA major version or newer (minor version compatibility within a major)."""
    if not n_gpus:
        return None
    if torch.version is None:
        return TorchCannotUseGpus(f"{python} has no torch: {python} -m pip install torch (PyPI's Linux build uses CUDA)")
    if torch.cuda is None:
        fix = f"install PyPI's CUDA build with `{python} -m pip install --force-reinstall torch`"
        return TorchCannotUseGpus(
            f"NVML sees {n_gpus} GPU(s), but this Python's torch {torch.version} is a CPU-only build: {fix}; nothing was started"
        )
    if driver_cuda and int(torch.cuda.split(".")[0]) > int(driver_cuda.split(".")[0]):
        return TorchCannotUseGpus(
            f"torch {torch.version} is built for CUDA {torch.cuda}, but the NVIDIA driver runs CUDA {driver_cuda} at most: "
            f"update the driver, or install a torch built for CUDA {driver_cuda.split('.')[0]}.x "
            f"(https://pytorch.org/get-started/previous-versions/); nothing was started"
        )
    return None
