"""Run a Plan for real: a fresh run directory, `swift sft` as a subprocess, live progress, metrics.

The run directory is the record of what happened: the plan, the filled data, the exact argv
and environment, the box, the versions, swift's own output, and the outcome.
"""

from __future__ import annotations

import ast
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata
from pathlib import Path

from qwen_tune.dataset import jsonl_bytes, write_jsonl
from qwen_tune.errors import (
    DiskSpaceError,
    GpuBusyError,
    Interrupted,
    OutOfMemory,
    OutputError,
    SwiftMissing,
    TrainingFailed,
    UsageError,
    UserError,
)  # fmt: skip
from qwen_tune.gpus import GIB, MIB, MemorySampler
from qwen_tune.jobs import Job, unused_path
from qwen_tune.locks import gpu_locks
from qwen_tune.plan import Plan, disk_bytes_needed, fallback
from qwen_tune.profiles import Profile
from qwen_tune.recipes import Bilingual
from qwen_tune.report import plan_text
from qwen_tune.verify import PreloadedInfer, check_identity, infer_env

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
LAUNCH_HEADER = "===== qwen-tune:"
SWIFT_INSTALL = "pip install 'ms-swift>=4.6,<4.7'"
OOM_MARKERS = ("CUDA out of memory", "OutOfMemoryError")
# Lines of swift's output that end a phase of its start-up or shut-down: (text in the line, phase).
TIMELINE_MARKERS = (
    ("[INFO:swift] rank:", "swift imported"),
    ("[INFO:swift] model_info:", "model loaded"),
    ("[INFO:swift] train_dataset:", "dataset tokenized"),
    ("[INFO:swift] model_parameter_info:", "LoRA attached"),
    ("[INFO:swift] last_model_checkpoint:", "final checkpoint saved"),
    ("[INFO:swift] End time of running main:", "swift finished"),
)
_SIZE = r"([\d.]+ [GMK]iB)"
OOM_DETAILS = (  # torch's out-of-memory message, piece by piece: (pattern, how we say it)
    (re.compile(r"Tried to allocate " + _SIZE), "asked for {} more"),
    (re.compile(_SIZE + r" is allocated by PyTorch"), "with {} already allocated"),
    (re.compile(r"of which " + _SIZE + r" is free"), "{} free on the card"),
    (re.compile(_SIZE + r" allowed"), "{} allowed to this process"),  # under set_per_process_memory_fraction
)


@dataclass
class Progress:
    """One logging step of swift's trainer, as printed on its stdout."""

    step: int
    total: int
    loss: float | None = None
    elapsed: str = ""
    remaining: str = ""
    seconds_per_step: float | None = None


