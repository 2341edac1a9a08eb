"""The run directory: checked before anything is written, created fresh, never reused, never left half-written.

It is the record of what happened: the plan, the filled data, the exact argv and environment,
the box, the versions, swift's own output (written by process.py), and the outcome (outcome.py).
"""

from __future__ import annotations

import os
import platform
import re
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from importlib import metadata
from pathlib import Path

import pydantic

from qwen_tune.checking.identity import Expectation, expectations
from qwen_tune.errors import DiskSpaceError, OutputError, UsageError
from qwen_tune.machine.gpus import GIB, MIB
from qwen_tune.planning.dataset import write_jsonl
from qwen_tune.planning.plan import Job, Plan
from qwen_tune.report import plan_json, plan_text
from qwen_tune.running.files import read_json, write_json, write_text
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
    if (run_dir / "run.json").is_file():
        return
    # A natural slip: the run's swift/ or a checkpoint inside it, or the runs/ folder that holds the runs.
    owner = next((p for p in list(run_dir.resolve().parents)[:3] if (p / "run.json").is_file()), None)
    if owner is not None:
        raise UsageError(f"{run_dir} is inside the run directory {owner}: give that directory itself")
    runs = sorted((p for p in run_dir.iterdir() if (p / "run.json").is_file()), key=lambda p: p.name)
    if runs:
        raise UsageError(f"{run_dir} holds run directories, not one run: give one of them, e.g. the newest, {runs[-1]}")
    if not (run_dir / "swift").is_dir():  # '' is the current directory: nothing of a run here at all
        raise UsageError(f"{run_dir.absolute()} is not a qwen-tune run directory (no run.json): give one of runs/ (`ls runs`)")


def located(plan: Plan, run_dir: Path) -> Plan:
    """The plan's files where the run directory is now: its data and swift's output directory (a run directory
    that was moved or copied trains and exports from its own files, not the original's)."""
    return replace(plan, dataset_path=str(run_dir / "dataset.jsonl"), output_dir=str(run_dir / "swift"))


