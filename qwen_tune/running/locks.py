"""One run per device, one writer per run directory: advisory file locks, held while swift trains and the check runs.

Two runs on one GPU can run it out of memory; two on the CPU each ran 7× slower, and neither said why; two trainers in
one run directory interleave their checkpoints and logs. The device locks live in a directory only this user can
write ($XDG_RUNTIME_DIR, else a per-uid 0700 directory under the temp dir): a lock file another user could plant
(a symlink to one of your files, say) is refused, never followed, truncated or written through.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import stat
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path

import psutil

from qwen_tune.errors import GpuBusyError, LockError

LOCK_DIR: Path | None = None  # None: lock_dir() chooses; tests point it elsewhere
CPU = "cpu"
WRITER_LOCK = "run.lock"  # in the run directory itself: whoever writes it holds this


def lock_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where device locks live: $XDG_RUNTIME_DIR/qwen-tune-locks (a tmpfs only this user can write, made by the
    login manager), else qwen-tune-locks-UID under the temp dir (TMPDIR). Both are made 0700 and checked."""
    if LOCK_DIR is not None:
        return LOCK_DIR
    environ = os.environ if environ is None else environ
    runtime = environ.get("XDG_RUNTIME_DIR", "")
    if runtime and os.path.isabs(runtime) and _own_private_dir(runtime):
        return Path(runtime) / "qwen-tune-locks"
    return Path(tempfile.gettempdir()) / f"qwen-tune-locks-{os.getuid()}"


def _own_private_dir(path: str) -> bool:
    """A directory of this user's that no one else can write (what a login manager makes XDG_RUNTIME_DIR)."""
    try:
        info = os.stat(path)
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and not info.st_mode & 0o022


def device_names(gpu_indices: list[int], node_rank: int = 0) -> list[str]:
    """The lock names of a run's devices: gpu-0, gpu-1, ...; a run without GPUs trains on the CPU. The nodes of one
    multi-node job on one host (the CPU rendezvous) share its CPU by design: node N takes cpu-nodeN."""
    return [f"gpu-{index}" for index in gpu_indices] or [CPU if node_rank == 0 else f"{CPU}-node{node_rank}"]


def _described(device: str) -> tuple[str, str]:
    """How a refusal names the device, and what else the user can do."""
    if device.startswith(CPU):
        return "the CPU", "wait for it (two runs on the CPU each run several times slower), or pass --force"
    return f"GPU {device.removeprefix('gpu-')}", "wait for it, pick other GPUs with --gpus, or pass --force"


def _unsafe(path: Path, problem: str) -> LockError:
    return LockError(
        f"lock directory {path} {problem}; qwen-tune keeps only its locks there: remove it, or point TMPDIR "
        "(or XDG_RUNTIME_DIR) at a directory of your own"
    )


def _private_dir(path: Path) -> int:
    """An fd of path, a directory this user owns that no one else can write: made 0700 if missing, else checked."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise _unsafe(path, f"cannot be made ({exc.strerror})") from None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        problem = "is a symbolic link" if path.is_symlink() else f"is not a directory ({exc.strerror})"
        raise _unsafe(path, problem) from None
    info = os.fstat(fd)
    if info.st_uid != os.getuid():
        os.close(fd)
        raise _unsafe(path, f"belongs to uid {info.st_uid}, not to you (uid {os.getuid()})")
    if info.st_mode & 0o022:
        os.close(fd)
        raise _unsafe(path, f"can be written by other users (mode {stat.S_IMODE(info.st_mode):o})")
    return fd


class FileLock:
    """An exclusive flock on a regular file of this user's, opened without following a symlink; its holder
    (pid, run directory, the swift it started) is written into it for the next one to name."""

    def __init__(self, fd: int, path: Path):
        self.fd, self.path = fd, path
        self.holder: dict = {}

    @classmethod
    def take(cls, directory_fd: int, directory: Path, name: str) -> FileLock | None:
        """The lock, or None when another process holds it; LockError when the file is not a plain file of ours."""
        path = directory / name
        try:
            fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=directory_fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise LockError(f"lock file {path} is a symbolic link; remove it (it only ever holds a lock)") from None
            raise LockError(f"cannot open lock file {path}: {exc.strerror}; {directory} must be yours and writable") from None
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid() or info.st_nlink != 1:
            os.close(fd)
            raise LockError(
                f"lock file {path} is not a plain file of yours (uid {info.st_uid}, {info.st_nlink} links); remove it "
                "(it only ever holds a lock)"
            )
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return cls(fd, path)

    def note(self, **holder: object) -> None:
        """Say who holds it (the next one reads this when refused)."""
        self.holder = holder
        data = json.dumps(holder).encode()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)

    def release(self) -> None:
        os.close(self.fd)  # closing releases the lock (a child that inherited the fd keeps it until it ends)


def writing(run_dir: Path) -> dict | None:
    """Who writes the run directory now (its run.lock is held: a run training or resuming), else None; a look that
    takes nothing and creates nothing."""
    try:
        fd = os.open(run_dir / WRITER_LOCK, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return holder_of(run_dir / WRITER_LOCK) or {"pid": "unknown"}
    finally:
        os.close(fd)  # closing drops a shared lock taken just now
    return None


def holder_of(path: Path) -> dict:
    """Who a busy lock says holds it; {} where it cannot be read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return {}
    try:
        holder = json.loads(os.read(fd, 65536) or b"{}")
        return holder if isinstance(holder, dict) else {}
    except ValueError:
        return {}
    finally:
        os.close(fd)


