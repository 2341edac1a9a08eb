"""After training: talk to the tuned model (`qwen-tune chat`) or serve it (`qwen-tune serve`), through swift.

Both load the run's adapter the way the identity check does (base model, template, system prompt and
quantization from the checkpoint's args.json) on the devices the run trained on, as one process, and both
end swift's whole process group with qwen-tune, whichever signal ends it (running/children.py).
"""

from __future__ import annotations

import ipaddress
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from qwen_tune.errors import TrainingFailed, UsageError
from qwen_tune.running.children import Child
from qwen_tune.running.export import find_checkpoint, require_trusted_base, swift_env_for
from qwen_tune.running.files import open_log
from qwen_tune.swift.command import (
    LAUNCH_API_KEY_ENV,
    LAUNCH_HOSTS_ENV,
    chat_argv,
    deploy_argv,
    launchable,
    require_swift,
    swift_cli_dir,
)

CHAT_MAX_NEW_TOKENS = 512
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def chat(run_dir: Path, on_notice: Callable[[str], None] = print, *, trust_remote_code: bool = False) -> int:
    """swift's own chat loop on this terminal: type a question at <<<, `exit` to leave. Its exit code.

    swift logs ~185 lines (its arguments, the model's layers) on stderr before its prompt: they go to RUN_DIR/chat.log,
    so the terminal shows only the prompt and the answers, which swift writes on stdout."""
    checkpoint, env = _adapter(run_dir, on_notice, trust_remote_code)
    log_path = run_dir / "chat.log"
    on_notice(f"chatting with {checkpoint}: loading the model (swift's log: {log_path}); then type a question at <<<, "
              "`clear` to forget the conversation, `exit` to leave")  # fmt: skip
    with open_log(log_path, append=True) as log, Child(grace=10.0) as child:
        argv = launchable(chat_argv(str(checkpoint), CHAT_MAX_NEW_TOKENS), env, trust_remote_code=trust_remote_code)
        child.start(argv, env=env, stderr=log)
        code = child.wait()
    if child.stopped_by:
        on_notice(f"chat stopped ({child.stopped_by})")
        return 130
    if code != 0:  # swift 4.6's streaming chat can abort at exit when a generation thread is still alive
        on_notice(f"swift's chat ended with exit code {code}; see {log_path}")
    return code


def is_loopback(host: str) -> bool:
    """Only this machine can connect: localhost, 127.0.0.0/8, ::1. '', 0.0.0.0 and :: are every interface."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


MIN_API_KEY = 12


def check_exposure(host: str, api_key: str | None) -> str | None:
    """Beyond loopback, a server must have an API key: refused without one; with one, the warning to print."""
    if api_key is not None and (len(api_key) < MIN_API_KEY or not (api_key.isascii() and api_key.isprintable())
                                or any(c.isspace() for c in api_key)):  # fmt: skip
        raise UsageError(
            f"--api-key must be at least {MIN_API_KEY} ASCII characters with no spaces (a blank key can never be sent, "
            "nor can HTTP clients send others; a short one can be guessed); for example: --api-key $(openssl rand -hex 16)"
        )
    if is_loopback(host):
        return None
    where = f"--host {host!r}" if host else "--host '' (every interface)"
    if not api_key:
        raise UsageError(
            f"{where} makes the model reachable from other machines, and anyone who reaches the port could use it: "
            "pass --api-key KEY (or set QWEN_TUNE_API_KEY) so that only clients sending it are answered, "
            "or leave --host out to serve on 127.0.0.1"
        )
    return (
        f"WARNING: serving beyond this machine ({where}): anyone who can reach the port and has the key can use the "
        "model; clients send `Authorization: Bearer KEY`"
    )


def serve(
    run_dir: Path, host: str, port: int, on_notice: Callable[[str], None] = print, *, api_key: str | None = None,
    trust_remote_code: bool = False,
) -> int:  # fmt: skip
    """swift deploy in the foreground until Ctrl-C (or SIGTERM, SIGHUP); the model answers as `name` at http://HOST:PORT/v1."""
    warning = check_exposure(host, api_key)
    checkpoint, env = _adapter(run_dir, on_notice, trust_remote_code)
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:  # swift deploy would quietly move
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}; pick another --port or --host") from None
    name = run_dir.resolve().name
    argv = deploy_argv(str(checkpoint), host, port, name)
    if api_key:
        env[LAUNCH_API_KEY_ENV] = api_key  # swift/launch.py hands it to swift after swift printed its arguments
        if swift_cli_dir() is None:  # swift of another Python: only its own flag can carry the key (and `ps` shows it)
            argv += ["--api_key", api_key]
    if is_loopback(host):  # a web page that rebinds its name to 127.0.0.1 sends its own Host header: not answered
        env[LAUNCH_HOSTS_ENV] = ",".join(dict.fromkeys([*LOOPBACK_NAMES, host]))
    # swift's own switches, for a swift that swift/launch.py does not start: no media from the server's disk or network.
    no_media = tempfile.mkdtemp(prefix="qwen-tune-no-media-")
    env.update(SWIFT_MEDIA_ALLOWED_DIRS=no_media, SWIFT_URL_ALLOWED_HOSTS="no-media.invalid")
    if warning:
        on_notice(warning)
    url, log_path = f"http://{_url_host(host)}:{port}/v1", run_dir / "serve.log"
    on_notice(f"loading {checkpoint} to serve it as model {name!r} at {url} (swift's output and each request: "
              f"{log_path}; Ctrl-C stops it)")  # fmt: skip
    try:
        with open_log(log_path, append=True) as log, Child(grace=30.0) as child:
            child.start(launchable(argv, env, trust_remote_code=trust_remote_code), env=env, stdout=log,
                        stderr=subprocess.STDOUT)  # fmt: skip
            code = child.wait(
                every_second=_once_ready(child, host, port, lambda: on_notice(f"ready: {url} (OpenAI-compatible, text only)"))
            )
    finally:
        shutil.rmtree(no_media, ignore_errors=True)
    if child.stopped_by:  # a stop is how a server ends: swift shut down, then it is a clean stop
        on_notice(f"server stopped ({child.stopped_by})")
        return 0
    if code != 0:
        raise TrainingFailed(f"swift deploy exited with code {code}: {_last_line(log_path)}; see {log_path}")
    return 0


def _once_ready(child: Child, host: str, port: int, on_ready: Callable[[], None]) -> Callable[[], None]:
    """A check to run while the server runs: on_ready, once, when its port first accepts a connection."""
    said = False

    def check() -> None:
        nonlocal said
        if not said and child.stopped_by is None and _accepts(host or "127.0.0.1", port):
            said = True
            on_ready()

    return check


def _accepts(host: str, port: int) -> bool:
    """Something listens there (swift deploy binds only once the model is loaded)."""
    host = "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _last_line(log_path: Path) -> str:
    """The last line of swift's output that says something (its error, most often)."""
    try:
        lines = [line.strip() for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no output"
    return lines[-1][:300] if lines else "no output"


def _url_host(host: str) -> str:
    if not host:
        return "0.0.0.0"
    return f"[{host}]" if ":" in host else host


def _adapter(run_dir: Path, on_notice: Callable[[str], None], trust_remote_code: bool) -> tuple[Path, dict[str, str]]:
    require_swift()
    checkpoint = find_checkpoint(run_dir, on_notice)
    require_trusted_base(checkpoint, trust_remote_code)
    return checkpoint, swift_env_for(run_dir, on_notice)
