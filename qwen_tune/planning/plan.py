"""A Plan: the job, the devices and the chosen setup, as one value that renders swift's command.

planner.py chooses it; qwen_tune.swift.command renders it as swift's argv; report.py prints it. Nothing here reads
the box, and nothing here knows swift.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from qwen_tune.checking.identity import Expectation
from qwen_tune.errors import UsageError
from qwen_tune.machine.gpus import GIB, Inventory
from qwen_tune.planning.memory import MemoryEstimate, ZeroPreset
from qwen_tune.planning.models import ModelRef
from qwen_tune.planning.profiles import Attention, Profile
from qwen_tune.planning.recipes import Recipe

Dtype = Literal["float32", "bfloat16", "float16"]


@dataclass(frozen=True)
class MachineFacts:
    """What the box the command runs on says, probed once at the CLI's edge (jobs.probe_machine); tests pin it."""

    flash_attn_installed: bool = False
    bytecode_cache: str | None = None  # where swift's processes keep compiled imports (jobs.bytecode_cache)
    hub_offline: bool = False  # HF_HUB_OFFLINE: a hub id cannot be downloaded
    use_hf: bool = False  # USE_HF: swift downloads from Hugging Face, not ModelScope


@dataclass(frozen=True)
class Nodes:
    """Several machines through torchrun (swift's NNODES/NODE_RANK/MASTER_ADDR): each runs the same command."""

    count: int = 1
    rank: int = 0
    master_addr: str | None = None
    master_port: int | None = None

    def check(self) -> None:
        if self.count < 1 or not 0 <= self.rank < self.count:
            raise UsageError(f"--node-rank {self.rank} must be between 0 and --nnodes {self.count} - 1")
        if self.count > 1 and not self.master_addr:
            raise UsageError("--nnodes > 1 needs --master-addr: the first node's address, the same on every node")


@dataclass(frozen=True)
class DataSummary:
    """How long the samples are after the chat template; n_rows None means 'no dataset'."""

    n_rows: int | None
    max_tokens: int
    how: Literal["tokenized", "estimated", "max_length"]
    cut_rows: int = 0  # rows whose answers --cut-long-rows shortened to max_length


SAVE_EVERY_SECONDS = 60  # of estimated training between checkpoints, at most one
# What a run spends outside its training steps on a GPU box, the model's download aside: qwen-tune's checks, swift's
# imports (10-12 s), swift's exit and the identity check (~4 s): 34-38 s for the 7B job's run on a warm H100 of which
# ~11 s trained (docs/hardware-validation.md); and the model load, 3.5 s for the 7B's 14.2 GiB from the page cache.
STARTUP_SECONDS = 20
LOAD_SECONDS_PER_GIB = 0.25


@dataclass(frozen=True)
class Setup:
    """One way to run the job: the knobs a profile leaves free, filled in."""

    micro_batch_size: int
    gradient_checkpointing: bool
    zero: ZeroPreset = ""  # "": no DeepSpeed

    def describe(self, profile: Profile) -> str:
        parts = [f"micro-batch {self.micro_batch_size}", f"checkpointing {'on' if self.gradient_checkpointing else 'off'}"]
        parts += [self.zero] if self.zero else []
        parts += ["4-bit"] if profile.quantization == "nf4" else []
        return ", ".join(parts)


