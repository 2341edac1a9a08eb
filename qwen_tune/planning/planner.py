"""The planner: inventory + recipe + model + data → a Plan (ladder.py picks the next one after an out-of-memory).

Pure: everything it needs from the box (GPUs, flash-attn) is passed in, so every card in
cards.py can be planned and golden-tested anywhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from qwen_tune.errors import DoesNotFit, UsageError
from qwen_tune.machine.cards import KNOWN_CARDS
from qwen_tune.machine.gpus import GIB, MIB, Inventory
from qwen_tune.planning.memory import (
    LinearAttentionKernels,
    MemoryEstimate,
    Tuner,
    ZeroPreset,
    checkpoint_bytes,
    estimate,
    host_bytes,
    train_setup,
)
from qwen_tune.planning.models import ModelRef
from qwen_tune.planning.plan import DataSummary, Dtype, MachineFacts, Nodes, Packing, Plan, Setup, gib
from qwen_tune.planning.profiles import Profile
from qwen_tune.planning.recipes import Recipe
from qwen_tune.planning.speed import StepTime, device_tflops, step_time
from qwen_tune.swift.checkpoints import SAVE_TOTAL_LIMIT
from qwen_tune.swift.deps import linear_attention_warning
from qwen_tune.swift.packing import pack_count

MARGIN_FRACTION = 0.03
CPU_USABLE_FRACTION = 0.8
TIGHT_BYTES = int(0.5 * GIB)
# A refusal names a bigger GPU only where one is sold.
LARGEST_CARD_BYTES = max(c.memory_mib for c in KNOWN_CARDS) * MIB
# What is tried on several GPUs, in order ("" is plain data parallel, no DeepSpeed). LoRA: zero2 would save
# ~0.1 GiB a GPU (its states are tiny), zero3_offload nothing (memory.ZERO_STAGE). Full fine-tuning: its
# optimizer state is 8× its weights, so zero2's sharding pays, and moving it to host memory is the last rung.
LORA_ZERO_PRESETS: tuple[ZeroPreset, ...] = ("", "zero3")
FULL_ZERO_PRESETS: tuple[ZeroPreset, ...] = ("", "zero2", "zero3", "zero3_offload")
# Host memory zero3_offload may pin, of the RAM this box reports.
HOST_USABLE_FRACTION = 0.8
# A refusal suggests the longest of these that fits.
SHORTER_LENGTHS = (1024, 512, 256, 128)
# Above this a full fine-tuning learning rate is a LoRA one: it wrecks what the model knew.
FULL_MAX_LEARNING_RATE = 5e-5
# A less preferred profile (QLoRA's 4-bit weights, a little more loss) is chosen only when it trains this much faster.
PREFERENCE_SPEEDUP = 2.0
# Setups whose estimated times differ by less than this are taken as equal (qwen_tune/planning/speed.py is coarse).
TIME_TOLERANCE = 0.1
# swift.log, logging.jsonl, the plan, the loss plot and the identity check's files, with room to spare.
RUN_FILES_BYTES = 50 * MIB


def linear_attention_path(inventory: Inventory, machine: MachineFacts) -> LinearAttentionKernels:
    """What runs a hybrid model's Gated DeltaNet layers: flash-linear-attention's Triton kernels where `fla` is installed
    on a GPU box (transformers and swift pick them up by themselves), else transformers' torch path."""
    return "fla" if machine.fla_installed and not inventory.is_cpu else "torch"


def budget_bytes(inventory: Inventory) -> int:
    """What one device may use: the smallest card less a safety margin, or most of the RAM."""
    if inventory.is_cpu:
        return int(inventory.host_memory_bytes * CPU_USABLE_FRACTION / inventory.cpu_processes)
    return int(min(g.total_bytes for g in inventory.gpus) * (1 - MARGIN_FRACTION))


def training_dtype(inventory: Inventory) -> Dtype:
    if inventory.is_cpu:
        return "float32"
    return "bfloat16" if all(g.bf16 for g in inventory.gpus) else "float16"


