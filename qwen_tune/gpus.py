"""What GPUs this box has, read through NVML into plain dataclasses.

Everything downstream (planning, memory fit) works on these values, so it can be
tested with inventories built in tests; only `read_inventory` touches the driver.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from qwen_tune.errors import GpuSelectionError, NoGpuError

MIB = 1024**2
GIB = 1024**3


@dataclass(frozen=True)
class GpuProcess:
    pid: int
    name: str
    used_bytes: int | None


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    total_bytes: int
    compute_capability: tuple[int, int]
    free_bytes: int | None = None
    uuid: str = ""
    processes: tuple[GpuProcess, ...] = ()

    @property
    def bf16(self) -> bool:
        """Ampere (cc 8.0) and newer compute in bfloat16 natively."""
        return self.compute_capability >= (8, 0)

    @property
    def total_gib(self) -> float:
        return self.total_bytes / GIB


@dataclass(frozen=True)
class Inventory:
    """The devices a plan is made for: GPUs, or the CPU when `gpus` is empty."""

    gpus: tuple[Gpu, ...]
    source: str
    driver_version: str = ""
    cuda_version: str = ""
    host_memory_bytes: int = 0
    cpu_processes: int = 1  # --gpus cpu:N: N training processes on the CPU (torchrun over gloo)

    @property
    def is_cpu(self) -> bool:
        return not self.gpus

    @property
    def per_node(self) -> int:
        """Training processes on this machine: one per GPU, or cpu_processes on the CPU."""
        return len(self.gpus) or self.cpu_processes


def host_memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def cpu_inventory(processes: int = 1) -> Inventory:
    return Inventory(gpus=(), source="cpu", host_memory_bytes=host_memory_bytes(), cpu_processes=processes)


def _visible_filter(devices: list[Gpu], visible: str | None) -> list[Gpu]:
    """Apply CUDA_VISIBLE_DEVICES (indices or GPU UUIDs, in PCI bus order) like CUDA does."""
    if visible is None:
        return devices
    picked: list[Gpu] = []
    for token in (t.strip() for t in visible.split(",")):
        if not token:
            break
        if token.isdigit():
            match = [g for g in devices if g.index == int(token)]
        else:
            match = [g for g in devices if g.uuid and g.uuid.startswith(token)]
        if not match:
            break  # CUDA stops at the first invalid entry
        if match[0] not in picked:
            picked.append(match[0])
    if not picked:
        raise GpuSelectionError(
            f"CUDA_VISIBLE_DEVICES={visible!r} names no GPU on this box: unset it or list indices from `qwen-tune gpus`"
        )
    return picked


# What a box without a usable GPU can do: the default 7B job does not fit its CPU (exit 18).
NO_GPU_HERE = (
    "without a GPU, run the offline CPU demo (`make demo`), or see what a card would do with "
    "`qwen-tune plan --gpus rtx4090` (any card name or size)"
)


def read_inventory(environ: dict[str, str] | None = None) -> Inventory:
    """Read every GPU through NVML, honouring CUDA_VISIBLE_DEVICES."""
    environ = os.environ if environ is None else environ
    try:
        import pynvml
    except ImportError as exc:  # pragma: no cover - dependency is declared
        raise NoGpuError("nvidia-ml-py is not installed: pip install nvidia-ml-py") from exc
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        raise NoGpuError(f"no NVIDIA driver found (NVML: {exc}); {NO_GPU_HERE}") from exc
    try:
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
        cuda = pynvml.nvmlSystemGetCudaDriverVersion_v2()
        devices = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            devices.append(
                Gpu(
                    index=index,
                    name=_text(pynvml.nvmlDeviceGetName(handle)),
                    uuid=_text(pynvml.nvmlDeviceGetUUID(handle)),
                    total_bytes=int(memory.total),
                    free_bytes=int(memory.free),
                    compute_capability=tuple(pynvml.nvmlDeviceGetCudaComputeCapability(handle)),
                    processes=_processes(pynvml, handle),
                )
            )
    finally:
        pynvml.nvmlShutdown()
    if not devices:
        raise NoGpuError(f"the NVIDIA driver reports no GPU; {NO_GPU_HERE}")
    return Inventory(
        gpus=tuple(_visible_filter(devices, environ.get("CUDA_VISIBLE_DEVICES"))),
        source="nvml",
        driver_version=driver,
        cuda_version=f"{cuda // 1000}.{cuda % 1000 // 10}",
        host_memory_bytes=host_memory_bytes(),
    )


def _processes(pynvml, handle) -> tuple[GpuProcess, ...]:
    """Who else holds memory on the card, so a refusal can name them."""
    try:
        running = pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
    except pynvml.NVMLError:
        return ()
    found = []
    for p in running:
        try:
            name = Path(f"/proc/{p.pid}/comm").read_text().strip()
        except OSError:
            name = "?"  # another container's process, or gone
        used = p.usedGpuMemory if isinstance(p.usedGpuMemory, int) else None
        found.append(GpuProcess(pid=int(p.pid), name=name, used_bytes=used))
    return tuple(found)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


class MemorySampler:
    """Samples used GPU memory through NVML in a background thread, keeping the peak per GPU."""

    def __init__(self, indices: list[int], interval_s: float = 0.5):
        self.indices = indices
        self.interval_s = interval_s
        self.peak_bytes: dict[int, int] = {}
        self._stop = None
        self._thread = None

    def __enter__(self) -> MemorySampler:
        import threading

        try:
            import pynvml

            pynvml.nvmlInit()
        except Exception:  # no driver: nothing to sample, the run goes on
            return self
        self._stop = threading.Event()
        handles = {i: pynvml.nvmlDeviceGetHandleByIndex(i) for i in self.indices}

        def sample() -> None:
            while not self._stop.is_set():
                for i, handle in handles.items():
                    used = int(pynvml.nvmlDeviceGetMemoryInfo(handle).used)
                    self.peak_bytes[i] = max(self.peak_bytes.get(i, 0), used)
                self._stop.wait(self.interval_s)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            import pynvml

            pynvml.nvmlShutdown()
