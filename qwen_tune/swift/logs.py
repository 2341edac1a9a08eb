"""Reading swift's output: the progress lines of its trainer, the phases of its start-up, logging.jsonl,
and what went wrong when it failed (out of memory, or its last error)."""

from __future__ import annotations

import ast
import json
import math
import re
import signal
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

from qwen_tune.errors import DiskSpaceError, OutOfMemory, OutputError, TrainingFailed, UserError

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


@dataclass
class LoggedRun:
    """What swift's logging.jsonl says of a finished training: its last loss, time, memory and checkpoint."""

    final_loss: float | None = None
    train_seconds: float | None = None
    peak_reserved_gib: float | None = None
    checkpoint: str | None = None
    steps: int | None = None


def phase_ended(line: str) -> list[str]:
    """The start-up or shut-down phases this line of swift's output ends."""
    return [phase for text, phase in TIMELINE_MARKERS if text in line]


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


def logged_records(path: Path) -> list[dict]:
    """logging.jsonl's records; a line torn by a kill or a full disk (the last one, or one a resumed swift appended
    after) is skipped, not a crash of every later resume."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return []
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def read_logging(path: Path) -> LoggedRun:
    """Final loss, train time, checkpoint and swift's peak memory from its logging.jsonl (empty if there is none)."""
    run = LoggedRun()
    for record in logged_records(path):
        if "loss" in record:
            run.final_loss = float(record["loss"])
        if "train_runtime" in record:
            run.train_seconds = float(record["train_runtime"])
        if "memory(GiB)" in record:
            run.peak_reserved_gib = max(run.peak_reserved_gib or 0.0, float(record["memory(GiB)"]))
        if record.get("last_model_checkpoint"):
            run.checkpoint = record["last_model_checkpoint"]
            run.steps = record.get("global_step")
    return run


def logged_losses(logging_jsonl: Path) -> list[tuple[int, float]]:
    """(optimizer step, training loss) as swift logged them, in order; a resumed run logs some steps again."""
    return [(step, loss) for step, loss, _ in _logged_steps(logging_jsonl)]


def epoch_ends(logging_jsonl: Path) -> list[float]:
    """The optimizer steps (interpolated) at which an epoch ended before the last logged step, from the `epoch`
    swift logs with each loss: where the loss curve's jumps at a new pass over the data come from."""
    logged = [(step, epoch) for step, _, epoch in _logged_steps(logging_jsonl) if epoch is not None]
    ends: list[float] = []
    for (s0, e0), (s1, e1) in pairwise(logged):
        if e1 <= e0:
            continue  # a resumed run logs some steps again
        for k in range(math.floor(e0) + 1, math.floor(e1) + 1):
            at = s0 + (k - e0) / (e1 - e0) * (s1 - s0)
            if at < logged[-1][0] and (not ends or at > ends[-1]):
                ends.append(round(at, 2))
    return ends


def _logged_steps(logging_jsonl: Path) -> list[tuple[int, float, float | None]]:
    """(step, loss, epoch or None) of each logged training step; swift's last summary line has no loss."""
    points = []
    for record in logged_records(logging_jsonl):
        if "loss" in record and "global_step/max_steps" in record:
            try:
                epoch = record.get("epoch")
                step = int(str(record["global_step/max_steps"]).split("/")[0])
                points.append((step, float(record["loss"]), float(epoch) if epoch is not None else None))
            except (TypeError, ValueError):
                continue
    return points


DISK_FULL_MARKERS = ("No space left on device", "Disk quota exceeded", "[Errno 28]", "File too large")
READ_ONLY_MARKERS = ("Read-only file system", "[Errno 30]", "[Errno 13] Permission denied")
KILLED_MARKERS = ("Signal 9 (SIGKILL)", "exitcode  : -9")  # torchrun's report of a worker the kernel killed
# torch refusing a checkpoint file it cannot unpickle as plain tensors (a foreign or corrupt scheduler.pt, say).
UNREADABLE_CHECKPOINT_MARKERS = ("Weights only load failed", "UnpicklingError", "PytorchStreamReader failed")


def failure(
    lines: list[str], returncode: int, last_step: int, estimate_gib: float, log_path: Path, resume: str = "",
    resumed_from: str | None = None,
) -> UserError:  # fmt: skip
    """What went wrong, from swift's output of one launch: out of memory (with what ran out), killed (host memory),
    the disk full, a checkpoint it resumed from that torch cannot read, or its last error. resume: the command that
    continues the run; resumed_from: the checkpoint this launch started from."""
    oom = [line for line in lines if any(marker in line for marker in OOM_MARKERS)]
    if oom:
        return OutOfMemory(oom_message(oom[-1], last_step, estimate_gib) + f" (log: {log_path})")
    if returncode == -signal.SIGKILL or any(marker in line for line in lines[-200:] for marker in KILLED_MARKERS):
        return TrainingFailed(
            f"swift was killed (SIGKILL) after step {last_step}, likely out of host memory (see `dmesg`); "
            f"--resume continues from the last complete checkpoint: {resume} (log: {log_path})"
        )
    full = [line.strip() for line in lines if any(marker in line for marker in DISK_FULL_MARKERS)]
    if full:
        return DiskSpaceError(
            f"the disk filled up while swift trained ({full[-1][:200]}); free some space, then continue from the last "
            f"complete checkpoint: {resume} (log: {log_path})"
        )
    locked = [line.strip() for line in lines if any(marker in line for marker in READ_ONLY_MARKERS)]
    if locked:
        return OutputError(
            f"swift could not write to the run directory ({locked[-1][:200]}); make it writable again, then continue from "
            f"the last complete checkpoint: {resume} (log: {log_path})"
        )
    unreadable = [line.strip() for line in lines if any(marker in line for marker in UNREADABLE_CHECKPOINT_MARKERS)]
    if unreadable and resumed_from:
        return TrainingFailed(
            f"swift could not read {resumed_from}, which it resumed from ({unreadable[-1][:160]}); move it out of the "
            f"run's swift/ folder, then continue from the checkpoint before it: {resume} (log: {log_path})"
        )
    errors = [line.strip() for line in lines if "Error" in line or "error:" in line]
    last = errors[-1] if errors else (lines[-1].strip() if lines else "no output")
    return TrainingFailed(f"swift sft failed with exit code {returncode}: {last[:300]} (log: {log_path})")


def oom_message(line: str, last_step: int, estimate_gib: float) -> str:
    """torch's out-of-memory line, shortened to what ran out, when, and against what the plan expected."""
    when = f"after step {last_step}" if last_step else "before the first step finished"
    parts = [say.format(m.group(1)) for pattern, say in OOM_DETAILS if (m := pattern.search(line))]
    detail = f": {', '.join(parts)}" if parts else ""
    return f"the GPU ran out of memory {when}{detail}; the plan estimated {estimate_gib:.2f} GiB"
