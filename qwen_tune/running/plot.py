"""A run's pictures as PNGs, drawn from plain numbers (no swift knowledge here): the loss curve, a glance at
whether training converged, and the memory each GPU used against the plan's estimate."""

from __future__ import annotations

import io
from pathlib import Path

from qwen_tune.machine.gpus import GIB
from qwen_tune.running.files import write_bytes

# The loss spans more than this factor: a log-scale y axis, or the late steps flatten into the floor.
LOG_SCALE_SPAN = 10.0


def pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    return plt


def loss_figure(steps: list[float], losses: list[float], epoch_ends: list[float], title: str):
    """Loss against optimizer step, a dotted line where each epoch ended; a log y axis over decades."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot(steps, losses, marker=".")
    positive = [loss for loss in losses if loss > 0]
    if positive and len(positive) == len(losses) and max(positive) / min(positive) > LOG_SCALE_SPAN:
        ax.set_yscale("log")
    for n, step in enumerate(epoch_ends, start=1):
        ax.axvline(step, color="grey", linestyle=":", linewidth=1, label="epoch end" if n == 1 else None)
    if epoch_ends:
        ax.legend(fontsize=8)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def memory_figure(samples: dict[int, list[tuple[float, int]]], estimate_gib: float, title: str):
    """Used memory per GPU over time, as NVML sampled it, against the plan's estimated peak."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    for index, points in sorted(samples.items()):
        ax.plot([t for t, _ in points], [used / GIB for _, used in points], label=f"GPU {index}")
    ax.axhline(estimate_gib, color="red", linestyle="--", linewidth=1, label=f"plan's estimate {estimate_gib:.2f} GiB")
    ax.set_xlabel("seconds since swift started")
    ax.set_ylabel("used memory (GiB, NVML)")
    ax.set_ylim(bottom=0)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def save(fig, png: Path) -> None:
    """Write the figure (atomically, as every file of a run) and free it (pyplot keeps every open figure otherwise)."""
    try:
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        write_bytes(png, buffer.getvalue())
    finally:
        pyplot().close(fig)


def loss_title(recipe: str, profile: str, final_loss: float | None) -> str:
    final = f"final loss {final_loss:.4g}" if final_loss is not None else "no final loss"
    return f"{recipe} · {profile} · {final}"