@dataclass
class RunRecord:
    """A run directory being written: where it is, the plan it trains, and what the identity check expects.

    Stored as run.json so that --resume continues the run. What runs is rendered again from the plan by
    qwen_tune.swift.command, never taken from the file as written: run.json's argv and env only say what ran.
    """

    run_dir: Path
    plan: Plan  # the latest rung of the out-of-memory ladder
    verify: bool
    # What the identity check expects of each probe; older runs have none: the recipe's names then.
    expectations: list[Expectation] = field(default_factory=list)
    general_prompts: list[str] = field(default_factory=list)  # the base model answers them before training
    trust_remote_code: bool = False  # this command line's --trust-remote-code; never read from run.json

    @property
    def argv(self) -> list[str]:
        return sft_argv(self.plan)

    @property
    def env(self) -> dict[str, str]:
        return sft_env(self.plan)

    @property
    def output_dir(self) -> Path:
        """swift's --output_dir: checkpoints and logging.jsonl."""
        return self.run_dir / "swift"

    @property
    def gpu_indices(self) -> list[int]:
        return [g.index for g in self.plan.inventory.gpus]

    @property
    def system(self) -> str:
        return self.plan.recipe.system

    @property
    def profile(self) -> str:
        return self.plan.profile.name

    @property
    def estimate_peak_gib(self) -> float:
        return round(self.plan.estimate.peak_bytes / GIB, 2)

    def expected_identity(self) -> list[Expectation]:
        """What the identity check expects: as planned, or for a run planned before expectations were kept, its name."""
        if self.expectations:
            return list(self.expectations)
        name = self.plan.recipe.identity_name
        return expectations([], name, name)

    @property
    def node_rank(self) -> int:
        """This machine's rank in a multi-node run: only node 0 saves the adapter and checks it."""
        return self.plan.nodes.rank

    @classmethod
    def load(cls, run_dir: Path, *, trust_remote_code: bool = False) -> RunRecord:
        """run.json, checked field by field: an edited or cut-short one is one line, not a traceback."""
        require_run_dir(run_dir)
        path = run_dir / "run.json"
        if not path.is_file():
            raise UsageError(f"{run_dir} is not a qwen-tune run directory (no run.json)")
        data = read_json(path)
        if isinstance(data, dict) and "plan" not in data and (run_dir / "plan.json").is_file():
            data = {**data, "plan": read_json(run_dir / "plan.json")}  # written before run.json kept the plan
        try:
            saved = _SAVED.validate_python(data)
        except pydantic.ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(x) for x in first["loc"]) or "the top level"
            raise UsageError(
                f"{path} is not what qwen-tune wrote ({where}: {first['msg']}): it was edited or cut short, so this run "
                f"cannot be continued; start a new run (its checkpoints stay usable: qwen-tune export {run_dir})"
            ) from None
        # Where swift keeps compiled bytecode is this box's to say (jobs.bytecode_cache), not the file's.
        plan = replace(located(saved.plan, run_dir), bytecode_cache=None)
        try:  # a plan that renders no command (a model family qwen-tune does not know, say)
            sft_argv(plan)
            sft_env(plan)
        except (KeyError, ValueError, TypeError) as exc:
            raise UsageError(f"{path} holds a plan qwen-tune cannot render ({exc!r}): it was edited; start a new run") from None
        return cls(run_dir, plan, saved.verify, saved.expectations, saved.general_prompts, trust_remote_code)

    def own_files(self) -> None:
        """What a resume writes or swift reads must be the run directory's own, not a link planted to elsewhere
        (checkpoints written into another user's folder, a log appended to one of your files)."""
        for name in ("swift", "dataset.jsonl", "swift.log", "general", "run.lock"):
            if (self.run_dir / name).is_symlink():
                raise UsageError(
                    f"{self.run_dir / name} is a symbolic link; a run directory holds its own files: "
                    "replace the link with what it points to, or start a new run"
                )

    def save(self) -> None:
        data = {
            "plan": self.plan.to_dict(),
            "verify": self.verify,
            "expectations": [asdict(e) for e in self.expectations],
            "general_prompts": self.general_prompts,
            "argv": self.argv,  # what ran, to read: --resume renders it again from the plan
            "env": self.env,
        }
        write_json(self.run_dir / "run.json", data)


@dataclass
class _Saved:
    """run.json's fields that a resume reads; the rest (argv, env) are there to be read by people."""

    plan: Plan
    verify: bool
    expectations: list[Expectation] = field(default_factory=list)
    general_prompts: list[str] = field(default_factory=list)


_SAVED = pydantic.TypeAdapter(_Saved)

# The variables of a recorded environment that export, chat and serve apply: devices and the hub, nothing that
# loads code (PYTHONPATH, LD_PRELOAD, PYTHONPYCACHEPREFIX...) or starts several processes.
RECORDED_ENV = ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "HF_HUB_OFFLINE", "PYTORCH_CUDA_ALLOC_CONF",
                "TORCH_CUDNN_SDPA_DEPRIORITIZED", "USE_HF")  # fmt: skip


def recorded_env(run_dir: Path) -> dict[str, str]:
    """The allowed part of run.json's env: the devices a run trained on, and whether its model is local."""
    require_run_dir(run_dir)
    path = run_dir / "run.json"
    if not path.is_file():
        raise UsageError(f"{run_dir} is not a qwen-tune run directory (no run.json)")
    data = read_json(path)
    env = data.get("env") if isinstance(data, dict) else None
    if not isinstance(env, dict):
        raise UsageError(f"{path} has no env: it was edited or cut short; start a new run")
    return {k: v for k, v in env.items() if k in RECORDED_ENV and isinstance(v, str)}


