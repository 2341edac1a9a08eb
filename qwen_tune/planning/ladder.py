"""The out-of-memory ladder: after a run ran out of GPU memory, the next plan to try, and what it changes."""

from __future__ import annotations

from dataclasses import replace

from qwen_tune.planning.plan import MachineFacts, Plan, Setup, gib
from qwen_tune.planning.planner import SetupSearch, assemble
from qwen_tune.planning.profiles import Profile


def fallback(plan: Plan, profiles: list[Profile]) -> tuple[Plan, str] | None:
    """The next rung of the out-of-memory ladder and what it changes; None when no rung is left.

    Cheapest first: halve the micro-batch (more grad-accum, the same effective batch; packed: half the tokens a
    micro-batch), turn gradient checkpointing on, shard with zero3 instead of plain data parallel, then 4-bit
    QLoRA at micro-batch 1 (packed: the smallest packs). max_length is no rung: swift pads each batch to its
    longest sample, so lowering it saves nothing unless it cuts samples, which would change what is learned.
    """
    job = SetupSearch(plan.recipe, plan.model, plan.inventory, plan.dtype, plan.budget_bytes, plan.nodes, plan.data,
                      plan.setup.packing is not None, (plan.setup.liger,), plan.linear_attention or "fla")  # fmt: skip
    s, profile = plan.setup, plan.profile
    smaller = [m for m in job.micro_batches() if m <= s.micro_batch_size // 2] if not s.packing else []
    fewer_tokens = [p for p in job.packings() if p.tokens <= s.packing.tokens // 2] if s.packing else []
    fewer_tokens = fewer_tokens or [p for p in job.packings() if s.packing and p.tokens < s.packing.tokens][:1]
    if fewer_tokens:
        packing = fewer_tokens[0]
        setup, change = replace(s, packing=packing), f"packs of ≤{s.packing.tokens} → ≤{packing.tokens} tokens"
    elif smaller:
        setup, change = replace(s, micro_batch_size=smaller[0]), f"micro-batch {s.micro_batch_size} → {smaller[0]}"
    elif not s.gradient_checkpointing:
        setup, change = replace(s, gradient_checkpointing=True), "gradient checkpointing on"
    elif s.zero in ("", "zero2") and profile.deepspeed == "auto" and plan.n_devices > 1:
        before = f"DeepSpeed {s.zero}" if s.zero else "plain data parallel"
        setup, change = replace(s, zero="zero3"), f"{before} → DeepSpeed zero3"
    elif s.zero == "zero3" and plan.recipe.tuner == "full":
        setup, change = replace(s, zero="zero3_offload"), "DeepSpeed zero3 → zero3_offload"
    elif plan.recipe.tuner == "full":
        return None  # QLoRA would train an adapter, not the model that was asked for
    elif profile.quantization != "nf4" and not plan.inventory.is_cpu:
        qlora = [p for p in profiles if p.quantization == "nf4"]
        if not qlora:
            return None
        # bitsandbytes' 4-bit weights do not shard under ZeRO-3: QLoRA on several GPUs is plain data parallel.
        packing = job.packings()[-1] if s.packing else None
        profile, setup = qlora[0], Setup(1, True, packing=packing, liger=s.liger)
        change = f"4-bit QLoRA, {f'packs of ≤{packing.tokens} tokens' if packing else 'micro-batch 1'}, checkpointing on"
    else:
        return None
    est = job.estimate(profile, setup, plan.seq_len)
    reasons = (
        *plan.reasons,
        f"out of memory with {plan.setup.describe(plan.profile)}: retrying with {change} (needs {gib(est.peak_bytes)})",
    )
    machine = MachineFacts(
        flash_attn_installed=plan.attention == "flash_attn",
        fla_installed=plan.linear_attention == "fla",
        bytecode_cache=plan.bytecode_cache,
    )
    retry = assemble(
        job, profile, setup, est, plan.data, plan.seq_len, plan.dataset_path, plan.output_dir, list(reasons), machine
    )
    return replace(retry, hub=plan.hub), change