def unusable_because(
    profile: Profile, inventory: Inventory, nodes: Nodes = Nodes(), *, check_card_size: bool = True, tuner: Tuner = "lora"
) -> str | None:
    """Why the profile cannot serve these devices, or None when it can.

    A forced profile skips the card-size rule: there the memory estimate decides, with a warning.
    """
    if tuner == "full" and profile.quantization == "nf4":
        return "trains LoRA on 4-bit weights; full fine-tuning trains the 16-bit weights themselves"
    n = len(inventory.gpus) * nodes.count
    if (profile.devices == "cpu") != (n == 0):
        return "is for the CPU only" if n else "needs a GPU"
    if profile.devices == "single" and n > 1:
        return "is for one GPU"
    if profile.devices == "multi" and n < 2:
        return "needs two or more GPUs"
    if check_card_size and n and min(g.total_bytes for g in inventory.gpus) / GIB < profile.min_memory_gib:
        return f"is for cards of {profile.min_memory_gib:g} GiB or more"
    return None


@dataclass(frozen=True)
class SetupSearch:
    """What stays fixed while the chooser tries profiles and setups."""

    recipe: Recipe
    model: ModelRef
    inventory: Inventory
    dtype: Dtype
    budget: int
    nodes: Nodes
    data: DataSummary | None = None
    pack: bool = False  # rows packed into token budgets, no padding (packing_decision)
    liger: tuple[bool, ...] = (False,)  # whether Liger's kernels are tried, as well as or instead of none
    linear_attention: LinearAttentionKernels = "fla"  # a hybrid model's Gated DeltaNet path (linear_attention_path)

    @property
    def n_devices(self) -> int:
        return self.inventory.per_node * self.nodes.count

    def micro_batches(self) -> list[int]:
        """Micro-batches that keep the effective batch exact: divisors of one device's share, largest first."""
        per_device = math.ceil(self.recipe.effective_batch_size / self.n_devices)
        return [m for m in range(per_device, 0, -1) if per_device % m == 0]

    def tokens_per_step(self) -> int:
        """The tokens one device trains per optimizer step where padded: its share of the effective batch at the
        data's mean row length. Packed, an optimizer step keeps that many, so it sees as many rows on average."""
        mean = self.data.mean_tokens if self.data and self.data.mean_tokens else self.data.max_tokens
        return math.ceil(self.recipe.effective_batch_size * mean / self.n_devices)

    def packings(self) -> list[Packing]:
        """Token budgets a micro-batch may have, largest first: the step's tokens in 1, 2, 3... packs, down to the
        longest row (a pack holds at least one row)."""
        longest, total, target = self.data.max_tokens, self.data.total_tokens, self.tokens_per_step()
        found: list[Packing] = []
        for grad_accum in range(1, self.recipe.effective_batch_size + 1):
            tokens = max(longest, math.ceil(target / grad_accum))
            packs = pack_count(self.data.lengths, tokens) if self.data.lengths else math.ceil(total / tokens)
            found.append(Packing(tokens, grad_accum, packs))
            if tokens == longest:
                break
        return found

    def setups(self, profile: Profile) -> list[Setup]:
        """Every way the profile allows, fastest first: less sharding, no recomputation, bigger micro-batches."""
        checkpointing = [False, True] if profile.gradient_checkpointing == "auto" else [profile.gradient_checkpointing]
        # Several devices: plain data parallel through torchrun when the model fits one card (LoRA's states are
        # tiny, so ZeRO-2 saved ~0.1 GiB a GPU on the 7B job and cost a DeepSpeed dependency); ZeRO-3 to shard it.
        presets = FULL_ZERO_PRESETS if self.recipe.tuner == "full" else LORA_ZERO_PRESETS
        zeros = presets if profile.deepspeed == "auto" and self.n_devices > 1 else ("",)
        if self.pack:
            packings = self.packings()
            if profile.micro_batch_size != "max":  # a profile that pins the micro-batch: the smallest packs
                packings = packings[-1:]
            return [Setup(1, c, z, p, liger) for z in zeros for c in checkpointing for liger in self.liger for p in packings]
        if profile.micro_batch_size == "max":
            micro_batches = self.micro_batches()
        else:
            micro_batches = [min(profile.micro_batch_size, self.micro_batches()[0])]
        return [Setup(m, c, z, None, liger) for z in zeros for c in checkpointing for liger in self.liger for m in micro_batches]

    def grad_accum(self, setup: Setup) -> int:
        if setup.packing:
            return setup.packing.grad_accum
        return math.ceil(self.recipe.effective_batch_size / (setup.micro_batch_size * self.n_devices))

    def steps_per_epoch(self, setup: Setup) -> int | None:
        """As Plan.steps_per_epoch counts them; None without data."""
        if setup.packing:
            return math.ceil(math.ceil(setup.packing.packs / self.n_devices) / setup.packing.grad_accum)
        if not self.data or self.data.n_rows is None:
            return None
        return math.ceil(math.ceil(self.data.n_rows / (setup.micro_batch_size * self.n_devices)) / self.grad_accum(setup))

    def step_time(self, profile: Profile, setup: Setup, seq_len: int) -> StepTime:
        """One optimizer step: micro-steps of padded rows of seq_len tokens, or of one pack of its token budget."""
        micro, tokens = (1, setup.packing.tokens) if setup.packing else (setup.micro_batch_size, seq_len)
        return step_time(
            self.model.shape, micro_batch_size=micro, grad_accum=self.grad_accum(setup), seq_len=tokens,
            gradient_checkpointing=setup.gradient_checkpointing, nf4=profile.quantization == "nf4",
            tflops=device_tflops(self.inventory), zero3=setup.zero.startswith("zero3"), liger=setup.liger,
            packed=setup.packing is not None,
        )  # fmt: skip

    def epoch_seconds(self, profile: Profile, setup: Setup, seq_len: int) -> float:
        """What the time model says an epoch takes: packed setups differ in their number of steps, padded ones
        barely, so setups are compared by this (by a step where the data is not known)."""
        steps = self.steps_per_epoch(setup)
        return self.step_time(profile, setup, seq_len).seconds * (steps or 1)

    def fits(self, est: MemoryEstimate, setup: Setup) -> bool:
        """The estimate fits every device, and what zero3_offload pins fits the host (when its RAM is known)."""
        host = self.host_bytes_per_node(setup)
        host_ok = not host or not self.inventory.host_memory_bytes
        host_ok = host_ok or host <= self.inventory.host_memory_bytes * HOST_USABLE_FRACTION
        return est.peak_bytes <= self.budget and host_ok

    def host_bytes_per_node(self, setup: Setup, n_gpus: int | None = None) -> int:
        """What zero3_offload pins in one node's RAM: its GPUs' share of the model and optimizer."""
        n_gpus = n_gpus or self.n_devices
        return host_bytes(self.train_setup(setup, 1, n_gpus=n_gpus)) * min(n_gpus, max(1, len(self.inventory.gpus))) // n_gpus

    def train_setup(self, setup: Setup, seq_len: int, quantization: str = "none", n_gpus: int | None = None):
        """What the estimator takes; a packed micro-batch is one sample of its token budget."""
        micro, tokens = (1, setup.packing.tokens) if setup.packing else (setup.micro_batch_size, seq_len)
        return train_setup(
            dtype=self.dtype,
            quantization=quantization,
            zero=setup.zero,
            shape=self.model.shape,
            lora_rank=self.recipe.lora_rank,
            micro_batch_size=micro,
            seq_len=tokens,
            gradient_checkpointing=setup.gradient_checkpointing,
            n_gpus=n_gpus or self.n_devices,
            on_cpu=self.inventory.is_cpu,
            tuner=self.recipe.tuner,
            liger=setup.liger,
            packed=setup.packing is not None,
            linear_attention=self.linear_attention,
        )

    def estimate(self, profile: Profile, setup: Setup, seq_len: int, n_gpus: int | None = None) -> MemoryEstimate:
        return estimate(self.train_setup(setup, seq_len, profile.quantization, n_gpus))


