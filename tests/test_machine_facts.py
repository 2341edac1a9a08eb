"""The box's facts are probed once at the CLI's edge and passed in: the planner never reads them itself,
so the golden plans hold on boxes that differ from CI's (flash-attn installed, bytecode off)."""

import os
import subprocess
import sys
from pathlib import Path

from qwen_tune.planning.jobs import probe_machine

REPO = Path(__file__).resolve().parents[1]


def _stub_flash_attn(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "flash_attn").mkdir()
    (tmp_path / "flash_attn" / "__init__.py").write_text("")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}


def test_the_probe_sees_flash_attn_and_the_environment(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    _stub_flash_attn(tmp_path)
    facts = probe_machine({"PYTHONDONTWRITEBYTECODE": "1", "HF_HUB_OFFLINE": "1", "XDG_CACHE_HOME": str(tmp_path)})
    assert facts.flash_attn_installed and facts.hub_offline
    assert facts.bytecode_cache == str(tmp_path / "qwen-tune" / "pycache")


def test_golden_plans_hold_with_flash_attn_on_the_path(tmp_path):
    """The suite on a GPU box that has flash-attn: the golden files are made for the pinned machine, not this one."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_plan.py", "tests/test_multinode.py"],
        cwd=REPO, env=_stub_flash_attn(tmp_path), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:]


def test_the_cli_plans_flash_attention_where_it_is_installed(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "qwen_tune", "plan", "--gpus", "h100"], cwd=REPO, env=_stub_flash_attn(tmp_path),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "--attn_impl flash_attn" in done.stdout
