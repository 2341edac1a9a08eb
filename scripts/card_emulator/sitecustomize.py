"""Emulate a smaller card on a big GPU: cap torch's memory pool in every Python process.

Put this folder first on PYTHONPATH and set QWEN_TUNE_MEMORY_CAP_GIB (e.g. 23 for a 24 GB
card: its memory less the ~0.76 GiB CUDA context). The cap is applied right after CUDA
initialises, so processes that never touch the GPU (swift's launcher, pip) create no CUDA
context. Allocations past the cap raise torch.OutOfMemoryError as on the real card.
"""

import os

_CAP_GIB = os.environ.get("QWEN_TUNE_MEMORY_CAP_GIB")

if _CAP_GIB:
    try:
        import torch

        def _cap_memory() -> None:
            for device in range(torch.cuda.device_count()):
                total = torch.cuda.get_device_properties(device).total_memory
                torch.cuda.set_per_process_memory_fraction(min(1.0, float(_CAP_GIB) * 2**30 / total), device)

        torch.cuda._lazy_call(_cap_memory)
    except Exception as exc:  # an emulator that silently does nothing would fake a result
        raise SystemExit(f"card emulator: cannot cap GPU memory: {exc}") from exc
