"""`qwen-tune export`: merge a run's LoRA adapter into the base weights, in RUN_DIR/merged; and what export, chat
and serve share: the checkpoint they load, the environment they start swift with, whether its model's code may run."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

from qwen_tune.errors import ModelError, OutputError, TrainingFailed, UsageError
from qwen_tune.planning.jobs import untrusted_code
from qwen_tune.planning.models import remote_code
from qwen_tune.running.children import run_to_end
from qwen_tune.running.files import open_log, read_json
from qwen_tune.running.rundir import recorded_env, require_run_dir
from qwen_tune.swift.checkpoints import is_complete, latest_checkpoint
from qwen_tune.swift.command import export_argv, launchable, require_swift, single_process_env


def find_checkpoint(run_dir: Path, on_notice: Callable[[str], None] = print) -> Path:
    """The checkpoint a run produced: the one result.json names (relative to the run directory, so a moved or copied
    run directory uses its own), else the newest complete one in RUN_DIR/swift, saying why."""
    require_run_dir(run_dir)
    recorded, why = _recorded_checkpoint(run_dir)
    if recorded is not None and is_complete(recorded):
        return recorded
    if recorded is not None:
        why = f"{recorded.name}, which result.json names, is incomplete or corrupt"
    latest = latest_checkpoint(run_dir / "swift")
    if latest is None:
        raise UsageError(
            f"{run_dir} has no complete checkpoint in {run_dir / 'swift'} ({why}); did its training start? "
            f"`qwen-tune run --resume {run_dir}` continues it"
        )
    on_notice(f"{why}: using {latest.name}, the newest complete checkpoint")
    return latest


def _recorded_checkpoint(run_dir: Path) -> tuple[Path | None, str]:
    """result.json's checkpoint where it names one, else None and why not."""
    result_file = run_dir / "result.json"
    if not result_file.is_file():
        return None, "it has no result.json"
    try:
        result = read_json(result_file)
    except UsageError:
        return None, "its result.json is not valid JSON"
    checkpoint = result.get("checkpoint") if isinstance(result, dict) else None
    if not isinstance(checkpoint, str) or not checkpoint:
        status = result.get("status") if isinstance(result, dict) else None
        return None, f"result.json names no checkpoint (status {status})"
    # swift/checkpoint-N of this run directory: an absolute path (written before paths were relative) or one that
    # climbs out of the run directory names the checkpoint of the same name here.
    return run_dir / "swift" / Path(checkpoint).name, ""


def swift_env_for(run_dir: Path, on_notice: Callable[[str], None] = print) -> dict[str, str]:
    """The environment swift infer/export/deploy start with: the devices the run trained on, the allowed variables of
    run.json's env only (rundir.RECORDED_ENV: nothing there loads code), as one process."""
    try:
        recorded = recorded_env(run_dir)
    except UsageError as unreadable:
        on_notice(f"{unreadable}; using this box's default devices")
        recorded = {}
    return single_process_env(recorded)


def require_trusted_base(checkpoint: Path, trust_remote_code: bool) -> None:
    """The base model the checkpoint names (its args.json) runs code of its own only with --trust-remote-code."""
    try:
        args = read_json(checkpoint / "args.json")
    except UsageError:
        return
    model = args.get("model") if isinstance(args, dict) else None
    if isinstance(model, str) and Path(model).is_dir():
        code = remote_code(Path(model))
        if code and not trust_remote_code:
            raise ModelError(untrusted_code(model, code))


def export_merged(run_dir: Path, on_notice: Callable[[str], None] = print, *, trust_remote_code: bool = False) -> Path:
    """`swift export --merge_lora` into RUN_DIR/merged, which must not exist yet."""
    checkpoint = find_checkpoint(run_dir, on_notice)
    target = run_dir / "merged"
    if target.exists() or target.is_symlink():
        raise OutputError(f"{target} already exists; qwen-tune never overwrites it (move it away to export again)")
    require_trusted_base(checkpoint, trust_remote_code)
    require_swift()
    on_notice(f"merging {run_dir}'s adapter ({checkpoint.name}) into the base model...")
    env = swift_env_for(run_dir, on_notice)
    try:
        with open_log(run_dir / "export.log") as log:
            argv = launchable(export_argv(str(checkpoint), target), env, trust_remote_code=trust_remote_code)
            code = run_to_end(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    except OSError as exc:
        raise OutputError(
            f"cannot write {exc.filename or run_dir}: {exc.strerror}; {run_dir} must be writable to export"
        ) from None
    if code != 0:
        raise TrainingFailed(f"swift export failed with exit code {code}; see {run_dir / 'export.log'}")
    return target