class Timeline:
    """Seconds since the run started at which each phase ended: where a run's wall time goes."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.marks: dict[str, float] = {}
        self.attempt = 1  # the OOM ladder's retries get their own marks

    def mark(self, phase: str) -> None:
        name = phase if self.attempt == 1 else f"{phase} (attempt {self.attempt})"
        self.marks.setdefault(name, round(time.monotonic() - self.start, 1))

    def see(self, line: str) -> None:
        for text, phase in TIMELINE_MARKERS:
            if text in line:
                self.mark(phase)

    def write(self, path: Path) -> None:
        _write_json(path, self.marks)


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
            raise UsageError(f"{run_dir} is not a qwen-tune run directory (no run.json)")
        return cls(**json.loads(path.read_text(encoding="utf-8")))


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
            f"cannot write run directory {run_dir}: {exc.strerror or exc}, so it was removed; "
            "free some space or pick another --output-dir"
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
        **_launch_fields(plan),
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
    checkpoints = [
        p for p in output_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit() and (p / "trainer_state.json").is_file()
    ]
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


def train(record: RunRecord, on_progress: Callable[[Progress], None], resume_from: Path | None = None,
          timeline: Timeline | None = None) -> TrainResult:  # fmt: skip
    """Launch `swift sft` (argv list, no shell), append its output to swift.log, follow its progress."""
    timeline = timeline or Timeline()
    run_dir = Path(record.run_dir)
    argv = record.argv + (["--resume_from_checkpoint", str(resume_from)] if resume_from else [])
    env = {**os.environ, **record.env, "PYTHONUNBUFFERED": "1"}
    log_path = run_dir / "swift.log"
    start = time.monotonic()
    with open(log_path, "a", encoding="utf-8") as log, MemorySampler(record.gpu_indices) as sampler:
        # One header per launch: failure() reads only the newest launch's lines.
        log.write(f"{LAUNCH_HEADER} swift sft{f', resuming from {resume_from}' if resume_from else ''} =====\n")
        last_step = 0
        timeline.mark("swift started")
        try:
            process = subprocess.Popen(
                argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace", bufsize=1,
                start_new_session=True,  # its own process group: signals reach swift only through us, all of it
            )  # fmt: skip
        except FileNotFoundError:
            raise SwiftMissing(f"the `swift` command is not installed: {SWIFT_INSTALL}") from None
        with _ForwardSignals(process) as signals:
            for line in process.stdout:
                log.write(line)
                timeline.see(line)
                progress = parse_progress(line)
                if progress:
                    last_step = progress.step
                    timeline.mark("first step")
                    if progress.step == progress.total:
                        timeline.mark("last step")
                    on_progress(progress)
            process.wait()
            timeline.mark("swift exited")
    result = TrainResult(run_dir=str(run_dir), returncode=process.returncode, wall_seconds=round(time.monotonic() - start, 1))
    result.nvml_peak_used_gib = {str(i): round(b / GIB, 2) for i, b in sampler.peak_bytes.items()}
    read_swift_log(Path(record.output_dir) / "logging.jsonl", result)
    if signals.received:
        name = signal.Signals(signals.received[0]).name
        kept = latest_checkpoint(Path(record.output_dir))
        where = f"{kept.name} is kept" if kept else "no checkpoint was written yet"
        raise Interrupted(f"stopped by {name}; {where}; continue with: qwen-tune run --resume {run_dir}")
    if process.returncode != 0:
        raise failure(log_path, process.returncode, last_step, record.estimate_peak_gib)
    return result


def failure(log_path: Path, returncode: int, last_step: int, estimate_gib: float) -> TrainingFailed:
    """What went wrong, from the end of swift's log: out of memory (with what ran out), or its last error."""
    text = log_path.read_text(encoding="utf-8", errors="replace")
    lines = text[text.rfind(LAUNCH_HEADER) :].splitlines()
    oom = [line for line in lines if any(marker in line for marker in OOM_MARKERS)]
    if oom:
        return OutOfMemory(oom_message(oom[-1], last_step, estimate_gib) + f" (log: {log_path})")
    errors = [line.strip() for line in lines if "Error" in line or "error:" in line]
    last = errors[-1] if errors else (lines[-1].strip() if lines else "no output")
    return TrainingFailed(f"swift sft failed with exit code {returncode}: {last[:300]} (log: {log_path})")


def oom_message(line: str, last_step: int, estimate_gib: float) -> str:
    """torch's out-of-memory line, shortened to what ran out, when, and against what the plan expected."""
    when = f"after step {last_step}" if last_step else "before the first step finished"
    parts = [say.format(m.group(1)) for pattern, say in OOM_DETAILS if (m := pattern.search(line))]
    detail = f": {', '.join(parts)}" if parts else ""
    return f"the GPU ran out of memory {when}{detail}; the plan estimated {estimate_gib:.2f} GiB"


def read_swift_log(path: Path, result: TrainResult) -> None:
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


def logged_losses(logging_jsonl: Path) -> list[tuple[int, float]]:
    """(optimizer step, training loss) as swift logged them, in order; a resumed run logs some steps again."""
    points = []
    for line in logging_jsonl.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if "loss" in record and "global_step/max_steps" in record:
            points.append((int(str(record["global_step/max_steps"]).split("/")[0]), float(record["loss"])))
    return points


def loss_curve(logging_jsonl: Path, png: Path) -> bool:
    """A PNG of loss against step, for a glance at whether training converged."""
    points = logged_losses(logging_jsonl)
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


