"""The planner: inventory + recipe + model + data → a Plan, a value that renders swift's argv.

Pure: everything it needs from the box (GPUs, flash-attn) is passed in, so every card in
cards.py can be planned and golden-tested anywhere.
"""

from __future__ import annotations

import math
import shlex
from dataclasses import asdict, dataclass, replace

from qwen_tune.cards import KNOWN_CARDS
from qwen_tune.errors import DoesNotFit, UsageError
from qwen_tune.gpus import GIB, MIB, Inventory
from qwen_tune.memory import MemoryEstimate, Tuner, checkpoint_bytes, estimate, host_bytes, train_setup
from qwen_tune.models import ModelRef
from qwen_tune.profiles import Profile
from qwen_tune.recipes import Recipe

# Headroom kept free on every GPU: estimator error and allocator fragmentation.
MARGIN_FRACTION = 0.03
CPU_USABLE_FRACTION = 0.8
TIGHT_BYTES = int(0.5 * GIB)
# A refusal names a bigger GPU only where one is sold.
LARGEST_CARD_BYTES = max(c.memory_mib for c in KNOWN_CARDS) * MIB
# zero3_offload is not offered for LoRA: under 22.5 GiB/GPU it ran out of memory in the first forward
# exactly like zero3 for Qwen3-14B (shared/measurements/2026-11-22-2xh200), so it buys nothing.
ZERO_STAGES = ("zero2", "zero3")
# Full fine-tuning's optimizer state is 8× its weights: moving it to host memory is its last rung.
FULL_ZERO_STAGES = (*ZERO_STAGES, "zero3_offload")
# Host memory zero3_offload may pin, of the RAM this box reports.
HOST_USABLE_FRACTION = 0.8
# Above this a full fine-tuning learning rate is a LoRA one: it wrecks what the model knew.
FULL_MAX_LEARNING_RATE = 5e-5
SHORTER_LENGTHS = (1024, 512, 256, 128)
# swift keeps the newest checkpoints only (--save_total_limit).
SAVE_TOTAL_LIMIT = 2
# swift.log, logging.jsonl, the plan, the loss plot and the identity check's files, with room to spare.
RUN_FILES_BYTES = 50 * MIB


@dataclass(frozen=True)
class Environment:
    """Facts about this box that change the command, gathered at the edge (jobs.py)."""

    flash_attn_installed: bool = False
    bytecode_cache: str | None = None  # where swift's processes keep compiled imports (jobs.bytecode_cache)


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
    how: str  # tokenized | estimated | max_length


@dataclass(frozen=True)
class Setup:
    """One way to run the job: the knobs a profile leaves free, filled in."""

    micro_batch_size: int
    gradient_checkpointing: bool
    zero: str = ""  # "" | zero2 | zero3 | zero3_offload (full fine-tuning only)

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
    dtype: str
    attention: str
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

    @property
    def n_devices(self) -> int:
        """Data-parallel ranks: GPUs on this node times nodes."""
        return max(1, len(self.inventory.gpus)) * self.nodes.count

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
        """A checkpoint every ~10% of training, so an interrupted run resumes close to where it stopped."""
        return None if self.total_steps is None else max(1, math.ceil(self.total_steps / 10))

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

    @property
    def argv(self) -> list[str]:
        return swift_argv(self)

    @property
    def env(self) -> dict[str, str]:
        return swift_env(self)

    def shell_command(self) -> str:
        """The exact command, shell-quoted, to read or paste."""
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env.items())
        return f"{env} {shlex.join(self.argv)}".strip()

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
            env=self.env,
            argv=self.argv,
            shell_command=self.shell_command(),
        )
        return data


def gib(n: float) -> str:
    return f"{n / GIB:.2f} GiB"


def budget_bytes(inventory: Inventory) -> int:
    """What one device may use: the smallest card less a safety margin, or most of the RAM."""
    if inventory.is_cpu:
        return int(inventory.host_memory_bytes * CPU_USABLE_FRACTION)
    return int(min(g.total_bytes for g in inventory.gpus) * (1 - MARGIN_FRACTION))


