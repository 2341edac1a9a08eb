"""Run a Plan for real: a fresh run directory, `swift sft` as a subprocess, live progress, metrics.

The run directory is the record of what happened: the plan, the filled data, the exact argv
and environment, the box, the versions, swift's own output, and the outcome.
"""

from __future__ import annotations

import ast
import json
import os
import platform
import signal
import subprocess
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Callable

from qwen_tune.dataset import write_jsonl
from qwen_tune.errors import Interrupted, TrainingFailed, UserError
from qwen_tune.gpus import GIB, MemorySampler
from qwen_tune.jobs import Job, unused_path
from qwen_tune.locks import gpu_locks
from qwen_tune.recipes import Bilingual
from qwen_tune.report import plan_text
from qwen_tune.verify import check_identity, infer_env

PACKAGES = ("qwen-tune", "ms-swift", "torch", "transformers", "peft", "trl", "accelerate", "datasets", "deepspeed", "bitsandbytes", "flash-attn")
OOM_MARKERS = ("CUDA out of memory", "OutOfMemoryError")


@dataclass
class Progress:
    """One logging step of swift's trainer, as printed on its stdout."""

    step: int
    total: int
    loss: float | None = None
    elapsed: str = ""
    remaining: str = ""
    seconds_per_step: float | None = None


@dataclass
class TrainResult:
    run_dir: str
    returncode: int
    wall_seconds: float
    train_seconds: float | None = None
    final_loss: float | None = None
    steps: int | None = None
    checkpoint: str | None = None
    swift_peak_reserved_gib: float | None = None
    nvml_peak_used_gib: dict[str, float] = field(default_factory=dict)


def parse_progress(line: str) -> Progress | None:
    """swift prints each log step as a Python dict: {'loss': '1.2', 'global_step/max_steps': '5/40', ...}."""
    if "global_step/max_steps" not in line:
        return None
    text = line[line.rfind("{") :].strip()  # tqdm's bar can share the line
    try:
        record = ast.literal_eval(text)
        if "loss" not in record:
            return None  # the closing summary repeats the last step
        step, total = (int(x) for x in str(record["global_step/max_steps"]).split("/"))
    except (ValueError, SyntaxError, KeyError, TypeError):
        return None
    loss = record.get("loss")
    speed = record.get("train_speed(s/it)")
    return Progress(
        step=step,
        total=total,
        loss=float(loss) if loss is not None else None,
        elapsed=str(record.get("elapsed_time", "")),
        remaining=str(record.get("remaining_time", "")),
        seconds_per_step=float(speed) if speed is not None else None,
    )


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


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

    @classmethod
    def load(cls, run_dir: Path) -> RunRecord:
        path = run_dir / "run.json"
        if not path.is_file():
            raise UserError(f"{run_dir} is not a qwen-tune run directory (no run.json)")
        return cls(**json.loads(path.read_text(encoding="utf-8")))


def create_run_dir(job: Job, *, verify: bool) -> RunRecord:
    """Make the run directory and write everything known before training; never reuse one."""
    run_dir = job.run_dir
    try:
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        run_dir.mkdir()
    except FileExistsError:
        raise UserError(f"run directory {run_dir} already exists; qwen-tune never overwrites a run") from None
    except OSError as exc:
        raise UserError(f"cannot create run directory {run_dir}: {exc.strerror}; pick another --output-dir") from None
    plan = job.plan
    record = RunRecord(
        run_dir=str(run_dir),
        argv=plan.argv,
        env=plan.env,
        output_dir=plan.output_dir,
        gpu_indices=[g.index for g in plan.inventory.gpus],
        system=plan.recipe.system,
        identity_name=asdict(plan.recipe.identity_name),
        profile=plan.profile.name,
        estimate_peak_gib=round(plan.estimate.peak_bytes / GIB, 2),
        verify=verify,
    )
    write_jsonl(job.rows, run_dir / "dataset.jsonl")
    _write_json(run_dir / "plan.json", plan.to_dict())
    (run_dir / "plan.txt").write_text(plan_text(plan) + "\n", encoding="utf-8")
    _write_json(run_dir / "command.json", {"argv": plan.argv, "env": plan.env})
    (run_dir / "command.sh").write_text("#!/bin/sh\n" + plan.shell_command() + "\n", encoding="utf-8")
    _write_json(run_dir / "inventory.json", asdict(plan.inventory))
    _write_json(run_dir / "versions.json", package_versions())
    _write_json(run_dir / "run.json", asdict(record))
    return record


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete checkpoint: the trainer writes trainer_state.json last, so a save cut short has none."""
    checkpoints = [p for p in output_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit() and (p / "trainer_state.json").is_file()]
    return max(checkpoints, key=lambda p: int(p.name.split("-")[-1]), default=None)


class _ForwardSignals:
    """Ctrl-C and SIGTERM go to swift's whole process group, so it stops and its checkpoints stay."""

    def __init__(self, process: subprocess.Popen):
        self.process = process
        self.received: list[int] = []
        self.previous: dict[int, object] = {}

    def _forward(self, signum, frame) -> None:
        self.received.append(signum)
        try:
            os.killpg(self.process.pid, signum)
        except ProcessLookupError:
            pass

    def __enter__(self) -> _ForwardSignals:
        for signum in (signal.SIGINT, signal.SIGTERM):
            self.previous[signum] = signal.signal(signum, self._forward)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


