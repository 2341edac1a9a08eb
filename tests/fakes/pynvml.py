"""A stand-in for nvidia-ml-py in the bad-input cases (tools/bad_inputs.py puts this folder on PYTHONPATH).

FAKE_NVML unset: a box without the NVIDIA driver, as the real module reports it.
FAKE_NVML='[{"name": "NVIDIA GeForce RTX 4090", "total_mib": 24564, "free_mib": 100, "cc": [8, 9]}]': those GPUs.
FAKE_NVML_UNSUPPORTED='nvmlDeviceGetUUID,nvmlSystemGetDriverVersion': those queries raise NotSupported, as
they do on some cards, drivers and containers (any function below but nvmlInit can be named).
"""

import json
import os
from types import SimpleNamespace

_MIB = 1024**2
_GPUS = json.loads(os.environ["FAKE_NVML"]) if os.environ.get("FAKE_NVML") else None
_UNSUPPORTED = {name.strip() for name in os.environ.get("FAKE_NVML_UNSUPPORTED", "").split(",") if name.strip()}


class NVMLError(Exception):
    pass


class NVMLError_NotSupported(NVMLError):  # noqa: N801 - the real module's name
    def __str__(self):
        return "Not Supported"


def nvmlInit():
    if _GPUS is None:
        raise NVMLError("NVML Shared Library Not Found")


def nvmlShutdown():
    pass


def nvmlSystemGetDriverVersion():
    return "580.00.00"


def nvmlSystemGetCudaDriverVersion_v2():
    return 13000


def nvmlDeviceGetCount():
    return len(_GPUS)


def nvmlDeviceGetHandleByIndex(index):
    return {**_GPUS[index], "index": index}


def nvmlDeviceGetMemoryInfo(gpu):
    total, free = gpu["total_mib"] * _MIB, gpu["free_mib"] * _MIB
    return SimpleNamespace(total=total, free=free, used=total - free)


def nvmlDeviceGetName(gpu):
    return gpu["name"]


def nvmlDeviceGetUUID(gpu):
    return f"GPU-fake-{gpu['index']}"


def nvmlDeviceGetCudaComputeCapability(gpu):
    return tuple(gpu.get("cc", (8, 9)))


def nvmlDeviceGetComputeRunningProcesses(gpu):
    return []


def _unsupported_when_asked(name, func):
    def query(*args):
        if name in _UNSUPPORTED:
            raise NVMLError_NotSupported()
        return func(*args)

    return query


for _name, _func in list(globals().items()):
    if _name.startswith("nvml") and _name != "nvmlInit" and callable(_func):
        globals()[_name] = _unsupported_when_asked(_name, _func)