def training_dtype(inventory: Inventory) -> str:
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
class _Job:
    """What stays fixed while the chooser tries profiles and setups."""

    recipe: Recipe
    model: ModelRef
    inventory: Inventory
    dtype: str
    budget: int
    nodes: Nodes

    @property
    def n_devices(self) -> int:
        return max(1, len(self.inventory.gpus)) * self.nodes.count

    def micro_batches(self) -> list[int]:
        """Micro-batches that keep the effective batch exact: divisors of one device's share, largest first."""
        per_device = math.ceil(self.recipe.effective_batch_size / self.n_devices)
        return [m for m in range(per_device, 0, -1) if per_device % m == 0]

    def setups(self, profile: Profile) -> list[Setup]:
        """Every way the profile allows, fastest first: less sharding, no recomputation, bigger micro-batches."""
        if profile.micro_batch_size == "max":
            micro_batches = self.micro_batches()
        else:
            micro_batches = [min(profile.micro_batch_size, self.micro_batches()[0])]
        checkpointing = [False, True] if profile.gradient_checkpointing == "auto" else [profile.gradient_checkpointing]
        stages = FULL_ZERO_STAGES if self.recipe.tuner == "full" else ZERO_STAGES
        zeros = stages if profile.deepspeed == "auto" and self.n_devices > 1 else ("",)
        return [Setup(m, c, z) for z in zeros for c in checkpointing for m in micro_batches]

    def fits(self, est: MemoryEstimate, setup: Setup) -> bool:
        """The estimate fits every device, and what zero3_offload pins fits the host (when its RAM is known)."""
        host = self.host_bytes_per_node(setup)
        host_ok = not host or not self.inventory.host_memory_bytes
        host_ok = host_ok or host <= self.inventory.host_memory_bytes * HOST_USABLE_FRACTION
        return est.peak_bytes <= self.budget and host_ok

    def host_bytes_per_node(self, setup: Setup, n_gpus: int | None = None) -> int:
        """What zero3_offload pins in one node's RAM: its GPUs' share of the model and optimizer."""
        n_gpus = n_gpus or self.n_devices
        return host_bytes(self._setup(setup, 1, n_gpus=n_gpus)) * min(n_gpus, max(1, len(self.inventory.gpus))) // n_gpus

    def _setup(self, setup: Setup, seq_len: int, quantization: str = "none", n_gpus: int | None = None):
        return train_setup(
            dtype=self.dtype,
            quantization=quantization,
            zero=setup.zero,
            shape=self.model.shape,
            lora_rank=self.recipe.lora_rank,
            micro_batch_size=setup.micro_batch_size,
            seq_len=seq_len,
            gradient_checkpointing=setup.gradient_checkpointing,
            n_gpus=n_gpus or self.n_devices,
            on_cpu=self.inventory.is_cpu,
            tuner=self.recipe.tuner,
        )

    def estimate(self, profile: Profile, setup: Setup, seq_len: int, n_gpus: int | None = None) -> MemoryEstimate:
        return estimate(self._setup(setup, seq_len, profile.quantization, n_gpus))


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
    environment: Environment = Environment(),
    nodes: Nodes = Nodes(),
) -> Plan:
    """Try the profiles in order of preference; keep the first setup whose estimate fits every device."""
    nodes.check()
    job = _Job(recipe, model, inventory, training_dtype(inventory), budget_bytes(inventory), nodes)
    seq_len = min(data.max_tokens, recipe.max_length)
    reasons = [_describe_devices(inventory, job.budget, nodes)]
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

    tried = None
    for profile in candidates:
        for setup in job.setups(profile):
            tried = (profile, setup, job.estimate(profile, setup, seq_len))
            if job.fits(tried[2], setup):
                reasons.append(
                    f"chose {profile.name} ({setup.describe(profile)}): needs {gib(tried[2].peak_bytes)} of {gib(job.budget)} usable"
                )
                return _finish(job, *tried, data, seq_len, dataset_path, output_dir, reasons, environment)
        if forced_profile is None:
            reasons.append(
                f"skipped {profile.name}: needs {gib(tried[2].peak_bytes)} > {gib(job.budget)} usable even at {tried[1].describe(profile)}"
            )
    if forced_profile is not None and tried is not None:
        return _finish(job, *tried, data, seq_len, dataset_path, output_dir, reasons, environment)
    raise DoesNotFit(_refusal(job, candidates or profiles, seq_len))


