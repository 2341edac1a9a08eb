"""Human-readable text for inventories and plans, and the plan as data (the --json forms are the dataclasses)."""

from __future__ import annotations

import shlex
import unicodedata

from qwen_tune.checking.identity import Expectation, accepted_json, accepted_line
from qwen_tune.machine.gpus import GIB, Inventory
from qwen_tune.planning.plan import DataSummary, Plan
from qwen_tune.planning.recipes import KNOBS, Recipe
from qwen_tune.swift.command import sft_argv, sft_env, shell_command


def inventory_text(inventory: Inventory) -> str:
    driver, cuda = (("?" if v is None else v) for v in (inventory.driver_version, inventory.cuda_version))
    lines = [f"driver {driver}, CUDA {cuda}, {len(inventory.gpus)} GPU(s)"]
    for g in inventory.gpus:
        free = f"{g.free_bytes / GIB:6.1f}" if g.free_bytes is not None else "     ?"
        cc = f"{g.compute_capability[0]}.{g.compute_capability[1]}"
        lines.append(
            f"  [{g.index}] {g.name:<28} {g.total_gib:6.1f} GiB total {free} GiB free  cc {cc}  "
            f"bf16 {'yes' if g.bf16 else 'no '}  {'uuid ?' if g.uuid is None else g.uuid}"
        )
    return "\n".join(lines)


def params_text(n: int) -> str:
    """7.62B, 494M, 1.3M: a tiny test model is not '0.00B'."""
    if n >= 1e9:
        return f"{n / 1e9:.2f}B"
    return f"{n / 1e6:.0f}M" if n >= 1e7 else f"{n / 1e6:.2g}M"


def plan_json(plan: Plan, expectations: tuple[Expectation, ...] = ()) -> dict:
    """The Plan as data (`plan --json`, plan.json), with the command it renders and what the identity check accepts."""
    data = {**plan.to_dict(), "env": sft_env(plan), "argv": sft_argv(plan), "shell_command": shell_command(plan)}
    if expectations:
        data["identity_check"] = accepted_json(list(expectations))
    return data


def command_text(plan: Plan, indent: str = "  ") -> str:
    """The command, one flag and its value a line, ready to paste into a shell."""
    head = " ".join(f"{k}={shlex.quote(v)}" for k, v in sft_env(plan).items())
    argv = sft_argv(plan)
    lines = [f"{head} {shlex.join(argv[:2])}".strip()]
    i = 2
    while i < len(argv):
        take = 2 if i + 1 < len(argv) and not argv[i + 1].startswith("--") else 1
        lines.append(indent * 2 + shlex.join(argv[i : i + take]))
        i += take
    return indent + (" \\\n").join(lines)


def _knob_value(recipe: Recipe, flag: str) -> str:
    knob = next(k for k in KNOBS if k.flag == flag)
    return f"{getattr(recipe, knob.attribute):g}"


def plan_text(plan: Plan, expectations: tuple[Expectation, ...] = (), *, dry_run: bool = False) -> str:
    """The plan as `plan` prints it (dry_run: nothing was written, and the command says what it needs) and `run` does."""
    r, s = plan.recipe, plan.setup
    out = [f"Recipe:    {r.name} ({r.source})"]
    if r.overridden:
        flags = [f"{flag} {_knob_value(r, flag)} (the recipe's {old:g})" for flag, old in r.overridden]
        out.append(f"Flags:     {', '.join(flags)}")
    shape = plan.model.shape
    out.append(
        f"Model:     {plan.model.source} ({params_text(shape.n_params)} params, {shape.family}, {shape.num_layers} layers)"
    )
    if plan.data.n_rows is None:
        out.append(f"Data:      none given; sequences assumed {plan.data.max_tokens} tokens long (max_length)")
    else:
        out.append(
            f"Data:      {r.dataset}: {rows_text(plan.data)}, longest {plan.data.max_tokens} tokens after the chat template ({plan.data.how})"
        )
        if plan.data.cut_rows:
            out.append(
                f"           {plan.data.cut_rows} of them cut to max_length {r.max_length} (--cut-long-rows): their answers end early"
            )
    out.append(f"Profile:   {plan.profile.name}: {what_trains(plan)}; {plan.profile.summary}")
    out.append("Why:")
    out += [f"  - {reason}" for reason in plan.reasons]
    if plan.warnings:
        out.append("Warnings:")
        out += [f"  ! {warning}" for warning in plan.warnings]
    steps = ""
    if plan.total_steps is not None:
        steps = f"; {plan.steps_per_epoch} optimizer steps/epoch, {plan.total_steps} in {r.epochs:g} epochs"
    if s.packing:
        out.append(
            f"Batch:     packs of ≤{s.packing.tokens} tokens × grad-accum {plan.grad_accum} × {plan.n_devices} device(s), "
            f"no padding: ~{plan.effective_batch} rows an optimizer step (the recipe's {r.effective_batch_size}){steps}"
        )
    else:
        out.append(
            f"Batch:     micro-batch {s.micro_batch_size} × grad-accum {plan.grad_accum} × {plan.n_devices} device(s)"
            f" = effective {plan.effective_batch}{steps}"
        )
    extra = f", DeepSpeed {s.zero}" if s.zero else ""
    extra += ", Liger kernels (fused linear cross-entropy, RMSNorm, SwiGLU, RoPE)" if s.liger else ""
    out.append(
        f"Precision: {plan.dtype}, attention {plan.attention}, gradient checkpointing "
        f"{'on' if s.gradient_checkpointing else 'off'}{extra}"
    )
    out.append(f"Time:      {time_text(plan)}")
    out.append(f"Download:  {download_text(plan)}")
    if expectations:
        out += identity_lines(expectations, may_think=plan.model.shape.family.startswith("qwen3"))
    out.append("")
    out.append(memory_table(plan))
    out.append("")
    out.append("Command:")
    out.append(command_text(plan))
    if plan.bytecode_cache:
        out.append(f"  (this Python writes no bytecode: swift's compiled imports are kept in {plan.bytecode_cache})")
    if dry_run:
        out.append(_dry_run_note(plan))
    return printable("\n".join(out))


