"""The run directory: checked before anything is written, created fresh, never reused, never left half-written.

It is the record of what happened: the plan, the filled data, the exact argv and environment,
the box, the versions, swift's own output (written by process.py), and the outcome (outcome.py).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from importlib import metadata
from pathlib import Path

from qwen_tune.checking.identity import Expectation, expectations
from qwen_tune.errors import DiskSpaceError, OutputError, UsageError
from qwen_tune.machine.gpus import GIB, MIB
from qwen_tune.planning.dataset import write_jsonl
from qwen_tune.planning.plan import Job, Plan
from qwen_tune.planning.recipes import Bilingual
from qwen_tune.report import plan_json, plan_text
from qwen_tune.swift.command import rerun_script, sft_argv, sft_env

PACKAGES = (
    "qwen-tune",
    "ms-swift",
    "torch",
    "transformers",
    "peft",
    "trl",
    "accelerate",
    "datasets",
    "deepspeed",
    "bitsandbytes",
    "flash-attn",
)


def require_run_dir(run_dir: Path) -> None:
    """A RUN_DIR argument that names nothing: say so, not that it lacks some file."""
    if not run_dir.is_dir():
        raise UsageError(f"{run_dir} does not exist: give a run directory, e.g. one of runs/ (`ls runs`)")


@dataclass
class RunRecord:
    """What a run needs once planned; stored as run.json so that --resume continues it exactly."""

    run_dir: str
    argv: list[str]
    env: dict[str, str]
    output_dir: str
    gpu_indices: list[int]
    system: str
    identity_name: dict[str, str]  # zh, en
    profile: str
    estimate_peak_gib: float
    verify: bool
    # What the identity check expects of each probe (identity.Expectation); older runs have none: identity_name then.
    expectations: list[dict] = field(default_factory=list)
    general_prompts: list[str] = field(default_factory=list)  # the base model answers them before training

    @classmethod
    def load(cls, run_dir: Path) -> RunRecord:
        require_run_dir(run_dir)
        path = run_dir / "run.json"
        if not path.is_file():
            raise UsageError(f"{run_dir} is not a qwen-tune run directory (no run.json)")
        return cls(**json.loads(path.read_text(encoding="utf-8")))

    @property
    def node_rank(self) -> int:
        """This machine's rank in a multi-node run: only node 0 saves the adapter and checks it."""
        return int(self.env.get("NODE_RANK", "0"))

    def save(self) -> None:
        write_json(Path(self.run_dir) / "run.json", asdict(self))

    def expected_identity(self) -> list[Expectation]:
        """What the identity check expects: as planned, or for a run planned before expectations were kept, its name."""
        if self.expectations:
            return [Expectation.from_record(e) for e in self.expectations]
        name = Bilingual(**self.identity_name)
        return expectations([], name, name)


def launch_fields(plan: Plan) -> dict:
    """What of a RunRecord the plan decides and a retry of the OOM ladder changes."""
    return {
        "argv": sft_argv(plan),
        "env": sft_env(plan),
        "profile": plan.profile.name,
        "estimate_peak_gib": round(plan.estimate.peak_bytes / GIB, 2),
    }


def unused_path(base: Path) -> Path:
    """base, or base-2, base-3...: the first name that does not exist, so nothing is overwritten."""
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


def next_run_dir(output_dir: Path, recipe_name: str, now: datetime) -> Path:
    """A fresh name under output_dir; never one that exists."""
    return unused_path(output_dir / f"{now:%Y%m%d-%H%M%S}-{recipe_name}")


def nearest_existing(path: Path) -> Path:
    """The path, or its closest ancestor that exists: where its missing directories would be made."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_output_dir(output_dir: Path) -> None:
    """Refuse before anything is written when no run directory could be made under output_dir."""
    base = nearest_existing(output_dir)
    if not base.is_dir():
        raise OutputError(f"cannot write runs under {output_dir}: {base} is not a directory; pick another --output-dir")
    if not os.access(base, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write runs under {output_dir}: {base} is not writable; pick another --output-dir")
    if shutil.disk_usage(base).total == 0:  # /proc, /sys: files there are the kernel's, not ours
        raise OutputError(
            f"cannot write runs under {output_dir}: {base} is a virtual filesystem, not a disk; pick another --output-dir"
        )


def free_bytes_under(path: Path) -> int:
    """Free bytes on the filesystem the run would land on, though its directory does not exist yet."""
    return shutil.disk_usage(nearest_existing(path)).free


def check_disk_space(needed: int, output_dir: Path, free_bytes: Callable[[Path], int] = free_bytes_under) -> None:
    """Refuse a run whose checkpoints would fill the disk: better now than a failed save an hour in."""
    free = free_bytes(output_dir)
    if free < needed:
        raise DiskSpaceError(
            f"not enough disk space under {output_dir}: the run needs about {_size(needed)} (checkpoints, data, logs), "
            f"{_size(free)} is free; free some space or pick another --output-dir"
        )


def _size(n: int) -> str:
    return f"{n / GIB:.1f} GiB" if n >= GIB else f"{n / MIB:.0f} MiB"


def create_run_dir(job: Job, *, verify: bool) -> RunRecord:
    """Make the run directory and write everything known before training; never reuse one, never leave half of one."""
    run_dir = job.run_dir
    try:
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        run_dir.mkdir()
    except FileExistsError:
        raise OutputError(f"run directory {run_dir} already exists; qwen-tune never overwrites a run") from None
    except OSError as exc:
        raise OutputError(f"cannot create run directory {run_dir}: {exc.strerror}; pick another --output-dir") from None
    try:
        return _write_run_files(job, verify=verify)
    except OSError as exc:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise OutputError(
            f"cannot write run directory {run_dir}: {exc.strerror or exc}, so it was removed; free some space or pick another --output-dir"
        ) from None


def _write_run_files(job: Job, *, verify: bool) -> RunRecord:
    run_dir, plan = job.run_dir, job.plan
    record = RunRecord(
        run_dir=str(run_dir),
        output_dir=plan.output_dir,
        gpu_indices=[g.index for g in plan.inventory.gpus],
        system=plan.recipe.system,
        identity_name=asdict(plan.recipe.identity_name),
        verify=verify,
        expectations=[asdict(e) for e in job.expectations],
        general_prompts=list(job.general_prompts),
        **launch_fields(plan),
    )
    write_jsonl(job.rows, run_dir / "dataset.jsonl")
    expected = job.expectations if verify else ()
    write_json(run_dir / "plan.json", plan_json(plan, expected))
    (run_dir / "plan.txt").write_text(plan_text(plan, expected) + "\n", encoding="utf-8")
    write_json(run_dir / "command.json", {"argv": sft_argv(plan), "env": sft_env(plan)})
    command_sh = run_dir / "command.sh"
    command_sh.write_text(rerun_script(plan, run_dir, Path.cwd(), os.environ.get("PYTHONPATH")), encoding="utf-8")
    command_sh.chmod(0o755)
    write_json(run_dir / "inventory.json", asdict(plan.inventory))
    write_json(run_dir / "versions.json", package_versions())
    record.save()
    return record


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
