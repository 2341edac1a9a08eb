"""Where swift writes under its --output_dir, and which checkpoint a resume or an export can use."""

from __future__ import annotations

from pathlib import Path

# swift keeps the newest checkpoints only (--save_total_limit).
SAVE_TOTAL_LIMIT = 2


def logging_jsonl(output_dir: Path) -> Path:
    """swift's per-step log: loss, speed, memory, and at the end the last checkpoint."""
    return output_dir / "logging.jsonl"


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete checkpoint: the trainer writes trainer_state.json last, so a save cut short has none."""
    checkpoints = [
        p for p in output_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit() and (p / "trainer_state.json").is_file()
    ]
    return max(checkpoints, key=lambda p: int(p.name.split("-")[-1]), default=None)