def make_plan(
    *,
    recipe: Recipe,
    model: ModelRef,
    inventory: Inventory,
    profiles: list[Profile],
    data: DataSummary,
    dataset_path: str,
    output_dir: str,
    forced_profile: str | None = None,
    machine: MachineFacts,
    nodes: Nodes = Nodes(),
    packing: bool | None = None,
) -> Plan:
    """Each profile's fastest setup that fits every device; of those, the most preferred profile, unless a
    later one trains PREFERENCE_SPEEDUP times faster. packing: --packing (True), --no-packing (False), or None:
    packed wherever it runs and keeps the recipe's effective batch."""
    nodes.check()
    dtype = training_dtype(inventory)
    pack, packing_reason = packing_decision(packing, recipe=recipe, model=model, inventory=inventory, data=data, dtype=dtype,
                                            machine=machine, n_devices=inventory.per_node * nodes.count)  # fmt: skip
    liger = (
        (False, True) if machine.liger_installed and not inventory.is_cpu and model.shape.family in LIGER_FAMILIES else (False,)
    )
    job = SetupSearch(recipe, model, inventory, dtype, budget_bytes(inventory), nodes, data, pack, liger,
                      linear_attention_path(inventory, machine))  # fmt: skip
    seq_len = min(data.max_tokens, recipe.max_length)
    reasons = [_describe_devices(inventory, job.budget, nodes)]
    if packing_reason:
        reasons.append(packing_reason)
    if job.dtype == "float16":
        if recipe.tuner == "full":
            raise DoesNotFit(
                f"full fine-tuning needs bfloat16 and {inventory.gpus[0].name} has none (compute capability below 8.0): "
                "train LoRA (--tuner lora), or use an Ampere or newer card"
            )
        reasons.append("float16: a card has no bfloat16 (compute capability below 8.0)")
    if recipe.tuner == "full":
        reasons.append("full fine-tuning: every weight trains, with its gradient and AdamW state")

    if forced_profile is not None:
        candidates = [p for p in profiles if p.name == forced_profile]
        if not candidates:
            raise UsageError(f"unknown profile {forced_profile!r}; profiles: {', '.join(p.name for p in profiles)}")
        why_not = unusable_because(candidates[0], inventory, nodes, check_card_size=False, tuner=recipe.tuner)
        if why_not:
            raise UsageError(f"profile {forced_profile} {why_not}: pick another with --profile, or let qwen-tune choose")
        reasons.append(f"profile {forced_profile} forced with --profile")
    else:
        candidates = []
        for profile in profiles:
            why_not = unusable_because(profile, inventory, nodes, tuner=recipe.tuner)
            if why_not is None:
                candidates.append(profile)
            elif (profile.devices == "cpu") == inventory.is_cpu:
                reasons.append(f"skipped {profile.name}: {why_not}")

    tried, best = None, []  # best: each profile's fastest fitting (profile, setup, estimate, seconds a step)
    for profile in candidates:
        fitting = []
        for setup in job.setups(profile):
            tried = (profile, setup, job.estimate(profile, setup, seq_len))
            if job.fits(tried[2], setup):
                fitting.append((*tried, job.epoch_seconds(profile, setup, seq_len)))
        if fitting:
            # The first (less sharding, no recomputation, bigger batch) of those within TIME_TOLERANCE of the fastest:
            # the time model is coarse, and recomputation costs more where a card is compute-bound.
            fastest = min(t[3] for t in fitting)
            best.append((next(t for t in fitting if t[3] <= fastest * (1 + TIME_TOLERANCE)), len(fitting)))
        elif forced_profile is None:
            reasons.append(
                f"skipped {profile.name}: needs {gib(tried[2].peak_bytes)} > {gib(job.budget)} usable even at {tried[1].describe(profile)}"
            )
    if best:
        # The most preferred profile that fits, unless a later one trains at least PREFERENCE_SPEEDUP times faster
        # (a 16 GB card whose bf16 fit is 1 x 16 with checkpointing, against QLoRA's bigger micro-batches).
        fastest = min(b[0][3] for b in best)
        (profile, setup, est, seconds), n_fitting = next(b for b in best if b[0][3] <= fastest * PREFERENCE_SPEEDUP)
        for (other, other_setup, _, other_seconds), _ in best:
            if other is profile:
                break
            reasons.append(
                f"passed over {other.name} ({other_setup.describe(other)}, ~{_seconds(other_seconds, job)}): "
                f"{profile.name} is {other_seconds / seconds:.1f}× faster"
            )
        reasons.append(
            f"chose {profile.name} ({setup.describe(profile)}): needs {gib(est.peak_bytes)} of {gib(job.budget)} usable; "
            + (f"the fastest of {n_fitting} setups that fit" if n_fitting > 1 else "the one setup that fits")
            + f", ~{_seconds(seconds, job)}"
        )
        return assemble(job, profile, setup, est, data, seq_len, dataset_path, output_dir, reasons, machine)
    if forced_profile is not None and tried is not None:
        return assemble(job, *tried, data, seq_len, dataset_path, output_dir, reasons, machine)
    raise DoesNotFit(_refusal(job, candidates or profiles, seq_len))


