"""What GPUs this box has, read through NVML into plain dataclasses.

Everything downstream (planning, memory fit) works on these values, so it can be
tested with inventories built in tests; only `read_inventory` touches the driver.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from qwen_tune.errors import GpuSelectionError, NoGpuError, UsageError

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
    free_bytes: int | None = None  # None: NVML could not say (or a card from the table, never measured)
    uuid: str | None = ""  # None: NVML could not say
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
    driver_version: str | None = ""  # None: NVML could not say
    cuda_version: str | None = ""
    host_memory_bytes: int = 0
    cpu_processes: int = 1  # --gpus cpu:N: N training processes on the CPU (torchrun over gloo)

    @property
    def is_cpu(self) -> bool:
        return not self.gpus

    @property
    def per_node(self) -> int:
        """Training processes on this machine: one per GPU, or cpu_processes on the CPU."""
        return len(self.gpus) or self.cpu_processes


def parse_indices(spec: str) -> tuple[int, ...]:
    """--gpus '0,1' (spaces allowed) → (0, 1); an empty item, a negative index or one named twice is a
    mistake, never silently fixed."""
    items = [item.strip() for item in spec.split(",")]
    if "" in items:
        raise UsageError(f"--gpus {spec!r}: an empty GPU index; give indices like 0,1 (`qwen-tune gpus` lists them)")
    bad = [item for item in items if not item.isdigit()]
    if bad and len(items) > 1 and all(not item.isdigit() for item in items):
        raise UsageError(
            f"--gpus {spec!r}: a plan is for one kind of card, as many as the box has: 2xrtx3090, or GPU indices (0,1)"
        )
    if bad:
        raise UsageError(f"--gpus {spec!r}: {bad[0]} is no GPU index; indices start at 0 (`qwen-tune gpus` lists them)")
    indices = tuple(int(item) for item in items)
    twice = [i for n, i in enumerate(indices) if i in indices[:n]]
    if twice:
        raise UsageError(f"--gpus {spec!r} names GPU {twice[0]} twice; name each GPU once")
    return indices


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
    """Read every GPU through NVML, honouring CUDA_VISIBLE_DEVICES.

    Every query goes through `_query`. A fact NVML cannot give (NotSupported, NoPermission, ...)
    becomes None: the driver or CUDA version, a GPU's UUID (then CUDA_VISIBLE_DEVICES can only name
    it by index), its free memory (then the busy-GPU guard cannot judge it), its process list (empty).
    A GPU NVML cannot reach, name, size or place in a generation stops qwen-tune with one line
    (NoGpuError, exit 14) instead: a plan made without it would quietly use fewer GPUs than the box has.
    """
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
        driver = _query(pynvml.nvmlSystemGetDriverVersion)
        cuda = _query(pynvml.nvmlSystemGetCudaDriverVersion_v2)
        devices = [_read_gpu(pynvml, index) for index in range(_query(pynvml.nvmlDeviceGetCount, what="the number of GPUs"))]
    finally:
        _query(pynvml.nvmlShutdown)
    if not devices:
        raise NoGpuError(f"the NVIDIA driver reports no GPU; {NO_GPU_HERE}")
    return Inventory(
        gpus=tuple(_visible_filter(devices, environ.get("CUDA_VISIBLE_DEVICES"))),
        source="nvml",
        driver_version=driver,
        cuda_version=None if cuda is None else f"{cuda // 1000}.{cuda % 1000 // 10}",
        host_memory_bytes=host_memory_bytes(),
    )


def _read_gpu(pynvml, index: int) -> Gpu:
    handle = _query(pynvml.nvmlDeviceGetHandleByIndex, index, what=f"GPU {index}")
    memory = _query(pynvml.nvmlDeviceGetMemoryInfo, handle, what=f"GPU {index}'s memory")
    free = getattr(memory, "free", None)
    cc = _query(pynvml.nvmlDeviceGetCudaComputeCapability, handle, what=f"GPU {index}'s compute capability")
    return Gpu(
        index=index,
        name=_query(pynvml.nvmlDeviceGetName, handle, what=f"GPU {index}'s name"),
        uuid=_query(pynvml.nvmlDeviceGetUUID, handle),
        total_bytes=int(memory.total),
        free_bytes=int(free) if isinstance(free, int) else None,
        compute_capability=tuple(cc),
        processes=_processes(pynvml, handle),
    )


def _query(func, *args, default=None, what: str | None = None):
    """One NVML call (nvitop's nvmlQuery is the model): its answer, text decoded, or `default` when NVML
    cannot give it (NotSupported, NoPermission, Unknown, GPU lost, ...). With `what`, the fact is one a
    plan cannot do without: the failure is a NoGpuError naming it instead."""
    import pynvml

    try:
        value = func(*args)
    except pynvml.NVMLError as exc:
        if what is None:
            return default
        raise NoGpuError(
            f"NVML cannot read {what} ({exc}); check the driver and the card with `nvidia-smi`, "
            "or plan for a known card with `qwen-tune plan --gpus rtx4090`"
        ) from exc
    return _text(value) if isinstance(value, bytes) else value


def _processes(pynvml, handle) -> tuple[GpuProcess, ...]:
    """Who else holds memory on the card, so a refusal can name them."""
    found = []
    for p in _query(pynvml.nvmlDeviceGetComputeRunningProcesses, handle, default=()):
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
    """Samples used GPU memory through NVML in a background thread: the peak per GPU, and (seconds since start,
    used bytes) per GPU for memory.png, at most max_samples of them (thinned to every other one when full)."""

    def __init__(self, indices: list[int], interval_s: float = 0.5, max_samples: int = 2000):
        self.indices = indices
        self.interval_s = interval_s
        self.max_samples = max_samples
        self.peak_bytes: dict[int, int] = {}
        self.samples: dict[int, list[tuple[float, int]]] = {}
        self._stride = 1  # keep every stride-th tick: doubled at each thinning, so the kept ones stay evenly spaced
        self._stop = None
        self._thread = None

    def __enter__(self) -> MemorySampler:
        import threading
        import time

        try:
            import pynvml

            pynvml.nvmlInit()
        except Exception:  # no driver: nothing to sample, the run goes on
            return self
        self._stop = threading.Event()
        handles = {i: _query(pynvml.nvmlDeviceGetHandleByIndex, i) for i in self.indices}
        handles = {i: handle for i, handle in handles.items() if handle is not None}  # a GPU NVML cannot reach: no peak
        start = time.monotonic()

        def sample() -> None:
            tick = 0
            while not self._stop.is_set():
                keep = tick % self._stride == 0
                for i, handle in handles.items():
                    used = getattr(_query(pynvml.nvmlDeviceGetMemoryInfo, handle), "used", None)
                    if isinstance(used, int):  # an unanswered sample is skipped, never a crashed thread
                        self.peak_bytes[i] = max(self.peak_bytes.get(i, 0), used)
                        if keep:
                            self._keep(i, round(time.monotonic() - start, 2), used)
                tick += 1
                self._stop.wait(self.interval_s)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def _keep(self, index: int, seconds: float, used: int) -> None:
        points = self.samples.setdefault(index, [])
        points.append((seconds, used))
        if len(points) > self.max_samples:
            for i, kept in self.samples.items():
                self.samples[i] = kept[::2]
            self._stride *= 2

    def __exit__(self, *exc) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            import pynvml

            _query(pynvml.nvmlShutdown)
