"""A run from start to end: the checks before it, its attempts down the out-of-memory ladder, a resume,
and one function that trains, plots, checks the identity and records how it ended."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

from qwen_tune.checking.verify import check_identity, in_training_request
from qwen_tune.errors import GpuBusyError, Interrupted, MissingPackage, OutOfMemory, TrainingFailed, UsageError, UserError
from qwen_tune.machine.readiness import torch_gpu_problem
from qwen_tune.planning.dataset import jsonl_bytes
from qwen_tune.planning.jobs import installed_versions, read_torch
from qwen_tune.planning.ladder import fallback
from qwen_tune.planning.plan import Job, Plan
from qwen_tune.planning.planner import disk_bytes_needed
from qwen_tune.planning.profiles import Profile
from qwen_tune.running.locks import run_locks
from qwen_tune.running.outcome import RunOutcome
from qwen_tune.running.plot import loss_figure, loss_title, save
from qwen_tune.running.process import Timeline, run_sft
from qwen_tune.running.rundir import (
    RunRecord,
    check_disk_space,
    check_output_dir,
    create_run_dir,
    launch_fields,
    unused_path,
    write_json,
)
from qwen_tune.swift.checkpoints import latest_checkpoint, logging_jsonl
from qwen_tune.swift.command import require_swift, with_train_probe
from qwen_tune.swift.deps import missing_package, plan_needs, unmet
from qwen_tune.swift.infer import PreloadedInfer, distill
from qwen_tune.swift.logs import Progress, epoch_ends, logged_losses


def execute(
    job: Job, *, verify: bool, force: bool, on_progress: Callable[[Progress | str], None], retry_with: list[Profile] | None = None,
    on_notice: Callable[[str], None] = print,
) -> RunOutcome:  # fmt: skip
    """A new run: check it can start, record it, then train and check it.

    With retry_with (the profiles the ladder may switch to), an out-of-memory failure steps down
    ladder.fallback's ladder and trains again in the same run directory, from the last checkpoint.
    """
    timeline = Timeline()
    check_before_run(job, force=force)
    timeline.mark("checked")
    with _exclusive([g.index for g in job.plan.inventory.gpus], str(job.run_dir), force, job.plan.nodes.rank):
        record, plan, attempts = create_run_dir(job, verify=verify), job.plan, []
        timeline.mark("run directory written")
        on_notice(f"Training in {job.run_dir} (swift's full output goes to swift.log there)...")
        while True:
            attempts.append(_attempt(plan, len(attempts) + 1))
            timeline.attempt = len(attempts)
            try:
                resume_from = latest_checkpoint(Path(record.output_dir)) if len(attempts) > 1 else None
                outcome = train_and_check(record, on_progress, timeline, resume_from)
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
                record = replace(record, **launch_fields(plan))
                record.save()
                on_notice(f"{oom}\nretrying with {change} (attempt {len(attempts) + 1}; --no-auto-retry stops here instead)")
            except UserError as failure:
                attempts[-1].update(outcome="failed", error=str(failure))
                raise
            finally:
                write_json(Path(record.run_dir) / "attempts.json", attempts)


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
    s, launch = plan.setup, launch_fields(plan)
    return {"attempt": number, "profile": launch["profile"], "micro_batch_size": s.micro_batch_size, "grad_accum": plan.grad_accum,
            "gradient_checkpointing": s.gradient_checkpointing, "zero": s.zero or None, "quantization": plan.profile.quantization,
            "estimate_peak_gib": launch["estimate_peak_gib"], "argv": launch["argv"]}  # fmt: skip


def resume(
    run_dir: Path, on_progress: Callable[[Progress | str], None], *, force: bool = False, on_notice: Callable[[str], None] = print
) -> RunOutcome:
    """Continue an interrupted or failed run in its own directory, from its last checkpoint."""
    record = RunRecord.load(run_dir)
    result_file = run_dir / "result.json"
    if result_file.is_file() and json.loads(result_file.read_text(encoding="utf-8")).get("status") == "done":
        raise UsageError(f"{run_dir} already finished; start a new run instead")
    with _exclusive(record.gpu_indices, record.run_dir, force, record.node_rank):
        checkpoint = latest_checkpoint(Path(record.output_dir))
        where = f"from {checkpoint.name}" if checkpoint else "from the start (no checkpoint was kept)"
        on_notice(f"Resuming {run_dir} {where} (swift's output is appended to swift.log)...")
        return train_and_check(record, on_progress, Timeline(), checkpoint)


def _exclusive(indices: list[int], run_dir: str, force: bool, node_rank: int):
    """The run's devices locked (its GPUs, or the CPU where it has none); --force trains beside another run."""
    return nullcontext() if force else run_locks(indices, run_dir, node_rank)


