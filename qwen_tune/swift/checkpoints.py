"""Where swift writes under its --output_dir, and which checkpoint a resume or an export can use."""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

# swift keeps the newest checkpoints only (--save_total_limit).
SAVE_TOTAL_LIMIT = 2


def logging_jsonl(output_dir: Path) -> Path:
    """swift's per-step log: loss, speed, memory, and at the end the last checkpoint."""
    return output_dir / "logging.jsonl"


def checkpoint_step(path: Path) -> int | None:
    """N of checkpoint-N; None for anything else."""
    number = path.name.removeprefix("checkpoint-")
    return int(number) if path.name.startswith("checkpoint-") and number.isdigit() else None


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete checkpoint: a save cut short (a kill, a full disk) or a corrupt one is passed over for
    the one before it."""
    found = sorted((p for p in output_dir.glob("checkpoint-*") if checkpoint_step(p) is not None), key=checkpoint_step)
    return next((p for p in reversed(found) if is_complete(p)), None)


def is_complete(checkpoint: Path) -> bool:
    """Whether a checkpoint can be loaded: the trainer writes trainer_state.json last, and every weight and state
    file it holds is whole (a safetensors file as long as its header says, torch's zip files with their directory)."""
    if checkpoint.is_symlink() or not checkpoint.is_dir():
        return False
    try:
        json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    weights = list(checkpoint.glob("*.safetensors"))
    if not weights:
        return False
    return all(_whole_safetensors(p) for p in weights) and all(
        zipfile.is_zipfile(p) for pattern in ("*.pt", "*.pth", "*.bin") for p in checkpoint.glob(pattern)
    )


def _whole_safetensors(path: Path) -> bool:
    """An 8-byte header length, the JSON header, and every tensor's bytes within the file."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            (header_length,) = struct.unpack("<Q", f.read(8))
            if header_length > size - 8:
                return False
            header = json.loads(f.read(header_length))
        end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
        return 8 + header_length + end <= size
    except (OSError, ValueError, KeyError, TypeError, IndexError, struct.error):
        return False
