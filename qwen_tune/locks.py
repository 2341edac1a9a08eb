"""One run per GPU: an advisory file lock per device, held while swift trains and the check runs."""

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


@contextmanager
def gpu_locks(indices: list[int], run_dir: str) -> Iterator[None]:
    """Fail at once, naming the other run, when one of these GPUs is already being trained on."""
    LOCK_DIR.mkdir(parents=True, exist_ok=True)
    held = []
    try:
        for index in indices:
            path = LOCK_DIR / f"gpu-{index}.lock"
            handle = open(path, "a+", encoding="utf-8")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = json.loads(handle.read() or "{}")
                handle.close()
                raise GpuBusyError(
                    f"GPU {index} is in use by another qwen-tune run (pid {holder.get('pid', '?')}, {holder.get('run_dir', '?')}); "
                    "wait for it, pick other GPUs with --gpus, or pass --force"
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