def fallback(plan: Plan, profiles: list[Profile]) -> tuple[Plan, str] | None:
    """The next rung of the out-of-memory ladder and what it changes; None when no rung is left.

    Cheapest first: halve the micro-batch (more grad-accum, the same effective batch), turn gradient
    checkpointing on, shard with zero3 instead of zero2, then 4-bit QLoRA at micro-batch 1.
    max_length is no rung: swift pads each batch to its longest sample, so lowering it saves
    nothing unless it cuts samples, which would change what is learned.
    """
    job = _Job(plan.recipe, plan.model, plan.inventory, plan.dtype, plan.budget_bytes, plan.nodes)
    s, profile = plan.setup, plan.profile
    smaller = [m for m in job.micro_batches() if m <= s.micro_batch_size // 2]
    if smaller:
        setup, change = replace(s, micro_batch_size=smaller[0]), f"micro-batch {s.micro_batch_size} → {smaller[0]}"
    elif not s.gradient_checkpointing:
        setup, change = replace(s, gradient_checkpointing=True), "gradient checkpointing on"
    elif s.zero == "zero2":
        setup, change = replace(s, zero="zero3"), "DeepSpeed zero2 → zero3"
    elif s.zero == "zero3" and plan.recipe.tuner == "full":
        setup, change = replace(s, zero="zero3_offload"), "DeepSpeed zero3 → zero3_offload"
    elif plan.recipe.tuner == "full":
        return None  # QLoRA would train an adapter, not the model that was asked for
    elif profile.quantization != "nf4" and not plan.inventory.is_cpu:
        qlora = [p for p in profiles if p.quantization == "nf4"]
        if not qlora:
            return None
        # bitsandbytes' 4-bit weights do not shard under ZeRO-3: QLoRA on several GPUs is plain data parallel.
        profile, setup, change = qlora[0], Setup(1, True), "4-bit QLoRA, micro-batch 1, checkpointing on"
    else:
        return None
    est = job.estimate(profile, setup, plan.seq_len)
    reasons = (
        *plan.reasons,
        f"out of memory with {plan.setup.describe(plan.profile)}: retrying with {change} (needs {gib(est.peak_bytes)})",
    )
    environment = Environment(flash_attn_installed=plan.attention == "flash_attn", bytecode_cache=plan.bytecode_cache)
    return _finish(
        job, profile, setup, est, plan.data, plan.seq_len, plan.dataset_path, plan.output_dir, list(reasons), environment
    ), change


def disk_bytes_needed(plan: Plan, dataset_bytes: int) -> int:
    """What a run writes under --output-dir at its fullest: the checkpoints swift keeps plus the one
    it is saving before it deletes the oldest, the filled dataset copy, and the run's own files."""
    checkpoint = checkpoint_bytes(plan.model.shape, plan.recipe.lora_rank, zero=bool(plan.setup.zero), tuner=plan.recipe.tuner)
    return checkpoint * (SAVE_TOTAL_LIMIT + 1) + dataset_bytes + RUN_FILES_BYTES


def _refusal(job: _Job, candidates: list[Profile], seq_len: int) -> str:
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
    if not job.inventory.is_cpu and needed / (1 - MARGIN_FRACTION) <= LARGEST_CARD_BYTES:
        nearest.append(f"a GPU with at least {math.ceil(needed / (1 - MARGIN_FRACTION) / GIB)} GiB")
    if not job.inventory.is_cpu and job.recipe.tuner == "full":
        nearest += _more_gpus(job, seq_len)
    return f"{message}; would fit: {' or '.join(nearest)}" if nearest else message


def _more_gpus(job: _Job, seq_len: int) -> list[str]:
    """For full fine-tuning: the fewest of these cards that ZeRO-3 (or zero3_offload) fits, and LoRA here if it fits."""
    card, options = job.inventory.gpus[0].name, []
    for n in (2, 4, 8, 16, 32, 64):
        if n <= job.n_devices:
            continue
        fitting = [
            z
            for z in ("zero3", "zero3_offload")
            if estimate(job._setup(Setup(1, True, z), seq_len, n_gpus=n)).peak_bytes <= job.budget
        ]
        if fitting:
            host = host_bytes(job._setup(Setup(1, True, fitting[0]), seq_len, n_gpus=n))  # n cards of one node
            pinned = f" and {math.ceil(host / GIB)} GiB of host memory" if host else ""
            options.append(f"{n}× {card} with {fitting[0]}{pinned}")
            break
    # QLoRA at micro-batch 1 with checkpointing is the leanest LoRA: name LoRA only if that fits.
    lora = replace(job, recipe=replace(job.recipe, tuner="lora"))
    if estimate(lora._setup(Setup(1, True), seq_len, "nf4")).peak_bytes <= job.budget:
        options.append("LoRA on these cards (--tuner lora)")
    return options


def _describe_devices(inventory: Inventory, budget: int, nodes: Nodes) -> str:
    if inventory.is_cpu:
        return f"device: CPU with {gib(inventory.host_memory_bytes)} RAM, {gib(budget)} usable"
    names = " + ".join(sorted({g.name for g in inventory.gpus}))
    where = f" on each of {nodes.count} nodes (this is node {nodes.rank})" if nodes.count > 1 else ""
    return f"devices: {len(inventory.gpus)}× {names}{where}, {gib(budget)} usable per device"


def _finish(job: _Job, profile, setup, est, data, seq_len, dataset_path, output_dir, reasons, environment) -> Plan:
    flash_ok = environment.flash_attn_installed and not job.inventory.is_cpu and all(g.bf16 for g in job.inventory.gpus)
    attention = "flash_attn" if profile.attention == "flash_attn" and flash_ok else "sdpa"
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
        bytecode_cache=environment.bytecode_cache,
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
    if plan.effective_batch != job.recipe.effective_batch_size:
        warnings.append(
            f"effective batch {plan.effective_batch}, not {job.recipe.effective_batch_size}: it does not divide over {plan.n_devices} devices"
        )
    return replace(plan, warnings=tuple(warnings))


def swift_argv(plan: Plan) -> list[str]:
    """The `swift sft` command line; CI checks every flag against swift's own parser."""
    r, s = plan.recipe, plan.setup
    argv = ["swift", "sft", "--model", plan.model.source]
    if plan.model.swift_model_type:
        argv += ["--model_type", plan.model.swift_model_type, "--template", plan.model.swift_template]
    if plan.model.local_dir:
        argv += ["--check_model", "false"]
    argv += ["--dataset", plan.dataset_path, "--system", r.system, "--tuner_type", r.tuner, "--torch_dtype", plan.dtype]
    if plan.profile.quantization == "nf4":
        argv += [
            "--quant_method", "bnb",
            "--quant_bits", "4",
            "--bnb_4bit_quant_type", "nf4",
            "--bnb_4bit_use_double_quant", "true",
            "--bnb_4bit_compute_dtype", plan.dtype,
        ]  # fmt: skip
    argv += [
        "--num_train_epochs", f"{r.epochs:g}",
        "--per_device_train_batch_size", str(s.micro_batch_size),
        "--gradient_accumulation_steps", str(plan.grad_accum),
        "--learning_rate", f"{r.learning_rate:g}",
    ]  # fmt: skip
    if r.tuner == "lora":
        argv += [
            "--lora_rank", str(r.lora_rank),
            "--lora_alpha", str(r.lora_alpha),
            "--lora_dropout", f"{r.lora_dropout:g}",
            "--target_modules", r.target_modules,
        ]  # fmt: skip
    argv += [
        "--max_length", str(r.max_length),
        "--warmup_ratio", f"{r.warmup_ratio:g}",
        "--gradient_checkpointing", "true" if s.gradient_checkpointing else "false",
        "--attn_impl", plan.attention,
    ]  # fmt: skip
    if s.zero:
        argv += ["--deepspeed", s.zero]
    if plan.save_steps:
        argv += ["--save_steps", str(plan.save_steps)]
    argv += [
        "--split_dataset_ratio", "0",
        "--eval_strategy", "no",
        "--save_total_limit", str(SAVE_TOTAL_LIMIT),
        "--logging_steps", "1",
        "--dataloader_num_workers", "0",
        "--report_to", "none",
        "--add_version", "false",
        "--output_dir", plan.output_dir,
    ]  # fmt: skip
    return argv


def swift_env(plan: Plan) -> dict[str, str]:
    if plan.inventory.is_cpu:
        env = {"CUDA_VISIBLE_DEVICES": ""}
    else:
        # NVML and nvidia-smi number GPUs in PCI bus order; CUDA must too, or indices drift.
        env = {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": ",".join(str(g.index) for g in plan.inventory.gpus)}
    if plan.n_devices > 1:
        env["NPROC_PER_NODE"] = str(max(1, len(plan.inventory.gpus)))
    if plan.nodes.count > 1:
        env.update(NNODES=str(plan.nodes.count), NODE_RANK=str(plan.nodes.rank), MASTER_ADDR=plan.nodes.master_addr)
        if plan.nodes.master_port:
            env["MASTER_PORT"] = str(plan.nodes.master_port)
    if not plan.inventory.is_cpu:
        # Many short, differently padded batches fragment the caching allocator; growable segments
        # keep the reserved pool near what is allocated, which is what the estimate predicts.
        env["PYTORCH_CUDA_ALLOC_CONF"] = "expandable_segments:True"
    if plan.model.local_dir:
        env["HF_HUB_OFFLINE"] = "1"
    if plan.bytecode_cache:
        # This Python writes no bytecode: without a cache of our own, each swift process compiles its imports again.
        env.update(PYTHONDONTWRITEBYTECODE="", PYTHONPYCACHEPREFIX=plan.bytecode_cache)
    return env
