"""After training: talk to the tuned model (`qwen-tune chat`) or serve it (`qwen-tune serve`), through swift.

Both load the run's adapter the way the identity check does (base model, template, system prompt and
quantization from the checkpoint's args.json) on the devices the run trained on, as one process.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

from qwen_tune.errors import TrainingFailed, UsageError
from qwen_tune.running.export import find_checkpoint
from qwen_tune.running.rundir import RunRecord
from qwen_tune.swift.command import chat_argv, deploy_argv, launchable, require_swift, single_process_env

CHAT_MAX_NEW_TOKENS = 512


def chat(run_dir: Path, on_notice: Callable[[str], None] = print) -> int:
    """swift's own chat loop on this terminal: type a question at <<<, `exit` to leave. Its exit code.

    swift logs ~185 lines (its arguments, the model's layers) on stderr before its prompt: they go to RUN_DIR/chat.log,
    so the terminal shows only the prompt and the answers, which swift writes on stdout."""
    checkpoint, env = _adapter(run_dir)
    log_path = run_dir / "chat.log"
    on_notice(f"chatting with {checkpoint}: loading the model (swift's log: {log_path}); then type a question at <<<, "
              "`clear` to forget the conversation, `exit` to leave")  # fmt: skip
    with open(log_path, "a", encoding="utf-8") as log:
        argv = launchable(chat_argv(checkpoint, CHAT_MAX_NEW_TOKENS), env)
        code = subprocess.run(argv, env=env, stderr=log, check=False).returncode
    if code != 0:  # swift 4.6's streaming chat can abort at exit when a generation thread is still alive
        on_notice(f"swift's chat ended with exit code {code}; see {log_path}")
    return code


def serve(run_dir: Path, host: str, port: int, on_notice: Callable[[str], None] = print) -> int:
    """swift deploy in the foreground until Ctrl-C; the model answers as `name` at http://HOST:PORT/v1."""
    checkpoint, env = _adapter(run_dir)
    with socket.socket() as probe:  # swift deploy would quietly move to another port
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}; pick another --port or --host") from None
    name = run_dir.resolve().name
    on_notice(f"serving {checkpoint} as model {name!r} at http://{host}:{port}/v1 (OpenAI-compatible; Ctrl-C stops it)")
    # Its own process group: swift's `swift` wrapper starts the server as a child, and a stop must reach both.
    server = subprocess.Popen(launchable(deploy_argv(checkpoint, host, port, name), env), env=env, start_new_session=True)
    try:
        code = server.wait()
    except KeyboardInterrupt:  # Ctrl-C is how a server ends: let swift shut down, then it is a clean stop
        os.killpg(server.pid, signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        on_notice("server stopped")
        return 0
    if code != 0:
        raise TrainingFailed(f"swift deploy exited with code {code}")
    return 0


def _adapter(run_dir: Path) -> tuple[str, dict[str, str]]:
    require_swift()
    checkpoint = find_checkpoint(run_dir)
    return checkpoint, single_process_env(RunRecord.load(run_dir).env)
