"""A run from start to end: the checks before it, its attempts down the out-of-memory ladder, a resume,
and one function that trains, plots, checks the identity and records how it ended."""

from __future__ import annotations

import errno
import json
import os
import shlex
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from pathlib import Path

from qwen_tune.checking.verify import check_identity, in_training_request
from qwen_tune.errors import (
    DiskSpaceError,
    GpuBusyError,
    Interrupted,
    MissingPackage,
    OutOfMemory,
    OutputError,
    TrainingFailed,
    UsageError,
    UserError,
)
from qwen_tune.machine.gpus import GIB
from qwen_tune.machine.readiness import torch_gpu_problem
from qwen_tune.planning.dataset import jsonl_bytes
from qwen_tune.planning.jobs import bytecode_cache, installed_versions, read_torch, require_trust
from qwen_tune.planning.ladder import fallback
from qwen_tune.planning.plan import Job, Plan
from qwen_tune.planning.planner import disk_bytes_needed
from qwen_tune.planning.profiles import Profile
from qwen_tune.running.files import read_json, write_json, write_text
from qwen_tune.running.locks import Held, run_locks, writer_lock
from qwen_tune.running.outcome import RunOutcome, speed_basis
from qwen_tune.running.plot import loss_figure, loss_title, save
from qwen_tune.running.process import Timeline, run_sft
from qwen_tune.running.rundir import (
    RunRecord,
    check_disk_space,
    check_output_dir,
    create_run_dir,
    require_run_dir,
    unused_path,
    within,
)
from qwen_tune.swift.checkpoints import latest_checkpoint, logging_jsonl
from qwen_tune.swift.command import require_swift, sft_argv, with_train_probe
from qwen_tune.swift.deps import missing_package, plan_needs, unmet
from qwen_tune.swift.infer import PreloadedInfer, distill
from qwen_tune.swift.logs import Progress, epoch_ends, logged_losses


def execute(
    job: Job, *, verify: bool, force: bool, on_progress: Callable[[Progress | str], None], retry_with: list[Profile] | None = None,
    on_notice: Callable[[str], None] = print, trust_remote_code: bool = False,
) -> RunOutcome:  # fmt: skip
    """A new run: check it can start, record it, then train and check it.

    With retry_with (the profiles the ladder may switch to), an out-of-memory failure steps down
    ladder.fallback's ladder and trains again in the same run directory, from the last checkpoint.
    """
    timeline = Timeline()
    check_before_run(job, force=force)
    timeline.mark("checked")
    with _exclusive([g.index for g in job.plan.inventory.gpus], str(job.run_dir), force, job.plan.nodes.rank) as devices:
        record = create_run_dir(job, verify=verify, trust_remote_code=trust_remote_code)
        for lock in devices.locks if devices else []:  # the name it got (another run may have taken the first)
            lock.note(**{**lock.holder, "run_dir": str(record.run_dir)})
        plan, attempts = record.plan, []
        with writer_lock(record.run_dir) as writer, own_writes(record.run_dir):
            held = Held([*(devices.locks if devices else []), *writer.locks])
            timeline.mark("run directory written")
            on_notice(f"Training in {record.run_dir} (swift's full output goes to swift.log there)...")
            while True:
                attempts.append(_attempt(plan, len(attempts) + 1))
                timeline.attempt = len(attempts)
                try:
                    resume_from = latest_checkpoint(record.output_dir) if len(attempts) > 1 else None
                    outcome = train_and_check(record, on_progress, timeline, resume_from, held)
                    attempts[-1]["outcome"] = "done"
                    return outcome
                except OutOfMemory as oom:
                    attempts[-1].update(outcome="out-of-memory", error=str(oom))
                    step = fallback(plan, retry_with) if retry_with is not None else None
                    if step is None:
                        raise
                    plan, change = step
                    try:
                        check_packages(plan)
                    except MissingPackage as missing:
                        on_notice(f"{oom}\nthe next rung ({change}) cannot run here: {missing}")
                        raise oom from None
                    record = replace(record, plan=plan)
                    record.save()
                    on_notice(f"{oom}\nretrying with {change} (attempt {len(attempts) + 1}; --no-auto-retry stops here instead)")
                except UserError as failure:
                    attempts[-1].update(outcome="failed", error=str(failure))
                    raise
                finally:
                    _keep(write_json, record.run_dir / "attempts.json", attempts)


DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
NOT_WRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)


@contextmanager
def own_writes(run_dir: Path) -> Iterator[None]:
    """qwen-tune's own writes to a run directory failing mid-run (a full disk, a directory made read-only): one line
    with the command that continues the run, not a traceback; what was written before stays whole (files.write_text)."""
    resume = f"qwen-tune run --resume {shlex.quote(str(run_dir))}"
    try:
        yield
    except OSError as exc:
        where = exc.filename or run_dir
        if exc.errno in DISK_FULL:
            raise DiskSpaceError(f"the disk filled up: cannot write {where} ({exc.strerror}); free some space, then continue "
                                 f"from the last complete checkpoint: {resume}") from None  # fmt: skip
        if exc.errno in NOT_WRITABLE:
            raise OutputError(f"cannot write {where} ({exc.strerror}): {run_dir} must stay writable while it runs; make it "
                              f"writable again, then continue: {resume}") from None  # fmt: skip
        raise


def _keep(write, *args) -> None:
    """A record that is written on the way out, after a failure: where it cannot be written (the disk full), the
    failure that is on its way is what the user reads, not this one."""
    try:
        write(*args)
    except OSError:
        pass


def check_before_run(job: Job, *, force: bool, installed=None, torch_facts=None) -> None:
    """Whatever would refuse the run, refused before anything is written: swift, the packages the plan needs,
    the output dir, the disk, busy GPUs, and a torch that cannot use the GPUs. installed and torch_facts probe
    the box (installed_versions and read_torch unless a caller passes its own)."""
    require_swift()
    check_packages(job.plan, installed or installed_versions)
    output_dir = job.run_dir.parent
    check_output_dir(output_dir)
    check_disk_space(disk_bytes_needed(job.plan, jsonl_bytes(job.rows or [])), output_dir)
    busy = job.plan.busy_gpus()
    if busy and not force:
        raise GpuBusyError(f"{busy[0]}; stop that program, pick other GPUs with --gpus, or pass --force")
    inventory = job.plan.inventory
    if inventory.gpus:
        facts = (torch_facts or read_torch)()
        problem = torch_gpu_problem(facts, len(inventory.gpus), inventory.cuda_version, _python())
        if problem:
            raise problem


def check_packages(plan: Plan, installed=installed_versions) -> None:
    """deepspeed for ZeRO, bitsandbytes for QLoRA: importable at a version swift's stack accepts, or one line and exit 20."""
    needs = plan_needs(plan)
    missing = unmet(needs, installed([n.name for n in needs])) if needs else []
    if missing:
        raise missing_package(missing, _python())


def _python() -> str:
    return sys.executable or "python3"


def _attempt(plan: Plan, number: int) -> dict:
    s = plan.setup
    return {"attempt": number, "profile": plan.profile.name, "micro_batch_size": s.micro_batch_size, "grad_accum": plan.grad_accum,
            "gradient_checkpointing": s.gradient_checkpointing, "zero": s.zero or None, "quantization": plan.profile.quantization,
            "estimate_peak_gib": round(plan.estimate.peak_bytes / GIB, 2), "argv": sft_argv(plan)}  # fmt: skip


