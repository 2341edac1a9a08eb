#!/usr/bin/env python3
"""Run a planned `swift sft` again with some flags changed, and time each step (issue 5: what is faster).

    python tools/probes/speed_variants.py RUN_DIR --variants baseline,eager --out DIR [--py-spy]

RUN_DIR is a qwen-tune run (its command.json gives the argv and environment). Each variant trains
into DIR/VARIANT/swift on the same data; one JSON line per variant goes to DIR/variants.jsonl:
the wall time, when swift had imported, the host time at which each step's log line arrived,
train_runtime, the logged losses, and swift's peak memory. With --py-spy, each variant runs
under `py-spy record --subprocesses --nonblocking` and its raw stacks go to DIR/VARIANT/py-spy.txt.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from qwen_tune.running.process import Timeline  # noqa: E402
from qwen_tune.swift.command import launchable  # noqa: E402
from qwen_tune.swift.logs import logged_losses, parse_progress, read_logging  # noqa: E402

VARIANTS = {  # name: flags set (or added) on top of the planned command
    "baseline": {},
    "eager": {"--attn_impl": "eager"},
    "log5": {"--logging_steps": "5"},
    "save-end": {"--save_strategy": "no"},
    # Kernel-count levers (issue 17): LoRA weights in bf16 (no input cast per adapted linear), no LoRA dropout.
    "lora-bf16": {"--lora_dtype": "bfloat16"},
    "dropout0": {"--lora_dropout": "0"},
    "lora-bf16-dropout0": {"--lora_dtype": "bfloat16", "--lora_dropout": "0"},
    # Liger's Triton kernels: RoPE, RMSNorm, SwiGLU, and the loss fused with lm_head (no logits tensor).
    "liger": {"--use_liger_kernel": "true"},
    # flash-attn-4 (the CuTe DSL kernels; its packages on PYTHONPATH), with and without swift's padding_free, which
    # packs each micro-batch's rows into one sequence instead of padding them to the longest.
    "fa4": {"--attn_impl": "flash_attention_4"},
    "fa4-padding-free": {"--attn_impl": "flash_attention_4", "--padding_free": "true"},
}
VARIANT_ENV = {  # name: environment set on top of the planned command's
    # torch 2.11 tries cuDNN attention first on sm90 and builds a plan for every new shape.
    "cudnn-last": {"TORCH_CUDNN_SDPA_DEPRIORITIZED": "1"},
    "all-levers": {"TORCH_CUDNN_SDPA_DEPRIORITIZED": "1"},
}
VARIANTS |= {"cudnn-last": {}, "all-levers": VARIANTS["lora-bf16-dropout0"]}


def with_flags(argv: list[str], flags: dict[str, str]) -> list[str]:
    argv = list(argv)
    for flag, value in flags.items():
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag, value]
    return argv


def run_variant(name: str, command: dict, out: Path, py_spy: bool) -> dict:
    folder = out / name
    folder.mkdir(parents=True)
    env = {**os.environ, **command["env"], **VARIANT_ENV.get(name, {}), "PYTHONUNBUFFERED": "1"}
    argv = launchable(with_flags(command["argv"], {**VARIANTS[name], "--output_dir": str(folder / "swift")}), env)
    if py_spy:
        argv = ["py-spy", "record", "--subprocesses", "--nonblocking", "--rate", "200", "--format", "raw",
                "-o", str(folder / "py-spy.txt"), "--", *argv]  # fmt: skip
    timeline, steps = Timeline(time.monotonic()), []  # the runner's phases (swift imported, ...), and each step's arrival
    with open(folder / "swift.log", "w") as log:
        process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
        for line in process.stdout:
            now = round(time.monotonic() - timeline.start, 3)
            log.write(line)
            timeline.see(line)
            progress = parse_progress(line)
            if progress:
                steps.append([progress.step, now])
        process.wait()
    wall_seconds = round(time.monotonic() - timeline.start, 1)
    result = read_logging(folder / "swift" / "logging.jsonl")
    losses = [loss for _, loss in logged_losses(folder / "swift" / "logging.jsonl")]
    gaps = sorted((round(b[1] - a[1], 3), b[0]) for a, b in zip(steps, steps[1:], strict=False))
    return {"variant": name, "flags": VARIANTS[name], "env": VARIANT_ENV.get(name, {}), "returncode": process.returncode, "wall_seconds": wall_seconds,
            "imported_at": timeline.marks.get("swift imported"), "first_step_at": steps[0][1] if steps else None, "last_step_at": steps[-1][1] if steps else None,
            "train_seconds": result.train_seconds, "final_loss": result.final_loss, "losses": losses,
            "median_step_s": gaps[len(gaps) // 2][0] if gaps else None, "slowest_steps": gaps[-5:][::-1],
            "peak_reserved_gib": result.peak_reserved_gib, "step_times": steps}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--variants", default="baseline")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--py-spy", action="store_true")
    args = parser.parse_args()
    command = json.loads((args.run_dir / "command.json").read_text())
    for name in args.variants.split(","):
        record = run_variant(name, command, args.out, args.py_spy)
        with open(args.out / "variants.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        print(json.dumps({k: v for k, v in record.items() if k not in ("losses", "step_times")}), flush=True)


if __name__ == "__main__":
    main()
