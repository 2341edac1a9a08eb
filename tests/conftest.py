import importlib.util
import os
import shutil
import sys
from datetime import datetime
from pathlib import Path

import pytest

from qwen_tune.gpus import GIB, Gpu, Inventory
from qwen_tune.plan import MachineFacts

os.environ.setdefault("HF_HUB_OFFLINE", "1")

FIXED_NOW = datetime(2026, 11, 23, 12, 0, 0)
# The box the golden plans are made for: no flash-attn, Python writes bytecode, no hub.
PLAIN_MACHINE = MachineFacts(hub_offline=True)  # CI reaches no hub (HF_HUB_OFFLINE above)
TOOLS = Path(__file__).resolve().parents[1] / "tools"


def load_script(path: str):
    """tools/PATH.py (e.g. "bench", "probes/startup_probe") as a module named after the file, to test its
    pure parts (tools/ is no package)."""
    name = Path(path).name
    if name in sys.modules and getattr(sys.modules[name], "__file__", None) == str(TOOLS / f"{path}.py"):
        return sys.modules[name]  # one module per file: bad_inputs' Case is the same class for every test
    spec = importlib.util.spec_from_file_location(name, TOOLS / f"{path}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the script runs
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def python_writes_bytecode(monkeypatch):
    """Plans depend on PYTHONDONTWRITEBYTECODE (jobs.bytecode_cache); tests that need it set it themselves."""
    monkeypatch.delenv("PYTHONDONTWRITEBYTECODE", raising=False)
    monkeypatch.delenv("PYTHONPYCACHEPREFIX", raising=False)


def gpu_inventory(*memories_gib: float, cc=(8, 9), name="Test GPU") -> Inventory:
    gpus = tuple(Gpu(index=i, name=name, total_bytes=int(m * GIB), compute_capability=cc) for i, m in enumerate(memories_gib))
    return Inventory(gpus=gpus, source="test")


def swift_missing() -> str | None:
    """Why ms-swift cannot run here, or None when both its package and its `swift` command are installed."""
    if importlib.util.find_spec("swift") is None:
        return "needs ms-swift, which this Python cannot import: pip install 'ms-swift>=4.6,<4.7' (CI has it)"
    if shutil.which("swift") is None:
        return "needs ms-swift's `swift` command, which is not on PATH (CI has it)"
    return None


def pytest_collection_modifyitems(config, items):
    """`gpu` tests need CUDA, `requires_swift` tests ms-swift: skip them cleanly, saying why, where they are missing."""
    needs_swift = [item for item in items if "requires_swift" in item.keywords]
    why = swift_missing() if needs_swift else None
    if why:
        for item in needs_swift:
            item.add_marker(pytest.mark.skip(reason=why))
    if not any("gpu" in item.keywords for item in items):
        return
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run `make test-gpu` on a GPU box)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