def execute(job: Job, *, verify: bool, force: bool, on_progress: Callable[[Progress], None],
            retry_with: list[Profile] | None = None, on_notice: Callable[[str], None] = print) -> dict:  # fmt: skip
    """A new run: check it can start, record it, then train and check it. Returns result.json's data.

    With retry_with (the profiles the ladder may switch to), an out-of-memory failure steps down
    plan.fallback's ladder and trains again in the same run directory, from the last checkpoint.
    """
    check_before_run(job, force=force)
    with _exclusive([g.index for g in job.plan.inventory.gpus], str(job.run_dir), force):
        record, plan, attempts = create_run_dir(job, verify=verify), job.plan, []
        on_notice(f"Training in {job.run_dir} (swift's full output goes to swift.log there)...")
        timeline = Timeline()
        while True:
            attempts.append(_attempt(plan, len(attempts) + 1))
            timeline.attempt = len(attempts)
            try:
                resume_from = latest_checkpoint(Path(record.output_dir)) if len(attempts) > 1 else None
                outcome = finish(record, on_progress, resume_from=resume_from, timeline=timeline)
                attempts[-1]["outcome"] = "done"
                return outcome
            except OutOfMemory as oom:
                attempts[-1].update(outcome="out-of-memory", error=str(oom))
                step = fallback(plan, retry_with) if retry_with is not None else None
                if step is None:
                    raise
                plan, change = step
                record = replace(record, **_launch_fields(plan))
                _write_json(Path(record.run_dir) / "run.json", asdict(record))
                on_notice(f"{oom}\nretrying with {change} (attempt {len(attempts) + 1}; --no-auto-retry stops here instead)")
            except UserError as failure:
                attempts[-1].update(outcome="failed", error=str(failure))
                raise
            finally:
                _write_json(Path(record.run_dir) / "attempts.json", attempts)


def check_before_run(job: Job, *, force: bool) -> None:
    """Whatever would refuse the run, refused before anything is written: swift, the output dir, the disk, busy GPUs."""
    if shutil.which("swift") is None:
        raise SwiftMissing(f"the `swift` command is not installed: {SWIFT_INSTALL}")
    output_dir = job.run_dir.parent
    check_output_dir(output_dir)
    check_disk_space(disk_bytes_needed(job.plan, jsonl_bytes(job.rows or [])), output_dir)
    busy = job.plan.busy_gpus()
    if busy and not force:
        raise GpuBusyError(f"{busy[0]}; stop that program, pick other GPUs with --gpus, or pass --force")


def _launch_fields(plan: Plan) -> dict:
    """What of a RunRecord the plan decides and a retry of the OOM ladder changes."""
    return {
        "argv": plan.argv,
        "env": plan.env,
        "profile": plan.profile.name,
        "estimate_peak_gib": round(plan.estimate.peak_bytes / GIB, 2),
    }


def _attempt(plan: Plan, number: int) -> dict:
    s, launch = plan.setup, _launch_fields(plan)
    return {"attempt": number, "profile": launch["profile"], "micro_batch_size": s.micro_batch_size, "grad_accum": plan.grad_accum,
            "gradient_checkpointing": s.gradient_checkpointing, "zero": s.zero or None, "quantization": plan.profile.quantization,
            "estimate_peak_gib": launch["estimate_peak_gib"], "argv": launch["argv"]}  # fmt: skip


def resume(run_dir: Path, on_progress: Callable[[Progress], None], *, force: bool = False,
           on_notice: Callable[[str], None] = print) -> dict:  # fmt: skip
    """Continue an interrupted or failed run in its own directory, from its last checkpoint."""
    record = RunRecord.load(run_dir)
    result_file = run_dir / "result.json"
    if result_file.is_file() and json.loads(result_file.read_text(encoding="utf-8")).get("status") == "done":
        raise UsageError(f"{run_dir} already finished; start a new run instead")
    with _exclusive(record.gpu_indices, record.run_dir, force):
        checkpoint = latest_checkpoint(Path(record.output_dir))
        where = f"from {checkpoint.name}" if checkpoint else "from the start (no checkpoint was kept)"
        on_notice(f"Resuming {run_dir} {where} (swift's output is appended to swift.log)...")
        return finish(record, on_progress, resume_from=checkpoint)


def _exclusive(indices: list[int], run_dir: str, force: bool):
    return nullcontext() if force or not indices else gpu_locks(indices, run_dir)


def finish(record: RunRecord, on_progress: Callable[[Progress], None], resume_from: Path | None = None,
           timeline: Timeline | None = None) -> dict:  # fmt: skip
    """Train, plot, check the identity, write the outcome: every exit leaves result.json consistent."""
    run_dir = Path(record.run_dir)
    timeline = timeline or Timeline()
    try:
        return _finish(record, on_progress, resume_from, timeline)
    finally:
        timeline.write(run_dir / "timeline.json")