@dataclass(frozen=True)
class Plan:
    recipe: Recipe
    model: ModelRef
    inventory: Inventory
    profile: Profile
    setup: Setup
    dtype: Dtype
    attention: Attention
    data: DataSummary
    seq_len: int
    estimate: MemoryEstimate
    budget_bytes: int
    dataset_path: str
    output_dir: str
    reasons: tuple[str, ...]
    warnings: tuple[str, ...] = ()
    nodes: Nodes = Nodes()
    bytecode_cache: str | None = None
    hub: Literal["modelscope", "hf"] | None = None  # --hub: where swift downloads a hub id from; None: swift's default
    step_seconds: float | None = None  # speed.py's estimate of one optimizer step on these GPUs; None on the CPU

    @property
    def n_devices(self) -> int:
        """Data-parallel ranks: GPUs on this node times nodes."""
        return self.inventory.per_node * self.nodes.count

    @property
    def grad_accum(self) -> int:
        return math.ceil(self.recipe.effective_batch_size / (self.setup.micro_batch_size * self.n_devices))

    @property
    def effective_batch(self) -> int:
        return self.setup.micro_batch_size * self.grad_accum * self.n_devices

    @property
    def steps_per_epoch(self) -> int | None:
        """As the HF Trainer counts: batches per epoch over grad-accum, rounded up."""
        if self.data.n_rows is None:
            return None
        batches = math.ceil(self.data.n_rows / (self.setup.micro_batch_size * self.n_devices))
        return math.ceil(batches / self.grad_accum)

    @property
    def total_steps(self) -> int | None:
        per_epoch = self.steps_per_epoch
        return None if per_epoch is None else math.ceil(per_epoch * self.recipe.epochs)

    @property
    def save_steps(self) -> int | None:
        """A checkpoint every ~10% of training, so an interrupted run resumes close to where it stopped, but at most
        one a SAVE_EVERY_SECONDS of estimated training: each writes the adapter and AdamW's state (ten were 2.6 s of
        the 7B job's 17 s on the H100). A job estimated under that saves once, at its end."""
        if self.total_steps is None:
            return None
        steps = max(1, math.ceil(self.total_steps / 10))
        if self.step_seconds:
            steps = max(steps, math.ceil(SAVE_EVERY_SECONDS / self.step_seconds))
        return min(steps, self.total_steps)

    @property
    def download_bytes(self) -> int | None:
        """What swift downloads for a hub id, about: the model's 16-bit weights (None for a local directory)."""
        return None if self.model.local_dir else self.model.shape.n_params * 2

    @property
    def estimated_seconds(self) -> float | None:
        """The whole run, the download aside: the time model's steps and the start-up; None where there is no estimate
        (the CPU, or no data to count steps from)."""
        if self.step_seconds is None or self.total_steps is None:
            return None
        load = self.model.shape.n_params * 2 / GIB * LOAD_SECONDS_PER_GIB
        return round(self.total_steps * self.step_seconds + STARTUP_SECONDS + load, 1)

    @property
    def fits(self) -> bool:
        return self.estimate.peak_bytes <= self.budget_bytes

    def busy_gpus(self) -> list[str]:
        """GPUs whose free memory (read now) is below the estimate: another program holds it."""
        busy = []
        for g in self.inventory.gpus:
            if g.free_bytes is not None and g.free_bytes < self.estimate.peak_bytes:
                holders = ", ".join(
                    f"pid {p.pid} {p.name}" + (f" {gib(p.used_bytes)}" if p.used_bytes else "") for p in g.processes
                )
                busy.append(f"GPU {g.index} has {gib(g.free_bytes)} free, the plan needs {gib(self.estimate.peak_bytes)}"
                            + (f" (in use by {holders})" if holders else ""))  # fmt: skip
        return busy

    def to_dict(self) -> dict:
        data = asdict(self)
        for key in ("local_dir", "files_dir"):
            folder = getattr(self.model, key)
            data["model"][key] = str(folder) if folder else None
        data["estimate"].update(reserved_bytes=self.estimate.reserved_bytes, peak_bytes=self.estimate.peak_bytes)
        data.update(
            grad_accum=self.grad_accum,
            effective_batch=self.effective_batch,
            steps_per_epoch=self.steps_per_epoch,
            total_steps=self.total_steps,
            fits=self.fits,
            download_bytes=self.download_bytes,
            estimated_seconds=self.estimated_seconds,
        )
        return data


def gib(n: float) -> str:
    return f"{n / GIB:.2f} GiB"


@dataclass(frozen=True)
class Job:
    """A planned job with what running it needs beyond the Plan: the filled data, its new run directory, and what the
    identity check will expect."""

    plan: Plan
    rows: list[dict] | None  # the dataset with the identity filled in
    run_dir: Path
    expectations: tuple[Expectation, ...] = ()  # what the identity check expects of each probe
    general_prompts: tuple[str, ...] = ()  # for the base model to answer before training (self-distillation)
