"""The out-of-memory ladder: what each retry changes, and what the user is told."""

from pathlib import Path

import pytest
from conftest import FIXED_NOW, PLAIN_MACHINE

from qwen_tune.errors import OutOfMemory, TrainingFailed
from qwen_tune.planning.jobs import JobOptions, prepare
from qwen_tune.planning.ladder import fallback
from qwen_tune.planning.profiles import shipped_profiles
from qwen_tune.running.process import LAUNCH_HEADER, last_launch_lines
from qwen_tune.swift.command import sft_argv
from qwen_tune.swift.logs import failure, oom_message

# torch 2.11's message, as swift prints it when the pool is capped (shape of a real one from the H100 box).
TORCH_OOM = (
    "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.32 GiB. GPU 0 has a total capacity of 79.19 GiB "
    "of which 54.21 GiB is free. Including non-PyTorch memory, this process has 24.97 GiB memory in use. Of the "
    "allocated memory 19.88 GiB is allocated by PyTorch, and 1.52 GiB is reserved by PyTorch but unallocated."
)


def ladder(gpus: str, **flags) -> list[str]:
    flags.setdefault("packing", False)
    plan = prepare(JobOptions(gpus=gpus, output_dir="runs", **flags), PLAIN_MACHINE, for_run=False, now=FIXED_NOW).plan
    steps, rungs = plan.steps_per_epoch, []
    while (step := fallback(plan, shipped_profiles())) is not None:
        plan, change = step
        rungs.append(change)
        if plan.setup.packing:  # packed: as many rows an optimizer step, in more, smaller packs
            # small packs fill less evenly: a few more optimizer steps, never fewer
            assert steps <= plan.steps_per_epoch <= 1.5 * steps and plan.setup.packing.tokens >= plan.data.max_tokens
        else:
            assert plan.effective_batch == 16, "every rung keeps the recipe's effective batch"
        assert plan.reasons[-1].startswith("out of memory with")
    return rungs


def test_one_big_card_halves_the_micro_batch_then_recomputes_then_quantizes():
    assert ladder("1xh100") == [
        "micro-batch 16 → 8",
        "micro-batch 8 → 4",
        "micro-batch 4 → 2",
        "micro-batch 2 → 1",
        "gradient checkpointing on",
        "4-bit QLoRA, micro-batch 1, checkpointing on",
    ]


def test_packed_rows_halve_the_tokens_of_a_micro_batch_then_recompute_then_quantize():
    rungs = ladder("1xh100", packing=True)
    assert rungs[0].startswith("packs of ≤") and rungs[-2:] == ["gradient checkpointing on", rungs[-1]]
    assert rungs[-1].startswith("4-bit QLoRA, packs of ≤") and rungs[-1].endswith("checkpointing on")


def test_several_cards_shard_with_zero3_before_quantizing():
    rungs = ladder("2xrtx3090")
    assert rungs[-3:] == [
        "gradient checkpointing on",
        "plain data parallel → DeepSpeed zero3",
        "4-bit QLoRA, micro-batch 1, checkpointing on",
    ]


def test_qlora_at_micro_batch_1_with_checkpointing_is_the_last_rung():
    assert ladder("rtx3080") == ["micro-batch 4 → 2", "micro-batch 2 → 1", "gradient checkpointing on"]


def test_retried_plans_render_a_command_with_the_new_setup():
    plan = prepare(JobOptions(gpus="1xh100", output_dir="runs", packing=False), PLAIN_MACHINE, for_run=False, now=FIXED_NOW).plan
    plan, _ = fallback(plan, shipped_profiles())
    argv = sft_argv(plan)
    assert argv[argv.index("--per_device_train_batch_size") + 1] == "8"
    assert argv[argv.index("--gradient_accumulation_steps") + 1] == "2"


def test_oom_message_says_what_ran_out_when_and_against_the_estimate():
    assert oom_message(TORCH_OOM, 0, 27.08) == (
        "the GPU ran out of memory before the first step finished: asked for 2.32 GiB more, "
        "with 19.88 GiB already allocated, 54.21 GiB free on the card; the plan estimated 27.08 GiB"
    )
    assert oom_message("torch.OutOfMemoryError: CUDA out of memory.", 12, 9.5) == (
        "the GPU ran out of memory after step 12; the plan estimated 9.50 GiB"
    )


def test_failure_reads_only_the_newest_launch(tmp_path: Path):
    log = tmp_path / "swift.log"
    log.write_text(f"{LAUNCH_HEADER} swift sft =====\n{TORCH_OOM}\n{LAUNCH_HEADER} swift sft =====\nValueError: bad flag\n")
    error = failure(last_launch_lines(log), 1, 0, 10.0, log)
    assert type(error) is TrainingFailed and "ValueError: bad flag" in str(error)
    log.write_text(f"{LAUNCH_HEADER} swift sft =====\n{TORCH_OOM}\n")
    error = failure(last_launch_lines(log), 1, 3, 10.0, log)
    assert isinstance(error, OutOfMemory) and error.exit_code == 5 and "after step 3" in str(error)


@pytest.mark.parametrize("flag", ["--no-auto-retry", "--no-verify"])
def test_resume_refuses_flags_that_would_change_the_run(flag, tmp_path):
    from click.testing import CliRunner

    from qwen_tune.cli import cli

    result = CliRunner().invoke(cli, ["run", "--resume", str(tmp_path), flag], standalone_mode=False)
    assert f"drop {flag}" in str(result.exception)


def test_a_checkpoint_torch_cannot_read_is_named_where_the_run_resumed_from_it(tmp_path: Path):
    """A foreign or corrupt scheduler.pt (valid pickle, not tensors): torch refuses it, nothing runs; the line says
    which checkpoint to move away. A first launch with the same error is swift's last error as it is."""
    log = tmp_path / "swift.log"
    refused = "_pickle.UnpicklingError: Weights only load failed. This file can still be loaded, to do so you have two options"
    log.write_text(f"{LAUNCH_HEADER} swift sft =====\n{refused}\n")
    resume = "qwen-tune run --resume runs/x"
    error = failure(last_launch_lines(log), 1, 0, 10.0, log, resume, resumed_from="checkpoint-208")
    assert "could not read checkpoint-208, which it resumed from" in str(error) and resume in str(error)
    assert "could not read" not in str(failure(last_launch_lines(log), 1, 0, 10.0, log, resume))
