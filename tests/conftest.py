import importlib.util
import os
import sys
from datetime import datetime
from pathlib import Path

import pytest

from qwen_tune.machine.gpus import GIB, Gpu, Inventory
from qwen_tune.planning.plan import MachineFacts

os.environ.setdefault("HF_HUB_OFFLINE", "1")

FIXED_NOW = datetime(2026, 11, 23, 12, 0, 0)
# The box the golden plans are made for: no flash-attn, Python writes bytecode, no hub, torch >= 2.10.
# CI reaches no hub (HF_HUB_OFFLINE above); its torch (2.13) has the varlen attention that packed rows run through.
PLAIN_MACHINE = MachineFacts(hub_offline=True, varlen_attention=True)
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


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """The tiny random Qwen2 the CPU end-to-end tests train (tools/make_model.py tiny), built once a session."""
    import subprocess

    out = tmp_path_factory.mktemp("models") / "tiny-qwen2"
    done = subprocess.run([sys.executable, str(TOOLS / "make_model.py"), "tiny", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return out


def gpu_inventory(*memories_gib: float, cc=(8, 9), name="Test GPU") -> Inventory:
    gpus = tuple(Gpu(index=i, name=name, total_bytes=int(m * GIB), compute_capability=cc) for i, m in enumerate(memories_gib))
    return Inventory(gpus=gpus, source="test")


def swift_missing() -> str | None:
    """Why ms-swift cannot run here, or None where qwen-tune itself would find it: the product starts the swift of
    its own Python (swift/cli beside its interpreter, activated or not), else a `swift` command on PATH."""
    from qwen_tune.swift.command import swift_cli_dir, swift_executable

    if swift_cli_dir() is None and swift_executable() is None:
        return f"needs ms-swift, which {sys.executable} cannot import and PATH has no `swift`: pip install 'ms-swift>=4.6,<4.7'"
    if importlib.util.find_spec("swift") is None:
        return f"needs ms-swift's package in {sys.executable} itself (the tests import it)"
    return None


def in_ci() -> bool:
    """CI=true (as CI services set it): a test that needs ms-swift must run there, never skip."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def pytest_collection_modifyitems(config, items):
    """`gpu` tests need CUDA, `requires_swift` tests ms-swift: skip them cleanly, saying why, where they are missing."""
    needs_swift = [item for item in items if "requires_swift" in item.keywords]
    why = swift_missing() if needs_swift else None
    if why and in_ci():
        raise pytest.UsageError(f"CI=true and {len(needs_swift)} tests {why}; CI must run every one of them")
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


SKIPPED_SWIFT_TESTS: list[str] = []


def pytest_runtest_logreport(report):
    """A requires_swift test that skipped itself (an importorskip, a skip inside it) counts too; a `gpu` one skips
    for want of a GPU, which CI never has, and a `mount_namespace` one where the box lets no process make its own."""
    exempt = "gpu" in report.keywords or "mount_namespace" in report.keywords
    if report.skipped and "requires_swift" in report.keywords and not exempt:
        SKIPPED_SWIFT_TESTS.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus):
    """Under CI=true a skipped ms-swift test fails the run: a green CI must not hide tests that never ran."""
    if in_ci() and SKIPPED_SWIFT_TESTS and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter):
    if SKIPPED_SWIFT_TESTS:
        verdict = "CI=true: that fails the run" if in_ci() else "outside CI they only skip"
        terminalreporter.write_line(
            f"{len(SKIPPED_SWIFT_TESTS)} ms-swift tests were skipped ({verdict}): {SKIPPED_SWIFT_TESTS[0]} ..."
        )