def _seconds(seconds: float, job: SetupSearch) -> str:
    """The time model's figure as compared: an epoch where the data is known, else an optimizer step."""
    shown = f"{seconds:.0f}" if seconds >= 10 else f"{seconds:.2g}"
    return f"{shown} s an epoch" if job.data and job.data.n_rows else f"{shown} s an optimizer step"


# Model families whose packed rows the varlen attention keeps apart: every layer's attention is the attention
# function (hybrid linear-attention layers are not, and swift 4.6 passes them no row bounds: research notes).
PACKABLE_FAMILIES = ("qwen2", "qwen3", "qwen3_moe")
# What liger-kernel 0.8 patches (apply_liger_kernel_to_instance by model_type).
LIGER_FAMILIES = ("qwen2", "qwen3", "qwen3_moe")


def packing_decision(
    wanted: bool | None, *, recipe: Recipe, model: ModelRef, inventory: Inventory, data: DataSummary, dtype: Dtype,
    machine: MachineFacts, n_devices: int,
) -> tuple[bool, str | None]:  # fmt: skip
    """Whether rows are packed into token budgets (no padding), and the plan's reason. Packed where torch's varlen
    attention runs (a CUDA card with bfloat16, torch >= 2.10), the model's every layer goes through it, the data's
    lengths are known, and an optimizer step's tokens hold the longest row (so a step still sees about the recipe's
    effective batch of rows). --packing asks for it (the CPU too, where each row's attention runs alone: for tests);
    --no-packing pads every micro-batch to its longest row, as swift does by default."""
    if wanted is False:
        return False, "rows padded to the longest of each micro-batch (--no-packing)"
    if data.n_rows is None or not data.total_tokens:
        return False, None
    why_not = None
    if inventory.is_cpu:
        why_not = None if wanted else "on the CPU"
    elif not (machine.varlen_attention or machine.flash_attn_installed):
        why_not = "this Python's torch has no varlen attention (torch >= 2.10 has: torch.nn.attention.varlen)"
    elif dtype != "bfloat16":
        why_not = "a card has no bfloat16 (FlashAttention's varlen kernel needs compute capability 8.0 or newer)"
    if why_not is None and model.shape.family not in PACKABLE_FAMILIES:
        why_not = f"{model.shape.family} models have linear-attention layers, whose packed rows are not yet measured apart"
    if why_not:
        if wanted:
            raise UsageError(f"--packing cannot run here: {why_not}; leave --packing out")
        return False, None if inventory.is_cpu else f"rows padded to the longest of each micro-batch: {why_not}"
    target = math.ceil(recipe.effective_batch_size * data.mean_tokens / n_devices)
    if target < data.max_tokens and not wanted:
        return False, (
            f"rows padded: an optimizer step's {target} tokens (effective batch {recipe.effective_batch_size} × "
            f"{data.mean_tokens:.0f} a row) cannot hold the longest row ({data.max_tokens}); --packing packs anyway, with fewer steps"
        )
    if inventory.is_cpu:
        kernel = "one attention call a row on the CPU, through qwen-tune's swift plugin"
    elif machine.flash_attn_installed:
        kernel = "flash-attn's varlen kernel"
    else:
        kernel = "torch's FlashAttention varlen kernel, through qwen-tune's swift plugin"
    return True, (
        f"no padding: rows packed into micro-batches of a token budget ({kernel}), "
        f"~{max(target, data.max_tokens)} tokens an optimizer step a device: the recipe's effective batch of "
        f"{recipe.effective_batch_size} rows at {data.mean_tokens:.0f} tokens a row"
    )


