"""A Plan: the job, the devices and the chosen setup, as one value that renders swift's command.

planner.py chooses it; qwen_tune.swift.command renders it as swift's argv; report.py prints it. Nothing here reads
the box, and nothing here knows swift.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from qwen_tune.checking.identity import Expectation
from qwen_tune.errors import UsageError
from qwen_tune.machine.gpus import GIB, Inventory
from qwen_tune.planning.memory import LinearAttentionKernels, MemoryEstimate, ZeroPreset
from qwen_tune.planning.models import ModelRef
from qwen_tune.planning.profiles import Profile
from qwen_tune.planning.recipes import Recipe

Dtype = Literal["float32", "bfloat16", "float16"]
# What runs the attention: flash-attn's package, torch's SDPA on padded batches, or torch's own FlashAttention
# varlen kernel on packed rows (qwen-tune's plugin into swift).
AttentionPath = Literal["flash_attn", "sdpa", "torch_varlen"]


@dataclass(frozen=True)
class MachineFacts:
    """What the box the command runs on says, probed once at the CLI's edge (jobs.probe_machine); tests pin it."""

    flash_attn_installed: bool = False
    # torch has its own FlashAttention varlen kernel (torch.nn.attention.varlen, torch >= 2.10): rows can be packed
    # into micro-batches without padding through qwen-tune's swift plugin (swift/plugins/varlen_attention.py).
    varlen_attention: bool = False
    liger_installed: bool = False  # liger-kernel: fused linear cross-entropy (no logits tensor), norms, SwiGLU, RoPE
    fla_installed: bool = False  # flash-linear-attention's `fla`: the Triton kernels of the hybrid models' Gated DeltaNet
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
    general_rows: int = 0  # of n_rows, those from --general-data
    # Of n_rows, the shipped general prompts the base model answers before training: an empty answer drops its row,
    # so n_rows is the most that trains.
    general_answers: int = 0
    total_tokens: int | None = None  # every row's tokens added up: what one epoch trains, padding aside
    lengths: tuple[int, ...] = field(default=(), repr=False)  # each row's tokens (not written to plan.json)

    @property
    def mean_tokens(self) -> float | None:
        return self.total_tokens / self.n_rows if self.n_rows and self.total_tokens else None


@dataclass(frozen=True)
class Packing:
    """Rows packed into micro-batches of at most `tokens` tokens, without padding (swift's --packing with qwen-tune's
    varlen attention): what fits a card is a token budget, whatever the rows' lengths."""

    tokens: int  # swift's --packing_length: one micro-batch is one pack of at most this many tokens
    grad_accum: int  # packs a device accumulates per optimizer step
    packs: int  # packs an epoch makes of the data, as swift packs them (swift/packing.py)


SAVE_EVERY_SECONDS = 60  # of estimated training between checkpoints, at most one
# What a run spends outside its training steps on a GPU box, the model's download aside: qwen-tune's checks, swift's
# imports (10-12 s), swift's exit and the identity check (~4 s): 34-38 s for the 7B job's run on a warm H100 of which
# ~11 s trained (docs/hardware-validation.md); and the model load, 3.5 s for the 7B's 14.2 GiB from the page cache.
STARTUP_SECONDS = 20
LOAD_SECONDS_PER_GIB = 0.25


def expected_padding(lengths: tuple[int, ...], micro_batch_size: int, samples: int = 400) -> float:
    """The share of a padded run's token slots that are padding: micro-batches of rows drawn at random, each padded to
    its longest, as swift's shuffled batches are (a fixed seed, so the same data always says the same)."""
    if micro_batch_size <= 1 or len(lengths) <= 1:
        return 0.0
    rng = random.Random(0)
    draws = [rng.sample(lengths, min(micro_batch_size, len(lengths))) for _ in range(samples)]
    real, slots = sum(sum(d) for d in draws), sum(max(d) * len(d) for d in draws)
    return round(1 - real / slots, 4)


@dataclass(frozen=True)
class SpeedBasis:
    """What a run's tokens/s and MFU are counted from (result.json): MFU = 6 × params × tokens/s over the devices'
    dense 16-bit peak, the usual convention (LoRA's frozen weights do no weight-gradient work, so it understates
    the work done, alike for every tool measured so)."""

    train_tokens: int | None  # the rows' tokens × epochs: what trains, padding aside
    params: int
    peak_tflops: float | None  # every device's peak added up; None on the CPU
    padding_fraction: float  # of the token slots computed, the padding: 0 where packed
    attention: str


@dataclass(frozen=True)
class Setup:
    """One way to run the job: the knobs a profile leaves free, filled in."""

    micro_batch_size: int  # rows a micro-batch, padded to its longest; 1 (one pack) where packed
    gradient_checkpointing: bool
    zero: ZeroPreset = ""  # "": no DeepSpeed
    packing: Packing | None = None  # None: rows padded to the longest of their micro-batch
    liger: bool = False  # Liger's kernels (swift --use_liger_kernel): the loss without the logits tensor

    def describe(self, profile: Profile) -> str:
        if self.packing:
            parts = [f"packs of ≤{self.packing.tokens} tokens × {self.packing.grad_accum}"]
        else:
            parts = [f"micro-batch {self.micro_batch_size}"]
        parts.append(f"checkpointing {'on' if self.gradient_checkpointing else 'off'}")
        parts += [self.zero] if self.zero else []
        parts += ["Liger"] if self.liger else []
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
    attention: AttentionPath
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
    linear_attention: LinearAttentionKernels | None = None  # which path runs a hybrid model's Gated DeltaNet; None: none has

    @property
    def n_devices(self) -> int:
        """Data-parallel ranks: GPUs on this node times nodes."""
        return self.inventory.per_node * self.nodes.count

    @property
    def grad_accum(self) -> int:
        if self.setup.packing:
            return self.setup.packing.grad_accum
        return math.ceil(self.recipe.effective_batch_size / (self.setup.micro_batch_size * self.n_devices))

    @property
    def effective_batch(self) -> int:
        """Rows an optimizer step trains: exact where padded; where packed, the data's average."""
        if self.setup.packing and self.data.n_rows and self.steps_per_epoch:
            return round(self.data.n_rows / self.steps_per_epoch)
        return self.setup.micro_batch_size * self.grad_accum * self.n_devices

    @property
    def steps_per_epoch(self) -> int | None:
        """As the HF Trainer counts: batches (rows, or packs) per device over grad-accum, rounded up."""
        if self.data.n_rows is None:
            return None
        if self.setup.packing:
            return math.ceil(math.ceil(self.setup.packing.packs / self.n_devices) / self.grad_accum)
        batches = math.ceil(self.data.n_rows / (self.setup.micro_batch_size * self.n_devices))
        return math.ceil(batches / self.grad_accum)

    @property
    def padding_free(self) -> bool:
        return self.setup.packing is not None

    def speed_basis(self, peak_tflops: float | None) -> SpeedBasis:
        tokens = round(self.data.total_tokens * self.recipe.epochs) if self.data.total_tokens else None
        padding = 0.0 if self.setup.packing else expected_padding(self.data.lengths, self.setup.micro_batch_size)
        return SpeedBasis(tokens, self.model.shape.n_params, peak_tflops, padding, self.attention)

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
        data["data"].pop("lengths")
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
