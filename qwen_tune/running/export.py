"""`qwen-tune export`: merge a finished run's LoRA adapter into the base weights, in RUN_DIR/merged."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

from qwen_tune.errors import OutputError, TrainingFailed, UsageError
from qwen_tune.running.rundir import RunRecord, require_run_dir
from qwen_tune.swift.command import export_argv, launchable, require_swift, single_process_env


def find_checkpoint(run_dir: Path) -> str:
    """The adapter a finished run produced, from its result.json."""
    require_run_dir(run_dir)
    result_file = run_dir / "result.json"
    if not result_file.is_file():
        raise UsageError(f"{run_dir} is not a finished qwen-tune run (no result.json)")
    checkpoint = json.loads(result_file.read_text(encoding="utf-8")).get("checkpoint")
    if not checkpoint or not Path(checkpoint).is_dir():
        raise UsageError(f"{run_dir} has no adapter checkpoint; did its training finish?")
    return checkpoint


def export_merged(run_dir: Path, on_notice: Callable[[str], None] = print) -> Path:
    """`swift export --merge_lora` into RUN_DIR/merged, which must not exist yet."""
    checkpoint = find_checkpoint(run_dir)
    target = run_dir / "merged"
    if target.exists():
        raise OutputError(f"{target} already exists; qwen-tune never overwrites it (move it away to export again)")
    require_swift()
    on_notice(f"merging {run_dir}'s adapter into the base model...")
    with open(run_dir / "export.log", "w", encoding="utf-8") as log:
        env = single_process_env(RunRecord.load(run_dir).env)
        done = subprocess.run(
            launchable(export_argv(checkpoint, target), env), env=env, stdout=log, stderr=subprocess.STDOUT, check=False
        )
    if done.returncode != 0:
        raise TrainingFailed(f"swift export failed with exit code {done.returncode}; see {run_dir / 'export.log'}")
    return target
