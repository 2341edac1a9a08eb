"""swift as a child that every way qwen-tune ends reaches: its own process group, the signals that end qwen-tune
(Ctrl-C, SIGTERM, SIGHUP) forwarded to all of it, and the whole group ended when qwen-tune leaves early.

swift's launcher, torchrun and its workers, the server's child: all live in the group, and a signal to qwen-tune alone
would leave them running (a `swift deploy` answered 25 s after its qwen-tune was gone).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable

import psutil

from qwen_tune.errors import Interrupted

STOPS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# swift/launch.py ends swift when this process is gone, even by SIGKILL, which no handler here sees.
PARENT_PID_ENV = "QWEN_TUNE_PARENT_PID"
# After a stop is forwarded: how long swift may take to stop (a checkpoint being saved), then SIGKILL.
GRACE_SECONDS = 120.0


class Child:
    """One child process group, started inside `with Child() as child: child.start(argv, ...)`.

    The handlers are set before the child starts: exec resets a handled signal to its default in the child, so a
    SIGINT the caller ignored (`qwen-tune run &` in a script, `trap '' INT`) is not left ignored in swift, which can
    then still be stopped. A second stop, or GRACE_SECONDS after the first, kills the group.
    """

    def __init__(self, grace: float = GRACE_SECONDS):
        self.process: subprocess.Popen | None = None
        self.received: list[int] = []
        self.grace = grace
        self._first_stop: float | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> Child:
        for signum in STOPS:
            if signum != signal.SIGINT and signal.getsignal(signum) == signal.SIG_IGN:
                continue  # `nohup qwen-tune run`: a hang-up neither stops it nor, inherited, swift
            self._previous[signum] = signal.signal(signum, self._on_signal)
        return self

    def start(self, argv: list[str], env: dict[str, str] | None = None, **popen) -> subprocess.Popen:
        env = {**(os.environ if env is None else env), PARENT_PID_ENV: str(os.getpid())}
        return self.adopt(subprocess.Popen(argv, start_new_session=True, env=env, **popen))

    def adopt(self, process: subprocess.Popen) -> subprocess.Popen:
        """A child already started in a session of its own (the preloaded worker): stops reach it from now on."""
        self.process = process
        if self.received:  # a stop that came while it started
            self._send(self.received[-1])
        return process

    def _on_signal(self, signum, frame) -> None:
        self.received.append(signum)
        if self._first_stop is None:
            self._first_stop = time.monotonic()
            self._send(signum)
        else:
            self._send(signal.SIGKILL)  # asked twice: now

    def _send(self, signum: int) -> None:
        if self.process is not None:
            try:
                os.killpg(self.process.pid, signum)
            except (ProcessLookupError, PermissionError):
                pass

    def check_overdue(self) -> None:
        """Called while waiting: a group still running GRACE_SECONDS after a stop is killed."""
        if self._first_stop is not None and time.monotonic() - self._first_stop > self.grace:
            self._send(signal.SIGKILL)

    def wait(self, every_second: Callable[[], None] | None = None) -> int:
        """The child's exit code, killing it once a stop is overdue; every_second runs while it waits."""
        assert self.process is not None
        while True:
            try:
                return self.process.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                self.check_overdue()
            if every_second is not None:
                every_second()

    @property
    def stopped_by(self) -> str | None:
        """The name of the first signal that stopped qwen-tune, if one did."""
        return signal.Signals(self.received[0]).name if self.received else None

    def __exit__(self, *exc) -> None:
        try:
            if self.process is not None:
                end_group(self.process, self.grace if exc[0] is None else 10.0)
        finally:
            for signum, handler in self._previous.items():
                signal.signal(signum, handler)


def run_to_end(argv: list[str], **popen) -> int:
    """subprocess.run for swift's one-shot commands (infer, export), as a Child: its exit code, or Interrupted when a
    stop reached it."""
    with Child(grace=10.0) as child:
        child.start(argv, **popen)
        code = child.wait()
    if child.stopped_by:
        raise Interrupted(f"stopped by {child.stopped_by}")
    return code


def end_group(process: subprocess.Popen, grace: float) -> None:
    """Nothing of the group left: the leader asked to stop (SIGTERM) if it still runs, then anything left killed."""
    pgid = process.pid
    if process.poll() is None:
        _signal_group(pgid, signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    members = group_members(pgid)
    if members or process.poll() is None:
        _signal_group(pgid, signal.SIGKILL)
        psutil.wait_procs(members, timeout=10)
        process.wait()


def group_members(pgid: int) -> list[psutil.Process]:
    """The processes still in a process group (torchrun's workers, a launcher's child)."""
    members = []
    for candidate in psutil.process_iter():
        try:
            if os.getpgid(candidate.pid) == pgid:
                members.append(candidate)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return members


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass
