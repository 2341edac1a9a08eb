"""A pure estimate of peak training memory per device, with its breakdown.

The constants are calibrated on measured runs (docs/hardware-validation.md and
docs/bench-results.jsonl, which tests/test_bench_records.py checks in CI; the seed's shared
measurements of 2026-11-22): the Qwen2.5-7B shape from micro-batch 1 with checkpointing to 16
without, QLoRA, Qwen3-14B bf16 and NF4, ZeRO-2/3 over two GPUs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from qwen_tune.gpus import GIB, MIB
from qwen_tune.models import ModelShape

BYTES_PER_PARAM = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0}
# NF4 packs two weights a byte; double quantization adds an 8-bit absmax per 64 weights.
NF4_BYTES_PER_PARAM = 0.5 + 1 / 64
# LoRA trains in fp32: the weight, its gradient and AdamW's two moments.
LORA_STATE_BYTES = 16
# Elements saved per token per decoder layer for backward (LoRA all-linear, sdpa/flash
# attention, so no seq² term): ~16 of hidden size (norms, dropout copies, q/o, residuals),
# 4.5 of the MLP width (gate, up, act, product) and 4 of the k/v width.
ACT_PER_HIDDEN, ACT_PER_FFN, ACT_PER_KV = 16, 4.5, 4
# Qwen3 normalises q and k per head (q_norm/k_norm, in fp32) before RoPE: ~8 more elements of the
# q + k width. Fitted on Qwen3-14B on the H100 (2026-11-23): micro-batch 16 bf16 and 8 NF4 both
# reserved 2.5-5.4 GiB over the Qwen2 formula, 7.7 and 8.5 elements per q/k width.
ACT_PER_QK_NORM = 8
# Logits are upcast to fp32 for the loss; the fp32 copy and its gradient sit beside the
# 16-bit logits and their gradient.
LOGITS_FP32_BYTES = 8
# Allocated by the CUDA driver outside torch's pool (NVML peak minus torch reserved).
CUDA_CONTEXT_BYTES = int(0.76 * GIB)
# Python, torch and swift in the training process, when the "device" is host memory.
CPU_RUNTIME_BYTES = int(1.5 * GIB)
# Share of the model that swift's zero3 preset holds gathered at the peak (its
# stage3_max_live_parameters and stage3_max_reuse_distance are 1e9). Calibrated on the
# 7B shape over 2 GPUs (17.21 GiB/GPU); it also explains Qwen3-14B's OOM under 22.5 GiB/GPU.
ZERO3_GATHERED_FRACTION = 0.35
# A checkpoint on disk, per LoRA parameter: the fp32 adapter and AdamW's two fp32 moments
# (optimizer.pt); measured 4.01 + 8.07 bytes on the demo's rank-64 run. Under ZeRO, DeepSpeed's
# own files also hold the 16-bit weights and an fp32 master copy (its layout, not measured yet).
CHECKPOINT_BYTES_PER_LORA_PARAM = 12
ZERO_CHECKPOINT_EXTRA_BYTES = 6
# trainer_state.json (it grows with the logged steps), args, RNG and scheduler state, the README.
CHECKPOINT_SMALL_FILES_BYTES = MIB


@dataclass(frozen=True)
class TrainSetup:
    """Everything about a run that changes its memory."""

    shape: ModelShape
    lora_rank: int
    micro_batch_size: int
    seq_len: int
    gradient_checkpointing: bool
    weights: Literal["fp32", "bf16", "fp16", "nf4"]
    n_gpus: int = 1
    zero_stage: int = 0  # 0: plain DDP or one device; 2 or 3: DeepSpeed ZeRO
    on_cpu: bool = False


WEIGHTS_BY_DTYPE = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
# swift's DeepSpeed presets the planner may pick ("" is none), and the ZeRO stage of each.
# zero3_offload is not offered: under 22.5 GiB/GPU it ran out of memory in the first forward
# exactly like zero3 for Qwen3-14B (shared/measurements/2026-11-22-2xh200), so it buys nothing.
ZeroPreset = Literal["", "zero2", "zero3"]
ZERO_STAGE: dict[ZeroPreset, int] = {"": 0, "zero2": 2, "zero3": 3}


def train_setup(*, dtype: str, quantization: str, zero: str, **fields) -> TrainSetup:
    """A TrainSetup in a plan's words: swift's dtype name, the profile's quantization, the DeepSpeed preset."""
    weights = "nf4" if quantization == "nf4" else WEIGHTS_BY_DTYPE[dtype]
    return TrainSetup(weights=weights, zero_stage=ZERO_STAGE[zero], **fields)


