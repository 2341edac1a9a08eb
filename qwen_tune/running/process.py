"""`swift sft` as a child process: started from an argv list (never a shell), its output appended to
swift.log and read line by line for progress and phases, Ctrl-C, SIGTERM and SIGHUP forwarded to all of it."""

from __future__ import annotations

import json
import queue
import shlex
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from qwen_tune import STARTED
from qwen_tune.errors import Interrupted
from qwen_tune.machine.gpus import GIB, MemorySampler
from qwen_tune.running.children import Child
from qwen_tune.running.files import open_log, write_json
from qwen_tune.running.locks import Held
from qwen_tune.running.outcome import TrainResult
from qwen_tune.running.phases import StartupWatch, hub_cache, tree_bytes
from qwen_tune.running.plot import memory_figure, pyplot, save
from qwen_tune.running.rundir import RunRecord, within
from qwen_tune.swift.checkpoints import latest_checkpoint, logging_jsonl
from qwen_tune.swift.command import downloads_from_hf, launchable, missing_swift, resume_argv, swift_environment
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
        write_json(path, self.marks)


def run_sft(
    record: RunRecord, launch: tuple[list[str], dict[str, str]], on_progress: Callable[[Progress | str], None],
    timeline: Timeline, resume_from: Path | None = None, held: Held | None = None,
) -> TrainResult:  # fmt: skip
    """Launch `swift sft` (launch: its argv and the variables it adds), append its output to swift.log, follow its
    progress; raise on a stop or a failure. swift inherits the held locks, so a swift that outlives a killed
    qwen-tune still holds its devices and its run directory."""
    run_dir = record.run_dir
    argv, added = launch
    env = swift_environment(added)
    log_path = run_dir / "swift.log"
    start = time.monotonic()
    last_step = 0
    tail: deque[str] = deque(maxlen=400)  # this launch's last lines, read even where swift.log could not be written
    # The plots come right after swift exits: their imports (~1 s) are done meanwhile, while this process only waits.
    threading.Thread(target=pyplot, daemon=True).start()
    with open_log(log_path, append=True) as log, MemorySampler(record.gpu_indices) as sampler, Child() as child:
        log.write(f"{LAUNCH_HEADER} swift sft{f', resuming from {within(run_dir, resume_from)}' if resume_from else ''} =====\n")
        timeline.mark("swift started")
        try:
            process = child.start(
                launchable(resume_argv(argv, resume_from), env, trust_remote_code=record.trust_remote_code), env=env,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace", bufsize=1,
                pass_fds=held.fds if held else (),
            )  # fmt: skip
        except FileNotFoundError:
            raise missing_swift() from None
        if held:
            held.started(process.pid)
        watch = startup_watch(record, argv, env)
        for line in _lines_and_ticks(process):
            if line is None:  # a second without output
                child.check_overdue()
                for text in watch.tick():
                    on_progress(text)
                continue
            tail.append(line)
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
        child.wait()
        timeline.mark("swift exited")
    memory_picture(record, sampler.samples)
    logged = read_logging(logging_jsonl(record.output_dir))
    result = TrainResult(
        returncode=process.returncode,
        wall_seconds=round(time.monotonic() - start, 1),
        train_seconds=logged.train_seconds,
        final_loss=logged.final_loss,
        steps=logged.steps,
        # Where this run directory is now, whatever path swift wrote (a moved run directory's log has the old one).
        checkpoint=f"swift/{Path(logged.checkpoint).name}" if logged.checkpoint else None,
        swift_peak_reserved_gib=logged.peak_reserved_gib,
        nvml_peak_used_gib={str(i): round(b / GIB, 2) for i, b in sampler.peak_bytes.items()},
    )
    resume = f"qwen-tune run --resume {shlex.quote(str(run_dir))}"
    if child.stopped_by:
        kept = latest_checkpoint(record.output_dir)
        where = f"{kept.name} is kept" if kept else "no checkpoint was written yet"
        raise Interrupted(f"stopped by {child.stopped_by}; {where}; continue with: {resume}")
    if process.returncode != 0:
        raise failure(list(tail), process.returncode, last_step, record.estimate_peak_gib, log_path, resume,
                      resumed_from=resume_from.name if resume_from else None)  # fmt: skip
    return result


def memory_picture(record: RunRecord, samples: dict[int, list[tuple[float, int]]]) -> bool:
    """memory.png: what each GPU used while swift ran (this launch), against the plan's estimate, so a run near
    its card's limit, or far below the estimate, shows; drawn before a failure is raised, an OOM above all.
    Nothing on the CPU or where NVML gave no sample."""
    if not record.gpu_indices or not any(samples.values()):
        return False
    title = f"{record.run_dir.name} · {record.profile}"
    save(memory_figure(samples, record.estimate_peak_gib, title), record.run_dir / "memory.png")
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


def startup_watch(record: RunRecord, argv: list[str], env: dict[str, str]) -> StartupWatch:
    """The watch for this launch: a hub model is downloaded into swift's hub cache, a local one only loaded."""
    use_hf = downloads_from_hf(argv, env)
    if use_hf is None:
        return StartupWatch(time.monotonic)
    cache = hub_cache(env, use_hf)
    return StartupWatch(time.monotonic, lambda: tree_bytes(cache), str(cache), _model_bytes(record.run_dir))


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
