"""A small time model: of the setups that fit, which trains the job fastest.

Training a LoRA on these shapes is bound by the host launching kernels (~10,000 a micro-step for the 7B
shape), not by the GPU's arithmetic: each micro-step costs about the same host time per decoder layer,
whatever its batch, and the matrix work comes on top. So fewer, bigger micro-steps win, and gradient
checkpointing, which runs every layer's forward twice, costs ~50% more host time and a third more
compute: it is worth it only where it lets a much bigger micro-batch fit.

Calibrated on the 7B runs of 2026-11-23 on the H100 (docs/bench-results.jsonl; checked by
tests/test_bench_records.py): 1×16 plain 296 s, 1×16 checkpointed 438 s, 8×2 plain 53 s, 16×1 plain
16.5-37 s, QLoRA 4×4 96 s. The host cost is that box's CPU; a desktop's may be faster, which moves every
setup alike and so leaves the ranking as it is.
"""

from __future__ import annotations

from dataclasses import dataclass

from qwen_tune.machine.cards import peak_tflops as card_peak_tflops
from qwen_tune.machine.gpus import Gpu, Inventory
from qwen_tune.planning.models import ModelShape

HOST_SECONDS_PER_LAYER = 0.009  # one micro-step's forward + backward launches, per decoder layer
CHECKPOINTING_HOST_FACTOR = 1.5  # the forward is launched again in backward
CHECKPOINTING_COMPUTE_FACTOR = 4 / 3  # forward (1) + backward (2) + forward again (1)
NF4_HOST_FACTOR = 1.2  # dequantizing each linear's weight before its matmul
# Liger's Triton kernels (norms, SwiGLU, RoPE, the chunked loss) launch from Python: not measured apart yet.
LIGER_HOST_FACTOR = 1.1
# ZeRO-3 gathers every layer's weights before its forward and again in backward: measured on 2×H200, 7B at
# 8 per GPU, 47 s against 26 s for zero2 (shared/measurements/2026-11-22-2xh200).
ZERO3_FACTOR = 1.8
# What the arithmetic reaches of a card's dense bf16 peak (the host's launches are counted apart): the 2,000-row job
# of 100-600-token rows trained at 23% MFU on the H100 with the host's share in it (docs/hardware-validation.md).
ACHIEVED_FRACTION = 0.3
# Dense 16-bit tensor peak by compute capability (TFLOP/s), for cards qwen-tune does not know by name (cards.py
# holds each known card's own: an H20 is 148, not the H100's 989; an L40S twice an RTX 4090).
PEAK_TFLOPS_BY_CC = {(9, 0): 989, (8, 9): 165, (8, 6): 71, (8, 0): 312, (7, 5): 65, (7, 0): 125}
CPU_TFLOPS = 1.0


# Packed micro-steps are one long sequence of thousands of tokens: the GPU's arithmetic hides the host's launches
# (the 7B's 5,773-token packs trained at 0.63 s a step on the H100, 41.7% MFU counted 6N, the host's 0.25 s inside
# it), so a packed step costs the larger of the two, at this share of the peak (docs/hardware-validation.md, 2026-12-05).
ACHIEVED_FRACTION_PACKED = 0.45


@dataclass(frozen=True)
class StepTime:
    """Estimated seconds of one optimizer step: host launches and GPU arithmetic over its micro-steps."""

    host_seconds: float
    compute_seconds: float
    overlapped: bool = False  # packed: the host's launches run while the GPU computes

    @property
    def seconds(self) -> float:
        if self.overlapped:
            return max(self.host_seconds, self.compute_seconds)
        return self.host_seconds + self.compute_seconds


def peak_tflops(gpu: Gpu) -> float:
    """A card's dense 16-bit tensor peak (TFLOP/s), its own where cards.py knows it (an H20 has 148 of an H100's 989),
    else its class's by compute capability: what the time model and MFU are measured against."""
    return card_peak_tflops(gpu.name) or PEAK_TFLOPS_BY_CC.get(gpu.compute_capability, 65)


def device_tflops(inventory: Inventory) -> float:
    """What one device achieves in training; the slowest card sets the pace of data parallel."""
    if inventory.is_cpu:
        return CPU_TFLOPS
    return min(peak_tflops(g) for g in inventory.gpus) * ACHIEVED_FRACTION


def step_time(
    shape: ModelShape, *, micro_batch_size: int, grad_accum: int, seq_len: int, gradient_checkpointing: bool, nf4: bool,
    tflops: float, zero3: bool = False, liger: bool = False, packed: bool = False,
) -> StepTime:  # fmt: skip
    """One optimizer step on one device: grad_accum micro-steps of micro_batch_size samples of seq_len tokens (a packed
    micro-step: one sample of its pack's tokens, no padding)."""
    host = shape.num_layers * HOST_SECONDS_PER_LAYER * (LIGER_HOST_FACTOR if liger else 1.0)
    flops = 6 * shape.active_params * micro_batch_size * seq_len
    if gradient_checkpointing:
        host *= CHECKPOINTING_HOST_FACTOR
        flops *= CHECKPOINTING_COMPUTE_FACTOR
    if nf4:
        host *= NF4_HOST_FACTOR
    sharding = ZERO3_FACTOR if zero3 else 1.0
    if packed:  # tflops is the padded runs' share of the peak: a packed step reaches more of it
        flops *= ACHIEVED_FRACTION / ACHIEVED_FRACTION_PACKED
    compute = grad_accum * flops / (tflops * 1e12) * sharding
    return StepTime(host_seconds=grad_accum * host * sharding, compute_seconds=compute, overlapped=packed)
