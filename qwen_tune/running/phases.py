"""What to tell the user before swift's first step: each phase as it ends, the model download as it grows,
and, after a silence, what swift is waiting on. Pure: the clock and the cache's size are passed in.

process.run_sft feeds it swift's lines and ticks it every second; report.ProgressLine prints what it says.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from qwen_tune.machine.gpus import GIB, MIB

SILENCE_SECONDS = 30.0  # a silence this long says what swift is waiting on
DOWNLOAD_EVERY_SECONDS = 10.0  # how often a growing download is reported

# What swift does after each phase that its output marks (swift.logs.TIMELINE_MARKERS), in its order.
STARTING = "importing swift and its stack (torch, transformers; 10-30 s)"
NEXT = {
    "swift imported": "downloading the model if it is not cached, then loading it",
    "model loaded": "tokenizing the dataset",
    "dataset tokenized": "attaching LoRA",
    "LoRA attached": "the first training step",
}
LOCAL_MODEL_NEXT = {**NEXT, "swift imported": "loading the model"}


def hub_cache(environ: Mapping[str, str], use_hf: bool) -> Path:
    """Where swift's hub client puts downloaded models: ModelScope's cache, or the Hugging Face hub's."""
    home = Path(os.path.expanduser("~"))
    if use_hf:
        if environ.get("HF_HUB_CACHE"):
            return Path(environ["HF_HUB_CACHE"])
        return Path(environ.get("HF_HOME") or home / ".cache" / "huggingface") / "hub"
    return Path(environ.get("MODELSCOPE_CACHE") or home / ".cache" / "modelscope" / "hub")


def tree_bytes(root: Path) -> int:
    """Bytes under root, counting partial downloads; 0 while it does not exist."""
    total = 0
    for dirpath, _, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


@dataclass
class StartupWatch:
    """Fed swift's output (saw) and ticked (tick); each returns the lines to show, usually none."""

    clock: Callable[[], float]
    cache_bytes: Callable[[], int] | None = None  # the hub cache's size now; None for a local model
    cache_dir: str = ""
    model_bytes: int | None = None  # what the download will weigh, about (16-bit weights)
    silence_seconds: float = SILENCE_SECONDS
    training: bool = False
    phase: str = STARTING
    _start: float = field(init=False)
    _last_output: float = field(init=False)
    _last_said: float = field(init=False)
    _cache_at_start: int = field(init=False, default=0)
    _reported: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self._start = self._last_output = self._last_said = self.clock()
        if self.cache_bytes is not None:
            self._cache_at_start = self.cache_bytes()

    def saw(self, phases_ended: list[str], step: bool = False) -> list[str]:
        """A line of swift's output, the phases it ends, and whether it is a training step."""
        now = self.clock()
        self._last_output = now
        if step:
            self.training = True
        if self.training:
            return []
        said = []
        following = NEXT if self.cache_bytes is not None else LOCAL_MODEL_NEXT
        for phase in phases_ended:
            if phase in following:
                self.phase = following[phase]
                said.append(f"swift: {phase} ({now - self._start:.0f} s); now {self.phase}")
        if said:
            self._last_said = now
        return said

    def tick(self) -> list[str]:
        """About once a second while no step has come: a growing download, or a long silence."""
        if self.training:
            return []
        now = self.clock()
        said = []
        if self.cache_bytes is not None and now - self._last_said >= DOWNLOAD_EVERY_SECONDS:
            grown = self.cache_bytes() - self._cache_at_start
            if grown - self._reported >= MIB:
                rate = (grown - self._reported) / (now - self._last_said)
                total = f" of about {self.model_bytes / GIB:.1f} GiB" if self.model_bytes else ""
                said.append(
                    f"downloading the model into {self.cache_dir}: {grown / GIB:.2f} GiB{total} so far, {rate / MIB:.0f} MiB/s"
                )
                self._reported = grown
        if not said and now - max(self._last_output, self._last_said) >= self.silence_seconds:
            said.append(f"no output from swift for {now - self._last_output:.0f} s: it is {self.phase}")
        if said:
            self._last_said = now
        return said
