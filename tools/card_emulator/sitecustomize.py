"""Emulate a smaller or older card on a big GPU, in every Python process that has this on PYTHONPATH.

QWEN_TUNE_MEMORY_CAP_GIB=23    cap torch's pool (a 24 GB card: its memory less the ~0.76 GiB CUDA
                               context). Applied right after CUDA initialises, so processes that never
                               touch the GPU (swift's launcher, pip) create no context. Allocations past
                               the cap raise torch.OutOfMemoryError as on the real card.
QWEN_TUNE_EMULATE_NVML=1       make NVML report the capped card too (total = cap + context), so that
                               qwen-tune plans for it. Leave it unset to plan for the big card and run
                               on the small one: a forced out-of-memory, for the retry ladder.
QWEN_TUNE_EMULATE_CC=7.5       make NVML report that compute capability: no bf16, as on a T4 or V100.
QWEN_TUNE_MEMORY_REPORT=DIR    at exit, each process that used CUDA writes DIR/memory-PID.json with torch's
                               peak allocated and reserved bytes (swift logs only the reserved peak).
"""

import os

GIB = 2**30
_CAP_GIB = os.environ.get("QWEN_TUNE_MEMORY_CAP_GIB")
_EMULATE_NVML = bool(os.environ.get("QWEN_TUNE_EMULATE_NVML") and _CAP_GIB)
_CC = os.environ.get("QWEN_TUNE_EMULATE_CC")
_REPORT = os.environ.get("QWEN_TUNE_MEMORY_REPORT")


def _torch_side() -> None:
    import torch

    if _CAP_GIB:

        def _cap_memory() -> None:
            for device in range(torch.cuda.device_count()):
                total = torch.cuda.get_device_properties(device).total_memory
                torch.cuda.set_per_process_memory_fraction(min(1.0, float(_CAP_GIB) * GIB / total), device)

        torch.cuda._lazy_call(_cap_memory)
    if _REPORT:
        import atexit
        import json
        import sys

        def _report() -> None:
            if torch.cuda.is_initialized():
                peaks = {
                    "argv": sys.argv[:3],
                    "max_allocated_bytes": torch.cuda.max_memory_allocated(),
                    "max_reserved_bytes": torch.cuda.max_memory_reserved(),
                }
                with open(os.path.join(_REPORT, f"memory-{os.getpid()}.json"), "w") as f:
                    json.dump(peaks, f)

        atexit.register(_report)


def _nvml_side() -> None:
    import pynvml

    if _EMULATE_NVML:
        real_memory_info = pynvml.nvmlDeviceGetMemoryInfo

        class _Memory:
            def __init__(self, real):
                # Imported when asked, not at start-up: here sys.path does not yet hold the working directory, so
                # an installed qwen_tune (a wheelhouse's, older) would be imported, and then run, instead of the repo's.
                from qwen_tune.planning.memory import CUDA_CONTEXT_BYTES  # the context the estimate adds beside torch's pool

                self.total = int(float(_CAP_GIB) * GIB) + CUDA_CONTEXT_BYTES
                self.used = real.used
                self.free = max(0, self.total - real.used)

        pynvml.nvmlDeviceGetMemoryInfo = lambda handle, *a: _Memory(real_memory_info(handle, *a))
    if _CC:
        major, minor = (int(x) for x in _CC.split("."))
        pynvml.nvmlDeviceGetCudaComputeCapability = lambda handle: (major, minor)


if _CAP_GIB or _REPORT:
    try:
        _torch_side()
    except Exception as exc:  # an emulator that silently does nothing would fake a result
        raise SystemExit(f"card emulator: cannot cap or watch GPU memory: {exc}") from exc
if _EMULATE_NVML or _CC:
    try:
        _nvml_side()
    except ImportError:
        pass  # a process without pynvml or qwen_tune (swift's workers) plans nothing: nothing to emulate there