def disk_bytes_needed(plan: Plan, dataset_bytes: int) -> int:
    """What a run writes under --output-dir at its fullest: the checkpoints swift keeps plus the one
    it is saving before it deletes the oldest, the filled dataset copy, and the run's own files."""
    checkpoint = checkpoint_bytes(plan.model.shape, plan.recipe.lora_rank, zero=bool(plan.setup.zero), tuner=plan.recipe.tuner)
    return checkpoint * (SAVE_TOTAL_LIMIT + 1) + dataset_bytes + RUN_FILES_BYTES


def _refusal(job: SetupSearch, candidates: list[Profile], seq_len: int) -> str:
    """Nothing fits: what the leanest option needs, and the nearest thing that would work."""
    where = "the CPU" if job.inventory.is_cpu else f"{len(job.inventory.gpus)}× {job.inventory.gpus[0].name}"
    leanest = candidates[-1]
    setup = job.setups(leanest)[-1]
    needed = job.estimate(leanest, setup, seq_len).peak_bytes
    message = (
        f"{job.model.source} does not fit {where}: even {leanest.name} needs {gib(needed)} per device, {gib(job.budget)} usable"
    )
    nearest = []
    shorter = [n for n in SHORTER_LENGTHS if n < seq_len and job.estimate(leanest, setup, n).peak_bytes <= job.budget]
    if shorter:
        nearest.append(
            f"samples of at most {shorter[0]} tokens (a recipe with max_length {shorter[0]}, or --dataset with shorter rows)"
        )
    if job.inventory.is_cpu:
        nearest.append("the CPU demo's tiny model (`make demo`), or a GPU: see a card's plan with --gpus rtx4090")
    if not job.inventory.is_cpu and needed / (1 - MARGIN_FRACTION) <= LARGEST_CARD_BYTES:
        nearest.append(f"a GPU with at least {math.ceil(needed / (1 - MARGIN_FRACTION) / GIB)} GiB")
    if not job.inventory.is_cpu:
        nearest += _more_gpus(job, seq_len)
    return f"{message}; would fit: {' or '.join(nearest)}" if nearest else message


