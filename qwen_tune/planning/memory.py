"""A pure estimate of peak training memory per device, with its breakdown.

The constants are calibrated on measured runs (docs/hardware-validation.md and
docs/bench-results.jsonl, which tests/test_bench_records.py checks in CI; the seed's shared
measurements of 2026-11-22): the Qwen2.5-7B shape from micro-batch 1 with checkpointing to 16
without, QLoRA, Qwen3-14B bf16 and NF4, ZeRO-2/3 over two GPUs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from qwen_tune.machine.gpus import GIB, MIB
from qwen_tune.planning.models import ModelShape

BYTES_PER_PARAM = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0}
# NF4 packs two weights a byte; double quantization adds an 8-bit absmax per 64 weights.
NF4_BYTES_PER_PARAM = 0.5 + 1 / 64
# LoRA trains in fp32: the weight, its gradient and AdamW's two moments.
LORA_STATE_BYTES = 16
# Elements saved per token per decoder layer for backward (LoRA all-linear, sdpa/flash
# attention, so no seq² term): ~16 of hidden size (norms, dropout copies, q/o, residuals),
# 4.5 of the MLP width (gate, up, act, product) and 4 of the k/v width.
ACT_PER_HIDDEN, ACT_PER_FFN, ACT_PER_KV = 16, 4.5, 4
# Of those, peft's dropout copies of each linear's input: q, k, v, gate and up each take the hidden-size
# input, o the q width, down the MLP width. Full fine-tuning has none (0.5B and 1.5B, H100: within 4%).
LORA_DROPOUT_PER_HIDDEN = 5
# Qwen3 normalises q and k per head (q_norm/k_norm, in fp32) before RoPE: ~8 more elements of the
# q + k width. Fitted on Qwen3-14B on the H100 (2026-11-23): micro-batch 16 bf16 and 8 NF4 both
# reserved 2.5-5.4 GiB over the Qwen2 formula, 7.7 and 8.5 elements per q/k width.
ACT_PER_QK_NORM = 8
# The hybrid families (Qwen3.5/3.6, Qwen3-Next; models.HYBRID_FAMILIES), per token, beside the terms above that every layer
# has (norms, residuals, the MLP). DERIVED from transformers 5.19's modeling_qwen3_5.py / modeling_qwen3_next.py and
# fla-core 0.6.0's chunk_gated_delta_rule (what its autograd Function saves), NOT MEASURED: GUESSES until the GPU bench
# (tools/bench.py's qwen3.5 cases) calibrates them, as ACT_PER_QK_NORM was.
# Full-attention layers gate their output: q_proj is twice as wide (query and gate), and the gate's sigmoid and the
# gated product are kept: ~3 more elements of the query width.
ACT_PER_GATED_Q = 3
# Gated DeltaNet layers, with flash-linear-attention's Triton kernels: the causal convolution keeps its input (in_proj_qkv's
# output) and SiLU its input, 2 elements a conv channel (2 key dims + the value dim); fla keeps the l2-normed q and k,
# repeated to the value heads (2 of the value heads × key head dim) and its chunk-local WY matrix A (64 a value head:
# the chunk size); z, v, the kernel's output, the gated RMSNorm's fp32 copies (~8) and out_proj's input with its LoRA
# dropout copy are ~13 of the value width. The chunk states are recomputed in backward, so none is kept.
GDN_ACT_PER_CONV_CHANNEL, GDN_ACT_PER_QK, GDN_ACT_PER_VALUE, GDN_FLA_PER_VALUE_HEAD = 2, 2, 13, 64
# Without fla (transformers' torch_chunk_gated_delta_rule, the slow path), in fp32 BYTES a token: q, k, v, g and beta
# upcast and kept (~3 copies of 2 × key + value width), ~6 chunk × chunk matrices a value head (decay mask, attention,
# their products), and the recurrent state (value heads × key dim × value dim, fp32) of every 64-token chunk, twice.
GDN_TORCH_FP32_COPIES, GDN_TORCH_CHUNK_MATRICES, GDN_TORCH_STATE_COPIES = 3, 6, 2
GDN_CHUNK = 64  # both paths' chunk size (transformers' default, fla's fixed one)
# Logits are upcast to fp32 for the loss: the fp32 copy, cross-entropy's log-softmax kept for backward and the
# fp32 gradient sit beside the 16-bit logits and their gradient, all alive at the peak without checkpointing
# (8 bytes left the 7B's padded 4 × 600 tokens 4.6% under swift's peak; 12: -0.5%). With checkpointing the logits
# are freed before the recomputed layers' peak, and 8 fits the QLoRA 16 × 87 case (12 was 10% over).
# docs/hardware-validation.md, 2026-12-05.
LOGITS_FP32_BYTES = 12
LOGITS_FP32_BYTES_CHECKPOINTED = 8
# With checkpointing, the gradients flowing back through the stack beside the recomputed layer: hidden-size elements
# a token (fitted on the 7B's 5,773-token packs under a 23 GiB cap, checkpointing and Liger: 18.14 GiB reserved).
CKPT_GRADIENT_PER_HIDDEN = 24
# Liger's SwiGLU keeps gate and up and recomputes the activation in backward: one MLP-width element less a token and
# layer than transformers' MLP (the 7B's padded 4 × 1,829 tokens reserved 63.3 GiB; 70.1 estimated without it).
LIGER_SAVED_PER_FFN = 1
# Packs differ a little in size from one micro-step to the next, and torch's caching allocator keeps blocks cut for
# one beside another's: the 7B's 5,773-token packs on the H100 reserved 72.5 GiB for 66.3 allocated (9.4%). Where
# packed, a tenth of the activations and loss is kept for it.
PACKED_ALLOCATOR_SLACK = 0.10
# Allocated by the CUDA driver outside torch's pool (NVML peak minus torch reserved).
CUDA_CONTEXT_BYTES = int(0.76 * GIB)
# Python, torch and swift in the training process, when the "device" is host memory.
CPU_RUNTIME_BYTES = int(1.5 * GIB)
# Share of the model that swift's zero3 preset holds gathered at the peak (its
# stage3_max_live_parameters and stage3_max_reuse_distance are 1e9). Calibrated on the
# 7B shape over 2 GPUs (17.21 GiB/GPU); it also explains Qwen3-14B's OOM under 22.5 GiB/GPU.
ZERO3_GATHERED_FRACTION = 0.35
# Full fine-tuning (swift 4.6 pipelines/train/tuner.py: `model.requires_grad_(True)`, no dtype change).
# With --torch_dtype bfloat16 the weights load in bf16 and stay bf16: swift sets bf16=True
# (arguments/base_args/model_args.py _init_mixed_precision), which is autocast, not fp32 master
# weights; the gradients are bf16 and torch's AdamW keeps both moments in the parameter's dtype.
# So one device holds 2 + 2 + 2×2 = 8 bytes a parameter (16 in fp32 on the CPU).
FULL_MOMENTS = 2
# Under DeepSpeed (bf16 "auto" → on) the optimizer is DeepSpeed's: an fp32 master copy and fp32
# AdamW moments (12 bytes), plus the fp32 gradient partition it builds at the step (4), all
# partitioned over the GPUs by ZeRO-2 and ZeRO-3. Not measured yet.
ZERO_OPTIMIZER_BYTES = 16
# zero3_offload moves the 16-bit partition and the optimizer to pinned host memory: per node,
# 2 (bf16 weights) + 12 (fp32 master + moments) + 4 (fp32 gradients) bytes a parameter.
OFFLOAD_HOST_BYTES = 18
# A checkpoint on disk, per LoRA parameter: the fp32 adapter and AdamW's two fp32 moments
# (optimizer.pt); measured 4.01 + 8.07 bytes on the demo's rank-64 run. Under ZeRO, DeepSpeed's
# own files also hold the 16-bit weights and an fp32 master copy (its layout, not measured yet).
CHECKPOINT_BYTES_PER_LORA_PARAM = 12
ZERO_CHECKPOINT_EXTRA_BYTES = 6
# trainer_state.json (it grows with the logged steps), args, RNG and scheduler state, the README.
CHECKPOINT_SMALL_FILES_BYTES = MIB
# A full checkpoint: the bf16 weights (safetensors) and the optimizer, bf16 moments (4) or
# DeepSpeed's fp32 master + moments and its bf16 partition (14). Not measured yet.
FULL_CHECKPOINT_BYTES = 2
FULL_OPTIMIZER_CHECKPOINT_BYTES = {False: 4, True: 14}

Tuner = Literal["lora", "full"]
# Which code runs the Gated DeltaNet layers: flash-linear-attention's Triton kernels where fla is installed on a GPU box,
# else transformers' torch path (also on the CPU, where fla's Triton kernels do not run).
LinearAttentionKernels = Literal["fla", "torch"]


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
    tuner: Tuner = "lora"
    offload: bool = False  # ZeRO-3 with weights and optimizer in host memory (swift's zero3_offload)
    liger: bool = False  # Liger's fused linear cross-entropy: the loss in chunks, no logits tensor
    packed: bool = False  # rows packed into micro-batches of seq_len tokens (swift --packing), not padded
    linear_attention: LinearAttentionKernels = "fla"  # hybrid models only: which path runs their Gated DeltaNet layers


WEIGHTS_BY_DTYPE = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
# swift's DeepSpeed presets the planner may pick ("" is none), and the ZeRO stage of each.
# zero3_offload is offered for full fine-tuning only: for LoRA, under 22.5 GiB/GPU it ran out of memory in
# the first forward exactly like zero3 for Qwen3-14B (shared/measurements/2026-11-22-2xh200), buying nothing.
ZeroPreset = Literal["", "zero2", "zero3", "zero3_offload"]
ZERO_STAGE: dict[ZeroPreset, int] = {"": 0, "zero2": 2, "zero3": 3, "zero3_offload": 3}


def train_setup(*, dtype: str, quantization: str, zero: str, **fields) -> TrainSetup:
    """A TrainSetup in a plan's words: swift's dtype name, the profile's quantization, the DeepSpeed preset."""
    weights = "nf4" if quantization == "nf4" else WEIGHTS_BY_DTYPE[dtype]
    return TrainSetup(weights=weights, zero_stage=ZERO_STAGE[zero], offload=zero == "zero3_offload", **fields)