class Held:
    """The locks a run holds; swift inherits their fds (`fds`), so a swift left running by a killed qwen-tune
    keeps its devices and its run directory until it ends."""

    def __init__(self, locks: list[FileLock]):
        self.locks = locks

    @property
    def fds(self) -> tuple[int, ...]:
        return tuple(lock.fd for lock in self.locks)

    def started(self, swift_pid: int) -> None:
        for lock in self.locks:
            lock.note(**{**lock.holder, "swift_pid": swift_pid})


@contextmanager
def device_locks(devices: list[str], run_dir: str) -> Iterator[Held]:
    """Fail at once, naming the other run and its pid, when one of these devices is already being trained on."""
    directory = lock_dir()
    directory_fd = _private_dir(directory)
    held: list[FileLock] = []
    holder = {"pid": os.getpid(), "run_dir": run_dir}
    try:
        for device in devices:
            lock = FileLock.take(directory_fd, directory, f"{device}.lock")
            if lock is None:
                other = holder_of(directory / f"{device}.lock")
                name, instead = _described(device)
                raise GpuBusyError(
                    f"{name} is in use by another qwen-tune run (pid {other.get('pid', '?')}, {other.get('run_dir', '?')}); "
                    f"{instead}"
                )
            lock.note(**holder)
            held.append(lock)
        yield Held(held)
    finally:
        os.close(directory_fd)
        for lock in held:
            lock.release()


@contextmanager
def writer_lock(run_dir: Path) -> Iterator[Held]:
    """The run directory's one writer, whatever --force says: a second trainer there would interleave its
    checkpoints and logs with the first's."""
    try:
        directory_fd = os.open(run_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise LockError(f"cannot open run directory {run_dir}: {exc.strerror}") from None
    try:
        lock = FileLock.take(directory_fd, run_dir, WRITER_LOCK)
    finally:
        os.close(directory_fd)
    if lock is None:
        other = holder_of(run_dir / WRITER_LOCK)
        raise GpuBusyError(f"{run_dir} is being written by another qwen-tune run ({_who(other)}); a run directory has one "
                           "writer, --force or not: wait for it to end, or stop it, then --resume")  # fmt: skip
    holder = {"pid": os.getpid(), "run_dir": str(run_dir)}
    try:
        lock.note(**holder)
        yield Held([lock])
    finally:
        lock.release()


def _who(holder: dict) -> str:
    """pid N (and the swift it started, where that one still runs)."""
    pid, swift = holder.get("pid"), holder.get("swift_pid")
    alive = [p for p in (pid, swift) if isinstance(p, int) and psutil.pid_exists(p)]
    if isinstance(swift, int) and swift in alive and pid not in alive:
        return f"its swift, pid {swift}, still trains after qwen-tune (pid {pid}) ended"
    return f"pid {pid}" + (f", swift pid {swift}" if swift in alive else "")


def run_locks(indices: list[int], run_dir: str, node_rank: int = 0):
    """The locks of these GPUs (the CPU's where there are none)."""
    return device_locks(device_names(indices, node_rank), run_dir)


@contextmanager
def all_held(*contexts) -> Iterator[Held]:
    """Several lock contexts as one Held (their fds together)."""
    with ExitStack() as stack:
        helds = [stack.enter_context(c) for c in contexts]
        yield Held([lock for held in helds for lock in held.locks])
