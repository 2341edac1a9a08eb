"""One run per device: an advisory file lock per GPU, or one for the CPU, held while swift trains and the check runs.

Two runs on one GPU can run it out of memory; two on the CPU each ran 7× slower, and neither said why."""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from qwen_tune.errors import GpuBusyError

LOCK_DIR = Path(tempfile.gettempdir()) / "qwen-tune-locks"
CPU = "cpu"


def device_names(gpu_indices: list[int], node_rank: int = 0) -> list[str]:
    """The lock names of a run's devices: gpu-0, gpu-1, ...; a run without GPUs trains on the CPU. The nodes of one
    multi-node job on one host (the CPU rendezvous) share its CPU by design: node N takes cpu-nodeN."""
    return [f"gpu-{index}" for index in gpu_indices] or [CPU if node_rank == 0 else f"{CPU}-node{node_rank}"]


def _described(device: str) -> tuple[str, str]:
    """How a refusal names the device, and what else the user can do."""
    if device.startswith(CPU):
        return "the CPU", "wait for it (two runs on the CPU each run several times slower), or pass --force"
    return f"GPU {device.removeprefix('gpu-')}", "wait for it, pick other GPUs with --gpus, or pass --force"


@contextmanager
def device_locks(devices: list[str], run_dir: str) -> Iterator[None]:
    """Fail at once, naming the other run and its pid, when one of these devices is already being trained on."""
    LOCK_DIR.mkdir(parents=True, exist_ok=True)
    held = []
    try:
        for device in devices:
            handle = open(LOCK_DIR / f"{device}.lock", "a+", encoding="utf-8")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = json.loads(handle.read() or "{}")
                handle.close()
                name, instead = _described(device)
                raise GpuBusyError(
                    f"{name} is in use by another qwen-tune run (pid {holder.get('pid', '?')}, {holder.get('run_dir', '?')}); "
                    f"{instead}"
                ) from None
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps({"pid": os.getpid(), "run_dir": run_dir}))
            handle.flush()
            held.append(handle)
        yield
    finally:
        for handle in held:
            handle.close()  # closing releases the lock


def run_locks(indices: list[int], run_dir: str, node_rank: int = 0):
    """The locks of these GPUs (the CPU's where there are none)."""
    return device_locks(device_names(indices, node_rank), run_dir)