def train_and_check(
    record: RunRecord, on_progress: Callable[[Progress | str], None], timeline: Timeline, resume_from: Path | None = None
) -> RunOutcome:
    """Train, plot, check the identity, write the outcome: every way out leaves result.json and timeline.json consistent."""
    run_dir = Path(record.run_dir)
    node_rank = record.node_rank
    ended = RunOutcome(
        run_dir=str(run_dir), profile=record.profile, estimate_peak_gib=record.estimate_peak_gib, status="train-failed", line="",
        resumed_from=str(resume_from) if resume_from else None,
    )  # fmt: skip
    if record.general_prompts and node_rank == 0:
        _mix_general_rows(record, timeline)
    asks = in_training_request(record.expected_identity(), record.system, run_dir) if record.verify and node_rank == 0 else None
    launch = with_train_probe(record.argv, record.env, asks) if asks else None
    # Where training answers the probes itself, no second swift imports beside it (the CPU and disk go to training);
    # should it fail to answer, plain `swift infer` does.
    preloaded = PreloadedInfer.start(record.env) if asks and not launch else None
    try:
        try:
            # Where training runs in one process, it answers the identity probes itself at its end (no second load).
            sft = replace(record, argv=launch[0], env=launch[1]) if launch else record
            ended.train = run_sft(sft, on_progress, timeline, resume_from)
        except Interrupted as stop:
            _end(ended, "interrupted", f"INTERRUPTED: {stop}", error=str(stop))
            raise
        except TrainingFailed as failure:
            _end(ended, "train-failed", f"FAIL training: {failure}", error=str(failure))
            raise
        result = ended.train
        ended.loss_curve = "loss.png" if loss_curve(record, result.final_loss, run_dir / "loss.png") else None
        trained = f"trained: final loss {result.final_loss}, {result.wall_seconds:.0f} s"
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
                    record.expected_identity(), record.system, record.env, result.checkpoint, unused_path(run_dir / "verify"), preloaded,
                    asks if launch else None,
                )  # fmt: skip
                timeline.mark("identity checked")
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
    finally:
        if preloaded:
            preloaded.close()
        timeline.write(run_dir / "timeline.json")


def loss_curve(record: RunRecord, final_loss: float | None, png: Path) -> bool:
    """loss.png from swift's logging.jsonl, titled with the recipe, the profile and the final loss;
    False when swift logged no loss."""
    log = logging_jsonl(Path(record.output_dir))
    points = logged_losses(log) if log.is_file() else []
    if not points:
        return False
    title = loss_title(_recipe_name(Path(record.run_dir)), record.profile, final_loss)
    save(loss_figure([p[0] for p in points], [p[1] for p in points], epoch_ends(log), title), png)
    return True


def _recipe_name(run_dir: Path) -> str:
    """The recipe's name from plan.json; the run directory's name where it cannot be read."""
    try:
        return str(json.loads((run_dir / "plan.json").read_text(encoding="utf-8"))["recipe"]["name"])
    except (OSError, KeyError, TypeError, ValueError):
        return run_dir.name


def _mix_general_rows(record: RunRecord, timeline: Timeline) -> None:
    """Before the first launch: the base model answers the general prompts, and its answers join dataset.jsonl."""
    run_dir = Path(record.run_dir)
    done = run_dir / "general" / "rows.jsonl"
    if done.is_file():
        return  # a resumed run mixed them in before
    rows = distill(record.general_prompts, record.argv, record.env, run_dir / "general")
    dataset = run_dir / "dataset.jsonl"
    mixed = dataset.with_suffix(".mixing")
    mixed.write_text(dataset.read_text(encoding="utf-8") + "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                     encoding="utf-8")  # fmt: skip
    mixed.replace(dataset)
    write_json_lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    done.write_text(write_json_lines, encoding="utf-8")
    timeline.mark("general rows made")


def _end(outcome: RunOutcome, status, line: str, error: str | None = None) -> None:
    outcome.status, outcome.line, outcome.error = status, line, error
    outcome.write()