def _finish(record: RunRecord, on_progress: Callable[[Progress], None], resume_from: Path | None, timeline: Timeline) -> dict:
    node_rank = int(record.env.get("NODE_RANK", "0"))
    preloaded = PreloadedInfer.start(record.env) if record.verify and node_rank == 0 else None
    try:
        return _train_and_check(record, on_progress, resume_from, timeline, preloaded, node_rank)
    finally:
        if preloaded:
            preloaded.close()


def _train_and_check(record: RunRecord, on_progress: Callable[[Progress], None], resume_from: Path | None, timeline: Timeline,
                     preloaded: PreloadedInfer | None, node_rank: int) -> dict:  # fmt: skip
    run_dir = Path(record.run_dir)
    outcome: dict = {"run_dir": str(run_dir), "profile": record.profile, "estimate_peak_gib": record.estimate_peak_gib}
    if resume_from:
        outcome["resumed_from"] = str(resume_from)
    try:
        result = train(record, on_progress, resume_from, timeline)
    except Interrupted as stop:
        write_result(run_dir, {**outcome, "status": "interrupted", "error": str(stop)}, f"INTERRUPTED: {stop}")
        raise
    except TrainingFailed as failure:
        write_result(run_dir, {**outcome, "status": "train-failed", "error": str(failure)}, f"FAIL training: {failure}")
        raise
    outcome.update(asdict(result), status="trained")
    logging_jsonl = Path(record.output_dir) / "logging.jsonl"
    outcome["loss_curve"] = "loss.png" if logging_jsonl.is_file() and loss_curve(logging_jsonl, run_dir / "loss.png") else None
    trained = f"trained: final loss {result.final_loss}, {result.wall_seconds:.0f} s"
    if result.checkpoint is None and node_rank == 0:
        write_result(run_dir, {**outcome, "status": "no-checkpoint"}, "FAIL: swift finished but wrote no checkpoint")
        raise TrainingFailed(f"swift finished but reported no checkpoint; see {run_dir / 'swift.log'}")
    if result.checkpoint is None:
        # Only the master node's rank 0 logs and saves the adapter; this node trained its share of each batch.
        outcome["identity_check"] = "skipped"
        line = f"node {node_rank} done: it trained its share; node 0 holds the checkpoint and checks the model"
    elif record.verify:
        try:
            check = check_identity(Bilingual(**record.identity_name), record.system, record.env, result.checkpoint, unused_path(run_dir / "verify"),
                                   preloaded)  # fmt: skip
            timeline.mark("identity checked")
        except UserError as failure:
            write_result(run_dir, {**outcome, "status": "verify-failed", "error": str(failure)}, f"FAIL: {failure}")
            raise
        outcome.update(identity_check="pass" if check.passed else "fail", answers=[asdict(a) for a in check.answers])
        line = f"{'PASS' if check.passed else 'FAIL'} identity check; {trained}"
    else:
        outcome["identity_check"] = "skipped"
        line = f"identity check skipped; {trained}"
    outcome["status"] = "done"
    timeline.mark("done")
    outcome["timeline"] = timeline.marks
    write_result(run_dir, outcome, line)
    return outcome


def find_checkpoint(run_dir: Path) -> str:
    """The adapter a finished run produced, from its result.json."""
    result_file = run_dir / "result.json"
    if not result_file.is_file():
        raise UsageError(f"{run_dir} is not a finished qwen-tune run (no result.json)")
    checkpoint = json.loads(result_file.read_text(encoding="utf-8")).get("checkpoint")
    if not checkpoint or not Path(checkpoint).is_dir():
        raise UsageError(f"{run_dir} has no adapter checkpoint to export; did its training finish?")
    return checkpoint


def export_merged(run_dir: Path, on_notice: Callable[[str], None] = print) -> Path:
    """Merge the run's LoRA into the base weights with `swift export --merge_lora`, into RUN_DIR/merged."""
    checkpoint = find_checkpoint(run_dir)
    target = run_dir / "merged"
    if target.exists():
        raise OutputError(f"{target} already exists; qwen-tune never overwrites it (move it away to export again)")
    on_notice(f"merging {run_dir}'s adapter into the base model...")
    argv = ["swift", "export", "--adapters", checkpoint, "--merge_lora", "true", "--output_dir", str(target)]
    with open(run_dir / "export.log", "w", encoding="utf-8") as log:
        done = subprocess.run(argv, env=infer_env(RunRecord.load(run_dir).env), stdout=log, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise TrainingFailed(f"swift export failed with exit code {done.returncode}; see {run_dir / 'export.log'}")
    return target