def recorded_setup(setup: dict) -> TrainSetup:
    """The setup a benchmark record ran (docs/bench-results.jsonl), to estimate it again."""
    return train_setup(
        dtype=setup["dtype"],
        quantization=setup["quantization"],
        zero=setup["zero"],
        shape=ModelShape(**setup["shape"]),
        lora_rank=setup["lora_rank"],
        micro_batch_size=setup["micro_batch_size"],
        seq_len=setup["seq_len"],
        gradient_checkpointing=setup["gradient_checkpointing"],
        n_gpus=setup["n_gpus"],
    )


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak memory of one device: what torch reserves, plus what the runtime takes beside it."""

    items: tuple[tuple[str, int], ...]
    runtime_bytes: int

    @property
    def reserved_bytes(self) -> int:
        return sum(b for _, b in self.items)

    @property
    def peak_bytes(self) -> int:
        return self.reserved_bytes + self.runtime_bytes


def estimate(setup: TrainSetup) -> MemoryEstimate:
    s = setup.shape
    compute_bytes = 4 if setup.weights == "fp32" else 2
    shard = setup.n_gpus if setup.zero_stage else 1

    if setup.weights == "nf4":
        weights = s.linear_params * NF4_BYTES_PER_PARAM + s.other_params * 2
        largest = max(i * o for i, o in s.layer_linears())
        weights_label = "weights (NF4 4-bit, embeddings 16-bit)"
    else:
        weights = s.n_params * BYTES_PER_PARAM[setup.weights]
        largest = 0
        weights_label = f"weights ({setup.weights})"
    if setup.zero_stage == 3:
        weights /= shard
        weights_label += f", ZeRO-3 shard 1/{shard}"
    items = [(weights_label, weights)]
    if setup.zero_stage == 3:
        items.append(("ZeRO-3 gathered parameters", s.n_params * ZERO3_GATHERED_FRACTION * compute_bytes))
    if largest:
        items.append(("4-bit dequantization buffer", largest * compute_bytes))

    lora = s.lora_params(setup.lora_rank)
    if setup.zero_stage:
        lora_bytes = lora * 4 + lora * (LORA_STATE_BYTES - 4) / shard
        lora_label = f"LoRA params + grads + AdamW, ZeRO-{setup.zero_stage} 1/{shard}"
    else:
        lora_bytes = lora * LORA_STATE_BYTES
        lora_label = "LoRA params + grads + AdamW (fp32)"
    items.append((f"{lora_label} ({lora / 1e6:.1f}M params)", lora_bytes))
    if setup.n_gpus > 1 and not setup.zero_stage:
        # Plain data parallel (torchrun, no DeepSpeed): the reducer's buckets hold a copy of the fp32 gradients.
        items.append(("DDP gradient buckets (fp32)", lora * 4))

    tokens = setup.micro_batch_size * setup.seq_len
    per_layer = compute_bytes * (ACT_PER_HIDDEN * s.hidden_size + ACT_PER_FFN * s.intermediate_size + ACT_PER_KV * s.kv_dim)
    if s.has_qk_norm:
        per_layer += compute_bytes * ACT_PER_QK_NORM * (s.num_heads * s.head_dim + s.kv_dim)
    if setup.gradient_checkpointing:
        saved = tokens * s.num_layers * s.hidden_size * compute_bytes
        items.append((f"activations: checkpoints ({tokens} tokens × {s.num_layers} layers)", saved))
        items.append(("activations: one layer recomputed", tokens * per_layer))
    else:
        items.append((f"activations ({tokens} tokens × {s.num_layers} layers)", tokens * s.num_layers * per_layer))
    logits = tokens * s.vocab_size * (2 * compute_bytes + LOGITS_FP32_BYTES)
    items.append((f"logits + loss ({tokens} tokens × {s.vocab_size} vocab)", logits))

    runtime = CPU_RUNTIME_BYTES if setup.on_cpu else CUDA_CONTEXT_BYTES
    return MemoryEstimate(items=tuple((label, int(b)) for label, b in items), runtime_bytes=runtime)


def checkpoint_bytes(shape: ModelShape, lora_rank: int, *, zero: bool = False) -> int:
    """One checkpoint as swift writes it: the adapter, the optimizer state and a few small files."""
    per_param = CHECKPOINT_BYTES_PER_LORA_PARAM + (ZERO_CHECKPOINT_EXTRA_BYTES if zero else 0)
    return shape.lora_params(lora_rank) * per_param + CHECKPOINT_SMALL_FILES_BYTES
