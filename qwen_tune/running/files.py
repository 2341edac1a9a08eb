"""qwen-tune's own files: written atomically (the whole new file or the old one, never an empty or torn one on a
full disk or a kill), never through a symlink someone planted, and read back as one line where they are not JSON."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

from qwen_tune.errors import UsageError


def write_json(path: Path, data: object) -> None:
    write_text(path, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def write_text(path: Path, text: str, mode: int = 0o644) -> None:
    """Atomically: the whole new file or the old one (a full disk leaves no empty attempts.json), never through a
    symlink planted in the run directory (the new file replaces the link)."""
    write_bytes(path, text.encode("utf-8"), mode)


def write_bytes(path: Path, data: bytes, mode: int = 0o644) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temporary, mode)  # whatever the umask
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def read_json(path: Path):
    """A JSON file qwen-tune wrote; one line saying so where it is cut short or edited."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise UsageError(
            f"{path} is not valid JSON ({exc}): it was cut short or edited; start a new run, or restore the file"
        ) from None
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None


def open_log(path: Path, *, append: bool = False):
    """A log qwen-tune writes as it goes (swift.log, export.log), opened without following a symlink: a run directory
    from elsewhere with `swift.log -> ~/.bashrc` in it must not have that file appended to."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_APPEND if append else 0)
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UsageError(
                f"{path} is a symbolic link; qwen-tune writes its logs only to files of the run: remove it"
            ) from None
        raise
    if os.fstat(fd).st_nlink != 1:  # a hard link: writing it would write the file it shares with elsewhere
        os.close(fd)
        raise UsageError(f"{path} is a hard link to another file; qwen-tune writes its logs only to files of the run: remove it")
    if not append:
        os.ftruncate(fd, 0)  # only now that it is known to be the run's own
    return os.fdopen(fd, "a" if append else "w", encoding="utf-8", errors="replace")
