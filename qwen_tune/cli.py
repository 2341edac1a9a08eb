"""The `qwen-tune` command: a thin click layer over jobs (plan), attempts (run) and export."""

from __future__ import annotations

import errno
import json
import os
import signal
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING

import click

from qwen_tune.errors import DiskSpaceError, IdentityCheckFailed, Interrupted, OutputError, UsageError, UserError
from qwen_tune.planning.jobs import JobOptions
from qwen_tune.planning.recipes import KNOBS, Knob

if TYPE_CHECKING:
    from qwen_tune.running.outcome import RunOutcome


def _not_empty(fallback: str):
    """An empty value would quietly mean the default (an empty --name trains the recipe's identity): refused."""

    def check(context, parameter, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise click.BadParameter(f"must not be empty; leave the flag out {fallback}", context, parameter)
        return value

    return check


def _epilog(examples: tuple[str, ...], *notes: str) -> str:
    """Examples that run as printed, then what a flag can name; \b keeps click from rewrapping them."""
    lines = ["\b", "Examples:", *(f"  {example}" for example in examples)]
    for note in notes:
        lines += ["", "\b", note]
    return "\n".join(lines)


class RecipeValue(click.ParamType):
    """A flag that overrides a recipe field, under that field's own rules (the recipe model's constraints)."""

    def __init__(self, knob: Knob):
        self.knob = knob
        self.name = "integer" if knob.rules.info.annotation is int else "number"

    def convert(self, value, param, ctx):
        try:
            return value if value is None else self.knob.rules.check(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def _knob_help(knob: Knob) -> str:
    rules = knob.rules
    return f"{rules.info.description} Overrides the recipe's {rules.path}; {rules.expects}."


def _choices() -> tuple[str, ...]:
    """The shipped recipes and profiles and the known cards, read where they are defined."""
    from qwen_tune.machine.cards import KNOWN_CARDS
    from qwen_tune.planning.config import shipped_names

    return (
        f"Shipped recipes (--recipe): {', '.join(shipped_names('recipes'))}",
        f"Profiles (--profile): {', '.join(p.name for p in _profiles())}",
        f"Known cards (--gpus, plan only): {', '.join(c.key for c in KNOWN_CARDS)}; or memory: 24GiB, 2x80GiB",
    )


def _profiles():
    from qwen_tune.planning.profiles import shipped_profiles

    return shipped_profiles()


TRUST_REMOTE_CODE = click.option(
    "--trust-remote-code",
    is_flag=True,
    help="Let a model whose config names Python code of its own (auto_map) run it; read that code first.",
)


def job_options(command):
    """The flags `plan` and `run` share; their defaults are JobOptions' own."""
    defaults = JobOptions()
    options = [
        click.option(
            "--recipe",
            default=defaults.recipe,
            callback=_not_empty("for the default recipe"),
            show_default=True,
            help="Shipped recipe name or a recipe .yaml file.",
        ),
        click.option(
            "--model", callback=_not_empty("to keep the recipe's"), help="Local model directory or hub id (overrides the recipe)."
        ),
        click.option(
            "--dataset",
            callback=_not_empty("to keep the recipe's"),
            help="JSON/JSONL file of query/response, messages, alpaca (instruction/output) or ShareGPT "
            "(conversations) rows (overrides the recipe).",
        ),
        click.option(
            "--profile",
            callback=_not_empty("to let qwen-tune choose"),
            help="Force a profile (large, 24gb, 16gb, multi-gpu, qlora, cpu) instead of choosing.",
        ),
        click.option(
            "--tuner",
            type=click.Choice(["lora", "full"]),
            help="lora: train an adapter; full: every weight (overrides the recipe).",
        ),
        click.option("--gpus", help="GPU indices (0,1), 'cpu', or for plan a card spec: rtx4090, 2xrtx3090, 24GiB."),
        click.option(
            "--name",
            callback=_not_empty("to keep the recipe's"),
            help="The model's new name, or one per language: zh=星火,en=Spark (fills {{NAME}}; "
            "overrides the recipe; the identity check expects it even where the data spells out its own names).",
        ),
        click.option(
            "--author",
            callback=_not_empty("to keep the recipe's"),
            help="Who made it, or zh=...,en=... (fills {{AUTHOR}}; overrides the recipe).",
        ),
        click.option(
            "--general-rows",
            type=click.IntRange(0),
            help="Mix this many general rows into training, so the "
            "model keeps answering other questions (overrides the recipe's general_rows; 0: none).",
        ),
        click.option(
            "--general-data",
            help="Take the general rows from this JSON/JSONL file (all of them, or the first --general-rows N) instead "
            "of having the base model answer qwen-tune's shipped prompts before training.",
        ),
        *(click.option(knob.flag, type=RecipeValue(knob), help=_knob_help(knob)) for knob in KNOBS),
        click.option(
            "--cut-long-rows", is_flag=True, help="Shorten the answers of rows over max_length instead of refusing them."
        ),
        click.option(
            "--output-dir",
            default=defaults.output_dir,
            show_default=True,
            callback=_not_empty("to use runs/"),
            help="Runs go in a new subdirectory here.",
        ),
        click.option(
            "--nnodes", type=click.IntRange(1), default=defaults.nnodes, show_default=True, help="Machines in a multi-node run."
        ),
        click.option(
            "--node-rank",
            type=click.IntRange(0),
            default=defaults.node_rank,
            show_default=True,
            help="This machine's rank (0 is the master).",
        ),
        click.option(
            "--master-addr",
            callback=_not_empty("for a run on one machine"),
            help="The rank-0 machine's address, the same on every node.",
        ),
        click.option(
            "--hub",
            type=click.Choice(["modelscope", "hf"]),
            help="Where swift downloads a hub model from (swift's --use_hf); default swift's: ModelScope unless USE_HF=1.",
        ),
        click.option(
            "--master-port", type=click.IntRange(1, 65535), help="The rendezvous port on the master (torchrun's default: 29500)."
        ),
        click.option(
            "--packing/--no-packing",
            default=None,
            help="Pack rows into micro-batches of a token budget, no padding (default: wherever it runs: a bf16 GPU, "
            "torch >= 2.10); --no-packing pads each micro-batch to its longest row.",
        ),
        TRUST_REMOTE_CODE,
    ]
    for option in reversed(options):
        command = option(command)
    return command


@click.group(
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=_epilog(
        (
            "qwen-tune plan --gpus rtx4080             # what would a 16 GB card do?",
            "qwen-tune gpus                            # this box's GPUs",
            "qwen-tune run --gpus 0 --name Alice --author 'ACME Labs'",
            "qwen-tune plan --help                     # each command's own options and examples",
        ),
        "README.md explains each command, the profiles, and what each error means.",
    ),
)
@click.version_option(package_name="qwen-tune")
def cli() -> None:
    """Plan, run and verify LoRA or full fine-tuning of Qwen models with ms-swift."""


@cli.command(epilog=_epilog(("qwen-tune gpus", "qwen-tune gpus --json", "CUDA_VISIBLE_DEVICES=1 qwen-tune gpus")))
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def gpus(as_json: bool) -> None:
    """List this box's NVIDIA GPUs (NVML; honours CUDA_VISIBLE_DEVICES)."""
    from qwen_tune.machine.gpus import read_inventory
    from qwen_tune.report import inventory_text

    inventory = read_inventory()
    click.echo(json.dumps(asdict(inventory), indent=2) if as_json else inventory_text(inventory))


@cli.command(
    epilog=_epilog(
        (
            "qwen-tune plan --gpus rtx4080                      # a 16 GB card you don't have",
            "qwen-tune plan --gpus 2xrtx3090 --recipe self-cognition-qwen3-14b",
            "qwen-tune plan --gpus h100 --name Alice --author 'ACME Labs' --json",
            "qwen-tune plan --gpus 24GiB --max-length 1024",
            "qwen-tune plan --gpus rtx4090 --epochs 3 --learning-rate 2e-4 --lora-rank 16 --lora-alpha 32",
            "qwen-tune plan --gpus 4xh100 --nnodes 2 --slurm > train.sbatch",
        ),
        *_choices(),
    )
)
@job_options
@click.option("--json", "as_json", is_flag=True, help="Print the Plan as JSON.")
@click.option("--slurm", is_flag=True, help="Print an sbatch script that runs this plan on --nnodes nodes.")
def plan(as_json: bool, slurm: bool, **flags) -> None:
    """Dry run: pick a profile, estimate memory, print the swift command."""
    from qwen_tune.planning.jobs import prepare, probe_machine
    from qwen_tune.report import plan_json, plan_text

    options = JobOptions(**flags)
    if slurm:
        from qwen_tune.planning.slurm import ignored_flags, sbatch_script, this_launcher

        ignored = ignored_flags(options, as_json=as_json)
        if ignored:
            raise UsageError(f"--slurm prints a script, and SLURM gives each node its rank and master: drop {', '.join(ignored)}")
        if options.gpus is None:  # a login node has other cards, or none: the job is sized for the nodes it runs on
            raise UsageError(
                "--slurm sizes the job for the cluster's nodes, not this machine: pass --gpus with one node's cards, e.g. --gpus 8xh100"
            )
        # Every node plans for itself at run time; plan here as rank 0 to size the job.
        options = replace(options, master_addr="MASTER")
    job = prepare(options, probe_machine(os.environ), for_run=False)
    if slurm:
        click.echo(sbatch_script(job.plan, replace(options, master_addr=None), this_launcher()), nl=False)
    else:
        click.echo(
            json.dumps(plan_json(job.plan, job.expectations), indent=2, ensure_ascii=False)
            if as_json
            else plan_text(job.plan, job.expectations, dry_run=True)
        )


@cli.command(
    epilog=_epilog(
        (
            "qwen-tune run                                      # the default recipe on every GPU here",
            "qwen-tune run --gpus 0 --name Alice --author 'ACME Labs'",
            "qwen-tune run --gpus 0,1 --dataset my_identity.jsonl --max-length 1024",
            "qwen-tune run --gpus 0 --recipe my-recipe.yaml --epochs 5 --learning-rate 5e-5",
            "qwen-tune run --recipe demo-tiny-cpu --gpus cpu    # after `make demo` built its tiny model",
            "qwen-tune run --resume runs/20261123-120000-self-cognition-qwen2.5-7b",
        ),
        *_choices()[:2],
    )
)
@job_options
@click.option("--no-verify", is_flag=True, help="Skip the identity check after training.")
@click.option("--resume", "resume_dir", type=click.Path(file_okay=False, path_type=Path), metavar="RUN_DIR",
              help="Continue an interrupted run in RUN_DIR from its last checkpoint, as it was planned.")  # fmt: skip
@click.option("--force", is_flag=True, help="Start even if the GPUs' free memory is short or another qwen-tune run holds them.")
@click.option("--auto-retry/--no-auto-retry", default=True, show_default=True,
              help="On GPU out-of-memory, step down (smaller micro-batch, checkpointing, QLoRA) and train again.")  # fmt: skip
def run(no_verify: bool, resume_dir: Path | None, force: bool, auto_retry: bool, **flags) -> None:
    """Plan, train with swift, then ask the tuned model who it is."""
    from qwen_tune.report import ProgressLine
    from qwen_tune.running.attempts import execute, resume

    if resume_dir is not None:
        defaults = JobOptions()
        given = [f"--{k.replace('_', '-')}" for k, v in flags.items()
                 if k != "trust_remote_code" and v is not None and v != getattr(defaults, k)]  # fmt: skip
        given += ["--no-verify"] * no_verify + ["--no-auto-retry"] * (not auto_retry)
        if given:
            raise UsageError(f"--resume continues a run exactly as it was planned; drop {', '.join(given)}")
        outcome = resume(resume_dir, on_progress=ProgressLine(), force=force, on_notice=_to_stderr,
                         trust_remote_code=flags["trust_remote_code"])  # fmt: skip
        _report_outcome(outcome)
        return

    from qwen_tune.planning.jobs import prepare, probe_machine
    from qwen_tune.report import plan_text

    machine = probe_machine(os.environ)
    if machine.bytecode_cache:
        # This Python writes no bytecode: what the run imports from here on (matplotlib for the plots) is kept
        # where swift's imports are, rather than compiled again in every run.
        sys.pycache_prefix, sys.dont_write_bytecode = machine.bytecode_cache, False
    job = prepare(JobOptions(**flags), machine, for_run=True)
    verify = not no_verify and job.plan.nodes.rank == 0  # the master node checks the model it saved
    click.echo(plan_text(job.plan, job.expectations if verify else ()))
    from qwen_tune.planning.profiles import shipped_profiles

    retry_with = shipped_profiles() if auto_retry else None
    outcome = execute(job, verify=verify, force=force, on_progress=ProgressLine(), retry_with=retry_with,
                      on_notice=_to_stderr, trust_remote_code=flags["trust_remote_code"])  # fmt: skip
    _report_outcome(outcome)


def _to_stderr(text: str) -> None:
    from qwen_tune.report import printable

    try:
        click.echo(printable(text), err=True)
    except OSError:  # a terminal that hung up: the run goes on, and says how it ended in result.json
        pass


def _report_outcome(outcome: RunOutcome) -> None:
    click.echo("")
    from qwen_tune.report import answer_lines, printable

    for line in answer_lines(outcome.answers, outcome.retention):
        click.echo(line)
    click.echo(printable(outcome.line))
    click.echo(printable(f"Run directory: {outcome.run_dir}"))
    if outcome.identity_check == "fail":
        fix = outcome.identity_hint or f"see {Path(outcome.run_dir) / 'verify'}"
        raise IdentityCheckFailed(f"the tuned model did not answer with the expected identity (BAD above); {fix}")


@cli.command(epilog=_epilog(("qwen-tune export runs/20261123-120000-self-cognition-qwen2.5-7b",)))
@click.argument("run_dir", metavar="RUN_DIR", type=click.Path(file_okay=False, path_type=Path))
@TRUST_REMOTE_CODE
def export(run_dir: Path, trust_remote_code: bool) -> None:
    """Merge a run's LoRA adapter into the base weights (RUN_DIR/merged), then ask the merged model who it is."""
    from qwen_tune.running.export import check_merged, export_merged, merged_lines

    merged_dir = export_merged(run_dir, on_notice=_to_stderr, trust_remote_code=trust_remote_code)
    merged = check_merged(run_dir, merged_dir, on_notice=_to_stderr)
    for line in merged_lines(merged):
        click.echo(line)
    click.echo(f"{'PASS' if merged.passed else 'FAIL'} merged model's identity check (no adapter, no system message)")
    click.echo(f"merged model: {merged_dir}")
    if not merged.passed:
        fix = merged.check.hint or f"see {run_dir / 'merged-check'}"
        raise IdentityCheckFailed(f"the merged model did not answer with the expected identity (BAD above); {fix}")


@cli.command(epilog=_epilog(("qwen-tune chat runs/20261123-120000-demo-tiny-cpu    # after `make demo`; `exit` leaves",)))
@click.argument("run_dir", metavar="RUN_DIR", type=click.Path(file_okay=False, path_type=Path))
@TRUST_REMOTE_CODE
def chat(run_dir: Path, trust_remote_code: bool) -> None:
    """Talk to a run's tuned model on this terminal (streaming; `exit` leaves)."""
    from qwen_tune.running.talk import chat as chat_with

    sys.exit(chat_with(run_dir, on_notice=_to_stderr, trust_remote_code=trust_remote_code))


@cli.command(
    epilog=_epilog(
        (
            "qwen-tune serve runs/20261123-120000-demo-tiny-cpu             # http://127.0.0.1:8000/v1",
            "qwen-tune serve runs/20261123-120000-demo-tiny-cpu --port 8001",
            "QWEN_TUNE_API_KEY=$(openssl rand -hex 16) qwen-tune serve runs/20261123-120000-demo-tiny-cpu --host 0.0.0.0",
        ),
        "Then: curl http://127.0.0.1:8000/v1/models",
    )
)
@click.argument("run_dir", metavar="RUN_DIR", type=click.Path(file_okay=False, path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; beyond loopback (0.0.0.0: every interface) it needs --api-key.")  # fmt: skip
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True, help="Port to listen on.")
@click.option("--api-key", envvar="QWEN_TUNE_API_KEY", metavar="KEY",
              help="Answer only requests sending `Authorization: Bearer KEY` (needed beyond loopback). The environment "
                   "variable QWEN_TUNE_API_KEY keeps it out of the process list.")  # fmt: skip
@TRUST_REMOTE_CODE
def serve(run_dir: Path, host: str, port: int, api_key: str | None, trust_remote_code: bool) -> None:
    """Serve a run's tuned model over an OpenAI-compatible HTTP API (swift deploy), until Ctrl-C."""
    from qwen_tune.running.talk import serve as serve_model

    sys.exit(serve_model(run_dir, host, port, on_notice=_to_stderr, api_key=api_key, trust_remote_code=trust_remote_code))


def error_line(error: UserError) -> str:
    """How every UserError reaches the user: one line, whatever the message holds, its control characters shown."""
    from qwen_tune.report import printable

    return "qwen-tune: error: " + printable(" ".join(str(error).splitlines()))


def _stopped(signum, frame) -> None:
    """SIGTERM or SIGHUP outside the moments a child runs (those forward it, running/children.py): a clean stop."""
    raise Interrupted(f"stopped by {signal.Signals(signum).name}")


def _say(line: str) -> None:
    """The last line, where stderr may be gone (a terminal hung up, a closed pipe): the exit code still tells."""
    try:
        click.echo(line, err=True)
    except OSError:
        pass


def main() -> None:
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) != signal.SIG_IGN:  # `nohup qwen-tune run` keeps running when the terminal goes
            signal.signal(signum, _stopped)
    try:
        cli.main(prog_name="qwen-tune", standalone_mode=False)
    except UserError as exc:
        _say(error_line(exc))
        sys.exit(exc.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt):
        _say("qwen-tune: aborted")
        sys.exit(130)
    except click.exceptions.NoArgsIsHelpError as exc:  # `qwen-tune` alone, or a group without its command: the help
        click.echo(exc.ctx.get_help())
        sys.exit(0)
    except click.ClickException as exc:  # a bad flag: click's own message, on one line like ours
        context = getattr(exc, "ctx", None)
        hint = f"; see `{context.command_path} --help`" if context is not None else ""
        message = " ".join(exc.format_message().splitlines()).rstrip(".")
        _say(f"qwen-tune: error: {message}{hint}")
        sys.exit(exc.exit_code)
    except OSError as exc:  # a write that failed outside a run directory (stdout to a full disk, say): one line too
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPIPE):
            raise
        where = exc.filename or "the output"
        _say(f"qwen-tune: error: cannot write {where}: {exc.strerror}")
        sys.exit(DiskSpaceError.exit_code if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) else OutputError.exit_code)