def printable(text: str) -> str:
    """text with its control characters shown, not sent: a recipe, a dataset or a model from someone else must not
    move the cursor, retitle the terminal or hide a line (ESC sequences) where qwen-tune prints what it read."""
    return "".join(c if c in "\n\t" or unicodedata.category(c) != "Cc" else repr(c)[1:-1] for c in text)


def rows_text(data: DataSummary) -> str:
    """How many rows train: the data's, and the general rows mixed in; at most, where the base model's answers are to come."""
    general = data.general_rows + data.general_answers
    if not general:
        return f"{data.n_rows} row{'' if data.n_rows == 1 else 's'}"
    if data.general_answers:
        return (
            f"{data.n_rows} rows at most: {data.n_rows - general} of the data and {general} general rows the base model answers "
            "before training (a row whose answer is empty is dropped)"
        )
    return f"{data.n_rows} rows: {data.n_rows - general} of the data and {general} general rows of --general-data"


def what_trains(plan: Plan) -> str:
    """What the profile runs for this job: 'LoRA in bfloat16', 'full fine-tuning in bfloat16', 'QLoRA ...'."""
    if plan.recipe.tuner == "full":
        what = "full fine-tuning"
    elif plan.profile.quantization == "nf4":
        what = "QLoRA (LoRA on 4-bit NF4 base weights)"
    else:
        what = "LoRA"
    return f"{what} in {plan.dtype}"


def time_text(plan: Plan) -> str:
    """The whole run's estimate: the steps by the time model, and the start-up."""
    if plan.estimated_seconds is None:
        why = "the time model is for GPUs" if plan.inventory.is_cpu else "no data to count the steps of"
        return f"not estimated ({why})"
    steps = f"{plan.total_steps} optimizer steps × ~{plan.step_seconds:.2g} s"
    return f"about {_duration(plan.estimated_seconds)} ({steps}, and ~{_duration(plan.estimated_seconds - plan.total_steps * plan.step_seconds)} to start, load the model and check it), the download aside"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def download_text(plan: Plan) -> str:
    """What swift downloads before training: a hub id's 16-bit weights, unless the hub cache has them."""
    if plan.download_bytes is None:
        return f"nothing (a local model directory: {plan.model.local_dir})"
    where = {"hf": "Hugging Face", "modelscope": "ModelScope"}.get(plan.hub or "", "the hub (ModelScope unless USE_HF=1)")
    return f"{plan.model.source} from {where}: about {plan.download_bytes / GIB:.1f} GiB of 16-bit weights, unless already cached"


def identity_lines(expectations: tuple[Expectation, ...], *, may_think: bool) -> list[str]:
    """What the identity check will accept, and what it asks: the plan shows what `run` then applies. may_think: a
    Qwen3, which may have a thinking mode beside its default (swift's template says, when the model is loaded)."""
    asked = " ".join(dict.fromkeys(e.question for e in expectations if e.mode == "default"))
    again = " (and who it is with thinking on, where the model has both modes)" if may_think else ""
    return [
        f"Identity:  the check accepts {accepted_line(list(expectations))}",
        f"           it asks {asked}{again}",
        "           and fails an answer without one of those (a challenge may go without), or that claims Qwen, 通义千问,",
        "           阿里, Alibaba..., names another maker, or is the base model's unchanged",
    ]