def train(record: RunRecord, on_progress: Callable[[Progress], None], resume_from: Path | None = None) -> TrainResult:
    """Launch `swift sft` (argv list, no shell), append its output to swift.log, follow its progress."""
    run_dir = Path(record.run_dir)
    argv = record.argv + (["--resume_from_checkpoint", str(resume_from)] if resume_from else [])
    env = {**os.environ, **record.env, "PYTHONUNBUFFERED": "1"}
    log_path = run_dir / "swift.log"
    start = time.monotonic()
    with open(log_path, "a", encoding="utf-8") as log, MemorySampler(record.gpu_indices) as sampler:
        if resume_from:
            log.write(f"\n===== qwen-tune: resuming from {resume_from} =====\n")
        try:
            process = subprocess.Popen(
                argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace", bufsize=1,
                start_new_session=True,  # its own process group: signals reach swift only through us, all of it
            )  # fmt: skip
        except FileNotFoundError:
            raise UserError("the `swift` command is not installed: pip install 'ms-swift>=4.6,<4.7'") from None
        with _ForwardSignals(process) as signals:
            for line in process.stdout:
                log.write(line)
                progress = parse_progress(line)
                if progress:
                    on_progress(progress)
            process.wait()
    result = TrainResult(run_dir=str(run_dir), returncode=process.returncode, wall_seconds=round(time.monotonic() - start, 1))
    result.nvml_peak_used_gib = {str(i): round(b / GIB, 2) for i, b in sampler.peak_bytes.items()}
    _read_swift_log(Path(record.output_dir) / "logging.jsonl", result)
    if signals.received:
        name = signal.Signals(signals.received[0]).name
        kept = latest_checkpoint(Path(record.output_dir))
        where = f"{kept.name} is kept" if kept else "no checkpoint was written yet"
        raise Interrupted(f"stopped by {name}; {where}; continue with: qwen-tune run --resume {run_dir}")
    if process.returncode != 0:
        raise TrainingFailed(failure_message(log_path, process.returncode))
    return result


def failure_message(log_path: Path, returncode: int) -> str:
    lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    if any(marker in line for line in lines for marker in OOM_MARKERS):
        return f"swift ran out of GPU memory; try --profile qlora or a shorter max_length (log: {log_path})"
    errors = [line.strip() for line in lines if "Error" in line or "error:" in line]
    last = errors[-1] if errors else (lines[-1].strip() if lines else "no output")
    return f"swift sft failed with exit code {returncode}: {last[:300]} (log: {log_path})"


def _read_swift_log(path: Path, result: TrainResult) -> None:
    """Final loss, train time, checkpoint and swift's peak memory from its logging.jsonl."""
    if not path.is_file():
        return
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "loss" in record:
            result.final_loss = float(record["loss"])
        if "train_runtime" in record:
            result.train_seconds = float(record["train_runtime"])
        if "memory(GiB)" in record:
            result.swift_peak_reserved_gib = max(result.swift_peak_reserved_gib or 0.0, float(record["memory(GiB)"]))
        if record.get("last_model_checkpoint"):
            result.checkpoint = record["last_model_checkpoint"]
            result.steps = record.get("global_step")


def loss_curve(logging_jsonl: Path, png: Path) -> bool:
    """A PNG of loss against step, for a glance at whether training converged."""
    points = []
    for line in logging_jsonl.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if "loss" in record and "global_step/max_steps" in record:
            points.append((int(str(record["global_step/max_steps"]).split("/")[0]), float(record["loss"])))
    if not points:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot([p[0] for p in points], [p[1] for p in points], marker=".")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss")
    ax.set_title(png.parent.name, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)
    return True


def _write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")


def write_result(run_dir: Path, data: dict, line: str) -> None:
    _write_json(run_dir / "result.json", data)
    (run_dir / "result.txt").write_text(line + "\n", encoding="utf-8")