def resume(
    run_dir: Path, on_progress: Callable[[Progress | str], None], *, force: bool = False, on_notice: Callable[[str], None] = print,
    trust_remote_code: bool = False,
) -> RunOutcome:  # fmt: skip
    """Continue an interrupted or failed run in its own directory, from its last complete checkpoint, with the swift
    command qwen-tune renders again from the saved plan (run.json's argv is never run as written)."""
    require_run_dir(run_dir)
    result_file = run_dir / "result.json"
    if result_file.is_file():
        try:
            result = read_json(result_file)
        except UsageError:
            raise UsageError(
                f"{result_file} is not valid JSON: it was edited or cut short; it only records how the run ended, so move it "
                f"away and --resume again (or export the newest checkpoint: qwen-tune export {run_dir})"
            ) from None
        if isinstance(result, dict) and result.get("status") == "done":
            raise UsageError(f"{run_dir} already finished; start a new run instead")
    record = RunRecord.load(run_dir, trust_remote_code=trust_remote_code)
    record = replace(record, plan=replace(record.plan, bytecode_cache=bytecode_cache(os.environ)))
    if record.plan.nodes.count > 1:
        raise UsageError(
            f"{run_dir} is one node of a run over {record.plan.nodes.count} machines: --resume is for runs on one machine; "
            "start the multi-node run again on every node"
        )
    record.own_files()
    require_trust(record.plan.model, trust_remote_code)
    require_swift()
    check_packages(record.plan)
    # The run's own writer first: a run still training is that, whatever the device lock would say of it.
    with writer_lock(run_dir) as writer, _exclusive(record.gpu_indices, str(run_dir), force, record.node_rank) as devices:
        held = Held([*(devices.locks if devices else []), *writer.locks])
        with own_writes(run_dir):
            checkpoint = latest_checkpoint(record.output_dir)
            where = f"from {checkpoint.name}" if checkpoint else "from the start (no complete checkpoint was kept)"
            on_notice(f"Resuming {run_dir} {where} (swift's output is appended to swift.log)...")
            return train_and_check(record, on_progress, Timeline(), checkpoint, held)


def _exclusive(indices: list[int], run_dir: str, force: bool, node_rank: int):
    """The run's devices locked (its GPUs, or the CPU where it has none); --force trains beside another run."""
    return nullcontext() if force else run_locks(indices, run_dir, node_rank)


def train_and_check(
    record: RunRecord, on_progress: Callable[[Progress | str], None], timeline: Timeline, resume_from: Path | None = None,
    held: Held | None = None,
) -> RunOutcome:  # fmt: skip
    """Train, plot, check the identity, write the outcome: every way out leaves result.json and timeline.json consistent."""
    run_dir = record.run_dir
    node_rank = record.node_rank
    trust = record.trust_remote_code
    ended = RunOutcome(
        run_dir=str(run_dir), profile=record.profile, estimate_peak_gib=record.estimate_peak_gib, status="train-failed", line="",
        resumed_from=within(run_dir, resume_from) if resume_from else None,
    )  # fmt: skip
    preloaded = None
    try:
        asks = (
            in_training_request(record.expected_identity(), record.system, run_dir) if record.verify and node_rank == 0 else None
        )
        launch = with_train_probe(record.argv, record.env, asks) if asks else None
        try:
            if record.general_prompts and node_rank == 0:
                _mix_general_rows(record, timeline, on_progress)
            # Where training answers the probes itself, no second swift imports beside it (the CPU and disk go to
            # training); should it fail to answer, plain `swift infer` does.
            preloaded = PreloadedInfer.start(record.env, trust) if asks and not launch else None
            # Where training runs in one process, it answers the identity probes itself at its end (no second load).
            ended.train = run_sft(record, launch or (record.argv, record.env), on_progress, timeline, resume_from, held)
        except Interrupted as stop:
            _end(ended, "interrupted", f"INTERRUPTED: {stop}", error=str(stop))
            raise
        except UserError as failure:
            _end(ended, "train-failed", f"FAIL training: {failure}", error=str(failure))
            raise
        result = ended.train
        result.count_speed(speed_basis(record.plan) if not resume_from else None)  # a resumed run trained part of the tokens
        ended.loss_curve = "loss.png" if loss_curve(record, result.final_loss, run_dir / "loss.png") else None
        trained = f"trained: final loss {result.final_loss}, {result.wall_seconds:.0f} s"
        trained += f", {result.speed_text()}" if result.speed_text() else ""
        if result.checkpoint is None and node_rank == 0:
            _end(ended, "no-checkpoint", "FAIL: swift finished but wrote no checkpoint")
            raise TrainingFailed(f"swift finished but reported no checkpoint; see {run_dir / 'swift.log'}")
        if result.checkpoint is None:
            # Only the master node's rank 0 logs and saves the adapter; this node trained its share of each batch.
            ended.identity_check = "skipped"
            line = f"node {node_rank} done: it trained its share; node 0 holds the checkpoint and checks the model"
        elif record.verify:
            try:
                check = check_identity(
                    record.expected_identity(), record.system, record.env, str(run_dir / result.checkpoint),
                    unused_path(run_dir / "verify"), preloaded, asks if launch else None, trust,
                )  # fmt: skip
                timeline.mark("identity checked")
            except Interrupted as stop:
                resume = f"qwen-tune run --resume {shlex.quote(str(run_dir))}"
                message = f"{stop} during the identity check; training finished ({result.checkpoint}): {resume} checks it"
                _end(ended, "interrupted", f"INTERRUPTED: {message}", error=message)
                raise Interrupted(message) from None
            except UserError as failure:
                _end(ended, "verify-failed", f"FAIL: {failure}", error=str(failure))
                raise
            ended.identity_check, ended.answers = ("pass" if check.passed else "fail"), check.answers
            ended.identity_compared, ended.identity_asked, ended.retention = check.compared, check.asked, check.retention
            ended.identity_hint = check.hint
            line = f"{'PASS' if check.passed else 'FAIL'} identity check; {trained}"
        else:
            ended.identity_check = "skipped"
            line = f"identity check skipped; {trained}"
        timeline.mark("done")
        ended.timeline = timeline.marks
        _end(ended, "done", line)
        return ended
    except Interrupted as stop:  # a stop between the steps above (they record their own)
        if not ended.line:
            _end(ended, "interrupted", f"INTERRUPTED: {stop}", error=str(stop))
        raise
    finally:
        if preloaded:
            preloaded.close()
        _keep(timeline.write, run_dir / "timeline.json")