def _more_gpus(job: SetupSearch, seq_len: int) -> list[str]:
    """The fewest of these cards that ZeRO-3 (or zero3_offload) fits; for full fine-tuning, LoRA here if it fits."""
    card, options = job.inventory.gpus[0].name, []
    for n in (2, 4, 8, 16, 32, 64) if job.recipe.tuner == "full" else (2, 4, 8):  # LoRA: one node's cards at most
        if n <= job.n_devices:
            continue
        fitting = [
            z
            for z in (("zero3", "zero3_offload") if job.recipe.tuner == "full" else ("zero3",))  # host memory: full only
            if estimate(job.train_setup(Setup(1, True, z), seq_len, n_gpus=n)).peak_bytes <= job.budget
        ]
        if fitting:
            host = host_bytes(job.train_setup(Setup(1, True, fitting[0]), seq_len, n_gpus=n))  # n cards of one node
            pinned = f" and {math.ceil(host / GIB)} GiB of host memory" if host else ""
            options.append(f"{n}× {card} with {fitting[0]}{pinned}")
            break
    if job.recipe.tuner != "full":
        return options
    # QLoRA at micro-batch 1 with checkpointing is the leanest LoRA: name LoRA only if that fits.
    lora = replace(job, recipe=replace(job.recipe, tuner="lora"))
    if estimate(lora.train_setup(Setup(1, True), seq_len, "nf4")).peak_bytes <= job.budget:
        options.append("LoRA on these cards (--tuner lora)")
    return options