def within(run_dir: Path, path: str | Path) -> str:
    """A path inside the run directory, relative to it (a moved or copied run directory keeps meaning the same)."""
    try:
        return str(Path(path).absolute().relative_to(run_dir.absolute()))
    except ValueError:
        return str(path)


def unused_path(base: Path) -> Path:
    """base, or base-2, base-3...: the first name that does not exist, so nothing is overwritten."""
    candidate, n = base, 1
    while candidate.exists() or candidate.is_symlink():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


def slug(text: str, limit: int = 80) -> str:
    """text as one safe word for a path, a job name or a shell line: ASCII letters, digits, '.', '_' and '-'
    (a recipe named `x/../../ESCAPED` or with a newline in it stays one harmless name)."""
    word = re.sub(r"[^A-Za-z0-9._-]+", "-", text)
    word = re.sub(r"[-.]*-[-.]*", "-", word)  # no '.-.' runs: '/../' becomes one '-'
    word = re.sub(r"\.{2,}", ".", word).strip("._-")
    return word[:limit].rstrip("._-") or "run"


def run_name(recipe: str, model: str | None = None, node_rank: int = 0) -> str:
    """What a run directory is named after: the recipe, the model where --model changed it, the node."""
    name = slug(recipe)
    if model:
        short = slug(Path(model.rstrip("/")).name.lower())
        if short.lower() not in name.lower():
            name = f"{name}-{short}"
    return name if node_rank == 0 else f"{name}-node{node_rank}"


def next_run_dir(output_dir: Path, name: str, now: datetime) -> Path:
    """A fresh name under output_dir; never one that exists."""
    return unused_path(output_dir / f"{now:%Y%m%d-%H%M%S}-{slug(name)}")


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


def claim_run_dir(wanted: Path) -> Path:
    """Make the run directory: wanted, or the next free name when another run took it meanwhile (two runs started
    in the same second); never one that exists."""
    try:
        wanted.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {wanted.parent}: {exc.strerror}; pick another --output-dir") from None
    candidate = wanted
    for _ in range(1000):
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            candidate = unused_path(wanted)
        except OSError as exc:
            raise OutputError(f"cannot create run directory {candidate}: {exc.strerror}; pick another --output-dir") from None
    raise OutputError(f"run directory {wanted} and 1,000 names after it exist; qwen-tune never overwrites a run")


def create_run_dir(job: Job, *, verify: bool, trust_remote_code: bool = False) -> RunRecord:
    """Make the run directory and write everything known before training; never reuse one, never leave half of one."""
    run_dir = claim_run_dir(job.run_dir)
    job = replace(job, run_dir=run_dir, plan=located(job.plan, run_dir))
    try:
        return _write_run_files(job, verify=verify, trust_remote_code=trust_remote_code)
    except OSError as exc:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise OutputError(
            f"cannot write run directory {run_dir}: {exc.strerror or exc}, so it was removed; free some space or pick another --output-dir"
        ) from None
    except BaseException:  # a stop (SIGTERM, Ctrl-C) while it was being written: no half of one left
        shutil.rmtree(run_dir, ignore_errors=True)
        raise


def _write_run_files(job: Job, *, verify: bool, trust_remote_code: bool) -> RunRecord:
    run_dir, plan = job.run_dir, job.plan
    record = RunRecord(run_dir, plan, verify, list(job.expectations), list(job.general_prompts), trust_remote_code)
    write_jsonl(job.rows, run_dir / "dataset.jsonl")
    expected = job.expectations if verify else ()
    write_json(run_dir / "plan.json", plan_json(plan, expected))
    write_text(run_dir / "plan.txt", plan_text(plan, expected) + "\n")
    write_json(run_dir / "command.json", {"argv": sft_argv(plan), "env": sft_env(plan)})
    write_text(run_dir / "command.sh", rerun_script(plan, run_dir, Path.cwd(), os.environ.get("PYTHONPATH")), mode=0o755)
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
