"""The loss curve of a run, as a PNG: a glance at whether training converged."""

from __future__ import annotations

from pathlib import Path

from qwen_tune.swift.logs import logged_losses


def loss_curve(logging_jsonl: Path, png: Path) -> bool:
    """Plot loss against optimizer step; False when swift logged no loss."""
    points = logged_losses(logging_jsonl) if logging_jsonl.is_file() else []
    if not points:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot([p[0] for p in points], [p[1] for p in points], marker=".")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss")
    ax.set_title(png.parent.name, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)
    return True