def _describe_devices(inventory: Inventory, budget: int, nodes: Nodes) -> str:
    if inventory.is_cpu:
        processes = f", {inventory.cpu_processes} processes (torchrun over gloo)" if inventory.cpu_processes > 1 else ""
        return f"device: CPU with {gib(inventory.host_memory_bytes)} RAM{processes}, {gib(budget)} usable"
    names = " + ".join(sorted({g.name for g in inventory.gpus}))
    where = f" on each of {nodes.count} nodes (this is node {nodes.rank})" if nodes.count > 1 else ""
    return f"devices: {len(inventory.gpus)}× {names}{where}, {gib(budget)} usable per device"


def assemble(job: SetupSearch, profile, setup, est, data, seq_len, dataset_path, output_dir, reasons, machine) -> Plan:
    flash_ok = machine.flash_attn_installed and not job.inventory.is_cpu and all(g.bf16 for g in job.inventory.gpus)
    # Packed rows need a varlen kernel: flash-attn's where it is installed (swift takes it as it is), else torch's own.
    if flash_ok and (setup.packing or profile.attention == "flash_attn"):
        attention = "flash_attn"
    else:
        attention = "torch_varlen" if setup.packing else "sdpa"
    plan = Plan(
        recipe=job.recipe,
        model=job.model,
        inventory=job.inventory,
        profile=profile,
        setup=setup,
        dtype=job.dtype,
        attention=attention,
        data=data,
        seq_len=seq_len,
        estimate=est,
        budget_bytes=job.budget,
        dataset_path=dataset_path,
        output_dir=output_dir,
        reasons=tuple(reasons),
        nodes=job.nodes,
        bytecode_cache=machine.bytecode_cache,
        # The time model is calibrated on GPUs; on the CPU it would say nothing true.
        step_seconds=None if job.inventory.is_cpu else round(job.step_time(profile, setup, seq_len).seconds, 3),
        linear_attention=job.linear_attention if job.model.shape.is_hybrid else None,
    )
    if plan.linear_attention:
        s = job.model.shape
        path = "flash-linear-attention's Triton kernels" if plan.linear_attention == "fla" else "transformers' torch path"
        plan = replace(
            plan, reasons=(*plan.reasons, f"linear attention ({s.linear_layers} of {s.num_layers} layers Gated DeltaNet): {path}")
        )
    if setup.zero == "zero3_offload":
        host = job.host_bytes_per_node(setup)
        known = (
            f" of {gib(job.inventory.host_memory_bytes)}"
            if job.inventory.host_memory_bytes
            else " (RAM not known here: check it)"
        )
        plan = replace(plan, reasons=(*plan.reasons, f"zero3_offload pins {gib(host)} of host memory on each node{known}"))
    warnings = []
    if not plan.fits:
        warnings.append(
            f"the estimate does not fit: needs {gib(est.peak_bytes)} > {gib(job.budget)} usable; expect out-of-memory"
        )
    elif job.budget - est.peak_bytes < TIGHT_BYTES and not job.inventory.is_cpu:
        warnings.append(
            f"tight fit, {gib(job.budget - est.peak_bytes)} to spare: close other programs on the GPU (a desktop's display too)"
        )
    warnings += [f"{busy}: the run would run out of memory" for busy in plan.busy_gpus()]
    if plan.linear_attention == "torch" and not job.inventory.is_cpu:
        warnings.append(linear_attention_warning())
    if data.how == "max_length":
        warnings.append(
            f"no dataset: memory is estimated for max_length {job.recipe.max_length}; pass --dataset for your real lengths"
        )
    if job.recipe.tuner == "full" and job.recipe.learning_rate > FULL_MAX_LEARNING_RATE:
        warnings.append(
            f"learning rate {job.recipe.learning_rate:g} is a LoRA rate: full fine-tuning usually takes 1e-5 to 2e-5 (set it in the recipe)"
        )
    if data.max_tokens > job.recipe.max_length:
        warnings.append(f"the longest sample has {data.max_tokens} tokens, over max_length {job.recipe.max_length}")
    if plan.effective_batch != job.recipe.effective_batch_size and not setup.packing:
        warnings.append(
            f"effective batch {plan.effective_batch}, not {job.recipe.effective_batch_size}: it does not divide over {plan.n_devices} devices"
        )
    return replace(plan, warnings=tuple(warnings))