def execute(job: Job, *, verify: bool, force: bool, on_progress: Callable[[Progress], None]) -> dict:
    """A new run: check the GPUs are free, record it, then train and check it. Returns result.json's data."""
    busy = job.plan.busy_gpus()
    if busy and not force:
        raise UserError(f"{busy[0]}; stop that program, pick other GPUs with --gpus, or pass --force")
    with _exclusive([g.index for g in job.plan.inventory.gpus], str(job.run_dir), force):
        return finish(create_run_dir(job, verify=verify), on_progress)


def resume(run_dir: Path, on_progress: Callable[[Progress], None], *, force: bool = False) -> dict:
    """Continue an interrupted or failed run in its own directory, from its last checkpoint."""
    record = RunRecord.load(run_dir)
    result_file = run_dir / "result.json"
    if result_file.is_file() and json.loads(result_file.read_text(encoding="utf-8")).get("status") == "done":
        raise UserError(f"{run_dir} already finished; start a new run instead")
    with _exclusive(record.gpu_indices, record.run_dir, force):
        return finish(record, on_progress, resume_from=latest_checkpoint(Path(record.output_dir)))


def _exclusive(indices: list[int], run_dir: str, force: bool):
    return nullcontext() if force or not indices else gpu_locks(indices, run_dir)


def finish(record: RunRecord, on_progress: Callable[[Progress], None], resume_from: Path | None = None) -> dict:
    """Train, plot, check the identity, write the outcome: every exit leaves result.json consistent."""
    run_dir = Path(record.run_dir)
    outcome: dict = {"run_dir": str(run_dir), "profile": record.profile, "estimate_peak_gib": record.estimate_peak_gib}
    if resume_from:
        outcome["resumed_from"] = str(resume_from)
    try:
        result = train(record, on_progress, resume_from)
    except Interrupted as stop:
        write_result(run_dir, {**outcome, "status": "interrupted", "error": str(stop)}, f"INTERRUPTED: {stop}")
        raise
    except TrainingFailed as failure:
        write_result(run_dir, {**outcome, "status": "train-failed", "error": str(failure)}, f"FAIL training: {failure}")
        raise
    outcome.update(asdict(result), status="trained")
    logging_jsonl = Path(record.output_dir) / "logging.jsonl"
    outcome["loss_curve"] = "loss.png" if logging_jsonl.is_file() and loss_curve(logging_jsonl, run_dir / "loss.png") else None
    if result.checkpoint is None:
        write_result(run_dir, {**outcome, "status": "no-checkpoint"}, "FAIL: swift finished but wrote no checkpoint")
        raise TrainingFailed(f"swift finished but reported no checkpoint; see {run_dir / 'swift.log'}")
    line = f"trained: final loss {result.final_loss}, {result.wall_seconds:.0f} s"
    if record.verify:
        try:
            check = check_identity(Bilingual(**record.identity_name), record.system, record.env, result.checkpoint, unused_path(run_dir / "verify"))
        except UserError as failure:
            write_result(run_dir, {**outcome, "status": "verify-failed", "error": str(failure)}, f"FAIL: {failure}")
            raise
        outcome.update(identity_check="pass" if check.passed else "fail", answers=[asdict(a) for a in check.answers])
        line = f"{'PASS' if check.passed else 'FAIL'} identity check; {line}"
    else:
        outcome["identity_check"] = "skipped"
        line = f"identity check skipped; {line}"
    outcome["status"] = "done"
    write_result(run_dir, outcome, line)
    return outcome


def find_checkpoint(run_dir: Path) -> str:
    """The adapter a finished run produced, from its result.json."""
    result_file = run_dir / "result.json"
    if not result_file.is_file():
        raise UserError(f"{run_dir} is not a finished qwen-tune run (no result.json)")
    checkpoint = json.loads(result_file.read_text(encoding="utf-8")).get("checkpoint")
    if not checkpoint or not Path(checkpoint).is_dir():
        raise UserError(f"{run_dir} has no adapter checkpoint to export; did its training finish?")
    return checkpoint


def export_merged(run_dir: Path) -> Path:
    """Merge the run's LoRA into the base weights with `swift export --merge_lora`, into RUN_DIR/merged."""
    checkpoint = find_checkpoint(run_dir)
    target = run_dir / "merged"
    if target.exists():
        raise UserError(f"{target} already exists; qwen-tune never overwrites it (move it away to export again)")
    argv = ["swift", "export", "--adapters", checkpoint, "--merge_lora", "true", "--output_dir", str(target)]
    with open(run_dir / "export.log", "w", encoding="utf-8") as log:
        done = subprocess.run(argv, env=infer_env(RunRecord.load(run_dir).env), stdout=log, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise TrainingFailed(f"swift export failed with exit code {done.returncode}; see {run_dir / 'export.log'}")
    return target