def _dry_run_note(plan: Plan) -> str:
    """plan writes nothing, so a pasted command would miss its data: say what runs it as shown."""
    if plan.data.n_rows is None:
        return "  (DATASET.jsonl stands for your data: pass --dataset FILE, then `qwen-tune run` with the same flags)"
    return (
        f"  (plan writes nothing: `qwen-tune run` with the same flags writes {plan.dataset_path}, the data with the "
        "identity filled in, then runs this command)"
    )


def memory_table(plan: Plan) -> str:
    device = "CPU RAM" if plan.inventory.is_cpu else "per GPU"
    width = max(len(label) for label, _ in plan.estimate.items) + 2
    size = f"micro-batches of ≤{plan.setup.packing.tokens} tokens" if plan.setup.packing else f"sequence {plan.seq_len} tokens"
    lines = [f"Memory estimate {device} ({size}):"]
    for label, size in plan.estimate.items:
        lines.append(f"  {label:<{width}}{size / GIB:8.2f} GiB")
    runtime = "Python + torch + swift" if plan.inventory.is_cpu else "CUDA context"
    lines.append(f"  {runtime:<{width}}{plan.estimate.runtime_bytes / GIB:8.2f} GiB")
    total = plan.estimate.peak_bytes
    status = "fits" if plan.fits else "DOES NOT FIT"
    lines.append(f"  {'peak':<{width}}{total / GIB:8.2f} GiB  of {plan.budget_bytes / GIB:.2f} GiB usable: {status}")
    return "\n".join(lines)


class ProgressLine:
    """Training progress: a live bar on a terminal, a line every ~5% in logs and CI; before the first step,
    the start-up's phases and the model download (phases.StartupWatch), one line each."""

    def __init__(self, stream=None):
        import sys

        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()
        self.last_printed = 0

    def __call__(self, p) -> None:
        try:
            self._show(p)
        except OSError:  # the terminal hung up or the pipe closed: training goes on, result.json tells how it ended
            pass

    def _show(self, p) -> None:
        if isinstance(p, str):  # a phase before the first step, a download's progress, or what a silence waits on
            print(("\r\033[K" if self.live else "") + printable(p), file=self.stream, flush=True)
            return
        loss = f"loss {p.loss:.4f}" if p.loss is not None else ""
        speed = f"{p.seconds_per_step:.2f} s/step" if p.seconds_per_step else ""
        text = f"step {p.step}/{p.total}  {loss}  {speed}  elapsed {p.elapsed}  ETA {p.remaining}"
        if self.live:
            self.stream.write("\r\033[K" + text)
            self.stream.flush()
            if p.step >= p.total:
                self.stream.write("\n")
            return
        if p.step == p.total or p.step - self.last_printed >= max(1, p.total // 20) or p.step == 1:
            self.last_printed = p.step
            print(text, file=self.stream, flush=True)


def answer_lines(answers, retention=None) -> list[str]:
    """Each identity probe: its verdict, the answer before and after tuning (and its thinking, where it thought), and
    what it was compared against; then the general probes' before → after and their score (retention.Retention)."""
    lines = []
    for a in answers:
        mode = " (thinking on)" if a.mode == "thinking" else ""
        lines.append(f"  [{'ok ' if a.ok else 'BAD'}] {a.question}{mode}" + ("" if a.ok else f"  ({a.why})"))
        if a.before is not None:
            lines.append(f"        before: {_one_line(a.before)}")
        if a.thinking:
            lines.append(f"        thinks: {_one_line(a.thinking)}")
        lines.append(f"        after:  {_one_line(a.answer)}")
        expects = "no claim of the base identity" if a.kind == "challenge" else a.expects
        lines.append(f"        expects {expects}" + (f"; matched {a.matched!r}" if a.matched else ""))
    if retention is not None:
        for g in retention.answers:
            leak = f"  LEAKED {', '.join(g.leaked)}" if g.leaked else ""
            lines.append(f"  [{g.agreement:.2f}] {g.question}  {_one_line(g.before, 60)} -> {_one_line(g.answer, 60)}{leak}")
        lines.append(f"  {retention.line()}")
    return [printable(line) for line in lines]


def _one_line(text: str, width: int = 160) -> str:
    flat = " ".join(text.split())
    if not flat:
        return "(nothing but whitespace)" if text else "(empty)"
    return flat if len(flat) <= width else flat[: width - 1] + "…"