def recorded_setup(setup: dict) -> TrainSetup:
    """The setup a benchmark record ran (docs/bench-results.jsonl), to estimate it again."""
    return train_setup(
        dtype=setup["dtype"],
        quantization=setup["quantization"],
        zero=setup["zero"],
        shape=ModelShape(**setup["shape"]),
        lora_rank=setup["lora_rank"],
        micro_batch_size=1 if setup.get("packing") else setup["micro_batch_size"],  # packed: one pack of its tokens
        seq_len=setup["packing"]["tokens"] if setup.get("packing") else setup["seq_len"],
        gradient_checkpointing=setup["gradient_checkpointing"],
        n_gpus=setup["n_gpus"],
        tuner=setup.get("tuner", "lora"),
        liger=setup.get("liger", False),
        packed=bool(setup.get("packing")),
        linear_attention=setup.get("linear_attention") or "fla",
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
    """Weights, what training keeps (LoRA's adapter state, or every weight's gradient and AdamW),
    activations and logits. Full fine-tuning saves the same activations as all-linear LoRA (the
    input of every linear), less LoRA's dropout copies: the LoRA constants over-count it a little."""
    s = setup.shape
    compute_bytes = 4 if setup.weights == "fp32" else 2
    shard = setup.n_gpus if setup.zero_stage else 1

    if setup.weights == "nf4":
        # bitsandbytes replaces nn.Linear only: an MoE's experts and router stay 16-bit (docs/models.md).
        weights = s.linear_params * NF4_BYTES_PER_PARAM + (s.expert_params + s.other_params) * 2
        largest = max(i * o for _, linears in s.layer_kinds() for i, o in linears)
        weights_label = "weights (NF4 4-bit, embeddings 16-bit)" if not s.is_moe else "weights (attention NF4, experts 16-bit)"
        if s.vision_params:  # swift keeps the vision tower out of bitsandbytes (quant_args.get_modules_to_not_convert)
            weights_label = weights_label.removesuffix(")") + ", vision tower 16-bit)"
    else:
        weights = s.n_params * BYTES_PER_PARAM[setup.weights]
        largest = 0
        weights_label = f"weights ({setup.weights})"
    if setup.offload:
        weights, weights_label = 0, weights_label + ", offloaded to host memory"
    elif setup.zero_stage == 3:
        weights /= shard
        weights_label += f", ZeRO-3 shard 1/{shard}"
    items = [(weights_label, weights)]
    if setup.zero_stage == 3:
        items.append(("ZeRO-3 gathered parameters", s.n_params * ZERO3_GATHERED_FRACTION * compute_bytes))
    if largest:
        items.append(("4-bit dequantization buffer", largest * compute_bytes))

    activations = _activations(setup, compute_bytes)
    if setup.tuner == "full":
        items += _full_training_state(setup, compute_bytes, shard, sum(b for _, b in activations))
    else:
        items.append(_lora_state(setup, shard))
        if setup.n_gpus > 1 and not setup.zero_stage:
            # Plain data parallel (torchrun, no DeepSpeed): the reducer's buckets hold a copy of the fp32 gradients.
            items.append(("DDP gradient buckets (fp32)", setup.shape.lora_params(setup.lora_rank) * 4))
    items += activations
    runtime = CPU_RUNTIME_BYTES if setup.on_cpu else CUDA_CONTEXT_BYTES
    return MemoryEstimate(items=tuple((label, int(b)) for label, b in items), runtime_bytes=runtime)


def _full_training_state(setup: TrainSetup, compute_bytes: int, shard: int, activations: float) -> list[tuple[str, float]]:
    """Without ZeRO the gradients fill in as backward frees the activations, and are freed before the next
    forward: the peak holds the larger of the two (measured on 0.5B and 1.5B, H100, 2026-11-24)."""
    n = setup.shape.text_params  # swift keeps a vision tower frozen (freeze_vit): no gradient, no AdamW state
    if setup.offload:
        return [("gradients and AdamW: in host memory (zero3_offload)", 0)]
    if setup.zero_stage:
        return [
            (f"gradients ({setup.weights}), ZeRO-{setup.zero_stage} 1/{shard}", n * compute_bytes / shard),
            (f"fp32 master weights + gradients + AdamW (DeepSpeed), 1/{shard}", n * ZERO_OPTIMIZER_BYTES / shard),
        ]
    buckets = [("DDP gradient buckets", n * compute_bytes)] if setup.n_gpus > 1 else []  # plain data parallel
    return [
        *buckets,
        (f"AdamW moments ({setup.weights}, the parameters' dtype)", n * compute_bytes * FULL_MOMENTS),
        (
            f"gradients ({setup.weights}, {n / 1e9:.2f}B params) beyond the activations they replace",
            max(0, n * compute_bytes - activations),
        ),
    ]


def _lora_state(setup: TrainSetup, shard: int) -> tuple[str, float]:
    lora = setup.shape.lora_params(setup.lora_rank)
    if setup.zero_stage:
        lora_bytes = lora * 4 + lora * (LORA_STATE_BYTES - 4) / shard
        lora_label = f"LoRA params + grads + AdamW, ZeRO-{setup.zero_stage} 1/{shard}"
    else:
        lora_bytes = lora * LORA_STATE_BYTES
        lora_label = "LoRA params + grads + AdamW (fp32)"
    return f"{lora_label} ({lora / 1e6:.1f}M params)", lora_bytes


def _activations(setup: TrainSetup, compute_bytes: int) -> list[tuple[str, float]]:
    s, items = setup.shape, []
    tokens = setup.micro_batch_size * setup.seq_len
    per_layer = compute_bytes * (ACT_PER_HIDDEN * s.hidden_size + ACT_PER_FFN * s.active_ffn_size + ACT_PER_KV * s.kv_dim)
    if setup.tuner == "full":
        # No LoRA, so none of the dropout copies peft keeps of each adapted linear's input for lora_A's backward.
        per_layer -= compute_bytes * (LORA_DROPOUT_PER_HIDDEN * s.hidden_size + s.num_heads * s.head_dim + s.active_ffn_size)
    if s.is_moe:
        # The router's logits and probabilities (fp32) per expert; the routing indices are small.
        per_layer += 2 * 4 * s.num_experts
    if s.has_qk_norm:
        per_layer += compute_bytes * ACT_PER_QK_NORM * (s.num_heads * s.head_dim + s.kv_dim)
    if setup.liger:
        per_layer -= compute_bytes * LIGER_SAVED_PER_FFN * s.active_ffn_size
    largest_layer = per_layer
    if s.is_hybrid:
        per_layer, largest_layer = _hybrid_layer_bytes(setup, per_layer, compute_bytes)
    loss = _loss(setup, tokens, compute_bytes)
    if setup.gradient_checkpointing:
        # At the loss the stack holds only the checkpoints; the layer recomputed in backward comes after the logits
        # are freed: the peak is the checkpoints and the larger of the two, with the gradients that flow through.
        saved = tokens * s.num_layers * s.hidden_size * compute_bytes
        items.append((f"activations: checkpoints ({tokens} tokens × {s.num_layers} layers)", saved))
        recompute = tokens * largest_layer
        flowing = tokens * s.hidden_size * compute_bytes * CKPT_GRADIENT_PER_HIDDEN
        if recompute >= loss[1]:
            items.append(("activations: one layer recomputed, and the gradients flowing back", recompute + flowing))
        else:
            items.append((loss[0] + ", and the gradients flowing back", loss[1] + flowing))
    else:
        items.append((f"activations ({tokens} tokens × {s.num_layers} layers)", tokens * s.num_layers * per_layer))
        items.append(loss)
    if setup.packed:
        stack = sum(b for _, b in items)
        items.append(("allocator slack: packs of varying size (10% of the activations and loss)", stack * PACKED_ALLOCATOR_SLACK))
    return items


def _loss(setup: TrainSetup, tokens: int, compute_bytes: int) -> tuple[str, float]:
    """The logits and the loss over them, or Liger's chunked loss that never holds all the logits at once."""
    s = setup.shape
    if setup.liger:
        # liger_kernel fused_linear_cross_entropy: chunks of next_pow2(tokens / ceil(vocab / hidden)) rows of logits
        # in fp32 with their gradient, and the gradient of the hidden states in fp32.
        chunk = 1 << max(0, math.ceil(tokens / math.ceil(s.vocab_size / s.hidden_size)) - 1).bit_length()
        loss = chunk * s.vocab_size * (compute_bytes + LOGITS_FP32_BYTES) + tokens * s.hidden_size * 4
        return f"loss (Liger, chunks of {chunk} tokens × {s.vocab_size} vocab)", loss
    fp32 = LOGITS_FP32_BYTES_CHECKPOINTED if setup.gradient_checkpointing else LOGITS_FP32_BYTES
    return f"logits + loss ({tokens} tokens × {s.vocab_size} vocab)", tokens * s.vocab_size * (2 * compute_bytes + fp32)


def _hybrid_layer_bytes(setup: TrainSetup, attention_layer: float, compute_bytes: int) -> tuple[float, float]:
    """Bytes a token of a hybrid model's layers: their mean over the layers, and the larger kind's (the one layer that
    checkpointing recomputes). `attention_layer` is the formula of a plain attention layer; a full-attention layer adds
    its output gate, a Gated DeltaNet layer trades attention's k/v and q/k-norm terms for its own."""
    s = setup.shape
    q = s.num_heads * s.head_dim
    full = attention_layer + compute_bytes * ACT_PER_GATED_Q * q
    gdn = attention_layer - compute_bytes * (ACT_PER_KV * s.kv_dim + ACT_PER_QK_NORM * (q + s.kv_dim))
    repeated_qk = s.linear_value_heads * s.linear_key_head_dim  # q and k, repeated to the value heads
    if setup.linear_attention == "fla":
        gdn += compute_bytes * (
            GDN_ACT_PER_CONV_CHANNEL * s.linear_conv_dim + GDN_ACT_PER_QK * repeated_qk
            + GDN_ACT_PER_VALUE * s.linear_value_dim + GDN_FLA_PER_VALUE_HEAD * s.linear_value_heads
        )  # fmt: skip
    else:
        state = s.linear_value_heads * s.linear_key_head_dim * s.linear_value_head_dim
        gdn += compute_bytes * (GDN_ACT_PER_CONV_CHANNEL * s.linear_conv_dim + GDN_ACT_PER_VALUE * s.linear_value_dim)
        gdn += 4 * (
            GDN_TORCH_FP32_COPIES * (2 * repeated_qk + s.linear_value_dim)
            + GDN_TORCH_CHUNK_MATRICES * GDN_CHUNK * s.linear_value_heads
            + GDN_TORCH_STATE_COPIES * state / GDN_CHUNK
        )  # fmt: skip
    mean = (full * s.full_attention_layers + gdn * s.linear_layers) / s.num_layers
    return mean, max(full, gdn)


def host_bytes(setup: TrainSetup) -> int:
    """Host memory that zero3_offload pins on one node for the weights and optimizer; 0 without offload."""
    return setup.shape.n_params * OFFLOAD_HOST_BYTES if setup.offload else 0


def checkpoint_bytes(shape: ModelShape, lora_rank: int, *, zero: bool = False, tuner: Tuner = "lora") -> int:
    """One checkpoint as swift writes it: the adapter (or the whole model), the optimizer state and a few small files."""
    if tuner == "full":
        per_weight = FULL_CHECKPOINT_BYTES + FULL_OPTIMIZER_CHECKPOINT_BYTES[zero]
        return shape.n_params * per_weight + CHECKPOINT_SMALL_FILES_BYTES
    per_param = CHECKPOINT_BYTES_PER_LORA_PARAM + (ZERO_CHECKPOINT_EXTRA_BYTES if zero else 0)
    return shape.lora_params(lora_rank) * per_param + CHECKPOINT_SMALL_FILES_BYTES
