"""`swift sft` as a child process: started from an argv list (never a shell), its output appended to
swift.log and read line by line for progress and phases, Ctrl-C and SIGTERM forwarded to all of it."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from qwen_tune import STARTED
from qwen_tune.errors import Interrupted
from qwen_tune.machine.gpus import GIB, MemorySampler
from qwen_tune.running.outcome import TrainResult
from qwen_tune.running.phases import StartupWatch, hub_cache, tree_bytes
from qwen_tune.running.plot import memory_figure, pyplot, save
from qwen_tune.running.rundir import RunRecord
from qwen_tune.swift.checkpoints import latest_checkpoint, logging_jsonl
from qwen_tune.swift.command import downloads_from_hf, launchable, missing_swift, resume_argv
from qwen_tune.swift.logs import Progress, failure, parse_progress, phase_ended, read_logging

# One header per launch in swift.log: a failure is read from the newest launch's lines only.
LAUNCH_HEADER = "===== qwen-tune:"


class Timeline:
    """Seconds since qwen-tune started at which each phase ended: where a run's wall time goes, its own checks
    before swift included."""

    def __init__(self, start: float = STARTED) -> None:
        self.start = start
        self.marks: dict[str, float] = {}
        self.attempt = 1  # the OOM ladder's retries get their own marks

    def mark(self, phase: str) -> None:
        name = phase if self.attempt == 1 else f"{phase} (attempt {self.attempt})"
        self.marks.setdefault(name, round(time.monotonic() - self.start, 1))

    def see(self, line: str) -> None:
        for phase in phase_ended(line):
            self.mark(phase)

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.marks, indent=2) + "\n", encoding="utf-8")


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


def run_sft(
    record: RunRecord, on_progress: Callable[[Progress | str], None], timeline: Timeline, resume_from: Path | None = None
) -> TrainResult:
    """Launch `swift sft`, append its output to swift.log, follow its progress; raise on a stop or a failure."""
    run_dir = Path(record.run_dir)
    env = {**os.environ, **record.env, "PYTHONUNBUFFERED": "1"}
    log_path = run_dir / "swift.log"
    start = time.monotonic()
    last_step = 0
    # The plots come right after swift exits: their imports (~1 s) are done meanwhile, while this process only waits.
    threading.Thread(target=pyplot, daemon=True).start()
    with open(log_path, "a", encoding="utf-8") as log, MemorySampler(record.gpu_indices) as sampler:
        log.write(f"{LAUNCH_HEADER} swift sft{f', resuming from {resume_from}' if resume_from else ''} =====\n")
        timeline.mark("swift started")
        try:
            process = subprocess.Popen(
                launchable(resume_argv(record.argv, resume_from), env), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                errors="replace", bufsize=1,
                start_new_session=True,  # its own process group: signals reach swift only through us, all of it
            )  # fmt: skip
        except FileNotFoundError:
            raise missing_swift() from None
        watch = startup_watch(record, env)
        with _ForwardSignals(process) as signals:
            for line in _lines_and_ticks(process):
                if line is None:  # a second without output
                    for text in watch.tick():
                        on_progress(text)
                    continue
                log.write(line)
                timeline.see(line)
                progress = parse_progress(line)
                for text in watch.saw(phase_ended(line), step=progress is not None):
                    on_progress(text)
                if progress:
                    last_step = progress.step
                    timeline.mark("first step")
                    if progress.step == progress.total:
                        timeline.mark("last step")
                    on_progress(progress)
            process.wait()
            timeline.mark("swift exited")
    memory_picture(record, sampler.samples)
    logged = read_logging(logging_jsonl(Path(record.output_dir)))
    result = TrainResult(
        returncode=process.returncode,
        wall_seconds=round(time.monotonic() - start, 1),
        train_seconds=logged.train_seconds,
        final_loss=logged.final_loss,
        steps=logged.steps,
        checkpoint=logged.checkpoint,
        swift_peak_reserved_gib=logged.peak_reserved_gib,
        nvml_peak_used_gib={str(i): round(b / GIB, 2) for i, b in sampler.peak_bytes.items()},
    )
    if signals.received:
        name = signal.Signals(signals.received[0]).name
        kept = latest_checkpoint(Path(record.output_dir))
        where = f"{kept.name} is kept" if kept else "no checkpoint was written yet"
        raise Interrupted(f"stopped by {name}; {where}; continue with: qwen-tune run --resume {run_dir}")
    if process.returncode != 0:
        raise failure(last_launch_lines(log_path), process.returncode, last_step, record.estimate_peak_gib, log_path)
    return result


def memory_picture(record: RunRecord, samples: dict[int, list[tuple[float, int]]]) -> bool:
    """memory.png: what each GPU used while swift ran (this launch), against the plan's estimate, so a run near
    its card's limit, or far below the estimate, shows; drawn before a failure is raised, an OOM above all.
    Nothing on the CPU or where NVML gave no sample."""
    if not record.gpu_indices or not any(samples.values()):
        return False
    title = f"{Path(record.run_dir).name} · {record.profile}"
    save(memory_figure(samples, record.estimate_peak_gib, title), Path(record.run_dir) / "memory.png")
    return True


def _lines_and_ticks(process: subprocess.Popen, every: float = 1.0):
    """swift's output line by line, and None after each second without any, until it closes its output."""
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    while True:
        try:
            line = lines.get(timeout=every)
        except queue.Empty:
            yield None
            continue
        if line is None:
            return
        yield line


def startup_watch(record: RunRecord, env: dict[str, str]) -> StartupWatch:
    """The watch for this launch: a hub model is downloaded into swift's hub cache, a local one only loaded."""
    use_hf = downloads_from_hf(record.argv, env)
    if use_hf is None:
        return StartupWatch(time.monotonic)
    cache = hub_cache(env, use_hf)
    return StartupWatch(time.monotonic, lambda: tree_bytes(cache), str(cache), _model_bytes(Path(record.run_dir)))


def _model_bytes(run_dir: Path) -> int | None:
    """About what the model's 16-bit weights weigh, from the plan (plan.json): the download's size."""
    from qwen_tune.planning.models import ModelShape

    try:
        shape = json.loads((run_dir / "plan.json").read_text(encoding="utf-8"))["model"]["shape"]
        return int(ModelShape(**shape).n_params * 2)
    except (OSError, KeyError, TypeError, ValueError):
        return None


def last_launch_lines(log_path: Path) -> list[str]:
    """swift.log's lines since the newest launch header."""
    text = log_path.read_text(encoding="utf-8", errors="replace")
    return text[text.rfind(LAUNCH_HEADER) :].splitlines()