def loss_curve(record: RunRecord, final_loss: float | None, png: Path) -> bool:
    """loss.png from swift's logging.jsonl, titled with the recipe, the profile and the final loss;
    False when swift logged no loss."""
    log = logging_jsonl(record.output_dir)
    points = logged_losses(log) if log.is_file() else []
    if not points:
        return False
    title = loss_title(record.plan.recipe.name, record.profile, final_loss)
    save(loss_figure([p[0] for p in points], [p[1] for p in points], epoch_ends(log), title), png)
    return True


def _mix_general_rows(record: RunRecord, timeline: Timeline, on_progress: Callable[[Progress | str], None]) -> None:
    """Before the first launch: the base model answers the general prompts, and its answers join dataset.jsonl;
    one line says how many were kept (an empty answer teaches nothing: its row is dropped, general/dropped.jsonl)."""
    run_dir = record.run_dir
    done = run_dir / "general" / "rows.jsonl"
    if done.is_file():
        return  # a resumed run mixed them in before
    rows, empty = distill(record.general_prompts, record.argv, record.env, run_dir / "general", record.trust_remote_code)
    dataset = run_dir / "dataset.jsonl"
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    write_text(dataset, dataset.read_text(encoding="utf-8") + lines)
    dropped = "".join(json.dumps({"query": q, "why": "empty answer"}, ensure_ascii=False) + "\n" for q in empty)
    write_text(run_dir / "general" / "dropped.jsonl", dropped)
    write_text(done, lines)  # last: its presence says the data has them
    on_progress(general_rows_line(len(record.general_prompts), len(rows)))
    timeline.mark("general rows made")


def general_rows_line(asked: int, kept: int) -> str:
    """How many of the general rows the plan counted train: the base model's empty answers are dropped."""
    line = f"general rows: {kept} of {asked} kept"
    if kept == asked:
        return line + " (the base model answered every prompt)"
    dropped = f"{line}, {asked - kept} dropped: the base model answered them with nothing (general/dropped.jsonl)"
    if kept == 0:
        return f"{dropped}; training on the data alone, {asked} rows fewer than planned"
    return f"{dropped}; {asked - kept} rows fewer than planned"


def _end(outcome: RunOutcome, status, line: str, error: str | None = None) -> None:
    outcome.status, outcome.line, outcome.error = status, line, error
    if status == "done":
        outcome.write()  # a success that cannot be recorded is a failure (own_writes says so)
    else:
        _keep(outcome.write)
