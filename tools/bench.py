#!/usr/bin/env python3
"""Benchmark the profiles on a real GPU, each under the memory of the card it is for.

    python tools/bench.py run --cases 7b-24gb,7b-16gb --models-dir /dev/shm/models --results bench.jsonl
    python tools/bench.py report --results docs/bench-results.jsonl

`run` builds the random-weight model of each case's shape when it is missing
(tools/make_model.py), then runs the real `qwen-tune run` with the profile forced and torch's
memory pool capped to the card (tools/card_emulator), and appends one JSON line per case:
fit or OOM, swift's and NVML's peak memory, train and wall time, final loss, identity check,
and the estimator's prediction with its error. `report` prints the Markdown table for
docs/hardware-validation.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the checkout's qwen_tune, also where it is not installed (a bare GPU box)

from qwen_tune.machine.gpus import GIB  # noqa: E402
from qwen_tune.planning.dataset import fill_identity, load_dataset, write_jsonl  # noqa: E402
from qwen_tune.planning.memory import estimate, recorded_setup  # noqa: E402
from qwen_tune.planning.recipes import load_recipe  # noqa: E402
from qwen_tune.swift.logs import logged_losses, read_logging  # noqa: E402

REALISTIC = REPO / "tools" / "recipes" / "realistic.yaml"
REAL_JOB = REPO / "tools" / "recipes" / "real-job.yaml"  # the heavy-tailed 1,200-row job, one epoch
# Where `make bench` finds a peer's packages (tools/wheelhouse.py --peer NAME, installed with pip --target): never on
# the user's path, only on the peer process's PYTHONPATH.
PEER_SITE = Path(os.environ.get("QWEN_TUNE_PEER_SITE", REPO / "build" / "peers"))


@dataclass(frozen=True)
class Case:
    recipe: str
    shape: str  # tools/make_model.py shape
    profile: str | None  # None: let qwen-tune choose
    cap_gib: float | None  # torch's pool on the emulated card: its memory less the CUDA context
    card: str
    plan_for_cap: bool = True  # NVML reports the capped card; False plans for the big one (forced OOM)
    compute_capability: str | None = None  # e.g. 7.5: NVML reports a card without bf16
    interrupt_at: float | None = None  # SIGTERM at this fraction of the steps, then --resume
    rows: int | None = None  # train on the first N rows of the shipped data (half zh, half en)
    verify: bool = True  # False: the case is about training (loss, resume), not the identity
    blog: bool = False  # run the blog's `swift sft` command instead of qwen-tune (the speed baseline)
    gpus: str = "0"  # --gpus; with nodes > 1, node r trains on GPU r alone
    nodes: int = 1  # > 1: that many `qwen-tune run --nnodes` on this host, rendezvous at 127.0.0.1
    tuner: str | None = None  # --tuner (full fine-tuning); None: the recipe's
    long_rows: int | None = None  # train on N synthetic rows of 100-600 tokens (a realistic job) instead
    heavy_tail: tuple[int, int] | None = None  # (identity rows, general rows of heavy-tailed length): heavy_tailed_rows
    packing: bool | None = None  # False: --no-packing (rows padded, as before packing); None: qwen-tune's choice
    peer: str | None = None  # train the same job with this peer instead of qwen-tune (tools/peers/PEER_job.py)
    peer_args: tuple[str, ...] = ()  # the peer's own setup where its default does not fit (Unsloth on a 24 GB card)


CASES = {
    "7b-auto": Case("self-cognition-qwen2.5-7b", "qwen2.5-7b", None, None, "H100 80GB (uncapped)"),
    "7b-24gb": Case("self-cognition-qwen2.5-7b", "qwen2.5-7b", "24gb", 23, "24 GB card"),
    "7b-16gb": Case("self-cognition-qwen2.5-7b", "qwen2.5-7b", "16gb", 15, "16 GB card"),
    "7b-qlora": Case("self-cognition-qwen2.5-7b", "qwen2.5-7b", "qlora", 11, "12 GB card"),
    "14b-auto": Case("self-cognition-qwen3-14b", "qwen3-14b", None, None, "H100 80GB (uncapped)"),
    "14b-qlora": Case("self-cognition-qwen3-14b", "qwen3-14b", "qlora", 23, "24 GB card"),
    # Reliability (issue 7): fp16 on a card without bf16; the OOM ladder; kill and resume.
    "7b-fp16": Case(
        "self-cognition-qwen2.5-7b",
        "qwen2.5-7b",
        None,
        None,
        "H100 seen as cc 7.5 (no bf16)",
        compute_capability="7.5",
        verify=False,
    ),
    "7b-ladder": Case(
        "self-cognition-qwen2.5-7b", "qwen2.5-7b", None, 23, "H100 planned as 80 GB, run under 23 GiB", plan_for_cap=False
    ),
    "7b-resume": Case(
        "self-cognition-qwen2.5-7b", "qwen2.5-7b", None, None, "H100 80GB, SIGTERM at 50%", interrupt_at=0.5, verify=False
    ),
    # Speed (issue 5): the seed's job size, 50 rows, qwen-tune's choice next to the blog's command.
    "7b-auto-50": Case("self-cognition-qwen2.5-7b", "qwen2.5-7b", None, None, "H100 80GB (uncapped)", rows=50),
    # Several GPUs (issue 6; needs a box with two): plain data parallel where the model fits a card, zero3 where it
    # must be sharded (each card capped at 15 GiB), Qwen3-14B on 2 × 24 GB, two nodes of one GPU each.
    "7b-2gpu": Case("self-cognition-qwen2.5-7b", "qwen2.5-7b", None, None, "2 × H200 (uncapped)", gpus="0,1"),
    "7b-2x16gb": Case("self-cognition-qwen2.5-7b", "qwen2.5-7b", None, 15, "2 × 16 GB cards", gpus="0,1"),
    "14b-2x24gb": Case("self-cognition-qwen3-14b", "qwen3-14b", None, 23, "2 × 24 GB cards", gpus="0,1"),
    "7b-2node": Case("self-cognition-qwen2.5-7b", "qwen2.5-7b", None, None, "2 nodes × 1 H200, one host", nodes=2),
    # The fastest plan that fits (issue 17): each card's own choice, the 50-row job, beside 7b-blog-50.
    "7b-24gb-auto-50": Case("self-cognition-qwen2.5-7b", "qwen2.5-7b", None, 23, "24 GB card", rows=50),
    "7b-16gb-auto-50": Case("self-cognition-qwen2.5-7b", "qwen2.5-7b", None, 15, "16 GB card", rows=50),
    "7b-12gb-auto-50": Case("self-cognition-qwen2.5-7b", "qwen2.5-7b", None, 11, "12 GB card", rows=50),
    # A realistic job (issue 17): 2,000 rows of 100-600 tokens, the auto plan, uncapped and on a 24 GB card.
    "7b-2000": Case(str(REALISTIC), "qwen2.5-7b", None, None, "H100 80GB (uncapped)", long_rows=2000, verify=False),
    "7b-2000-24gb": Case(str(REALISTIC), "qwen2.5-7b", None, 23, "24 GB card", long_rows=2000, verify=False),
    # Every Qwen model and full fine-tuning (issue 16): the estimator on new shapes, random weights.
    "8b-24gb": Case("self-cognition-qwen2.5-7b", "qwen3-8b", None, 23, "24 GB card", rows=50),
    "32b-24gb": Case("self-cognition-qwen2.5-7b", "qwen2.5-32b", None, 23, "24 GB card", rows=50),
    "30b-a3b": Case("self-cognition-qwen2.5-7b", "qwen3-30b-a3b", None, None, "H200 (uncapped)", rows=50),
    "0.5b-full": Case(
        "self-cognition-qwen2.5-7b", "qwen2.5-0.5b", None, None, "H100 80GB (uncapped)", rows=50, tuner="full", verify=False
    ),
    "1.5b-full-24gb": Case(
        "self-cognition-qwen2.5-7b", "qwen2.5-1.5b", None, 23, "24 GB card", rows=50, tuner="full", verify=False
    ),
    # Qwen3.5/3.6 (issue 24): the hybrid estimate on the composite checkpoints swift loads for their hub ids (random
    # weights, vision tower included: tools/make_model.py), with whichever Gated DeltaNet path the box has (fla or torch;
    # the plan and the record say which). Needs qwen-vl-utils and the box's torchvision (swift/deps.py).
    "qwen3.5-9b-auto": Case("self-cognition-qwen3.5-9b", "qwen3.5-9b", None, None, "H100 80GB (uncapped)", rows=50),
    "qwen3.5-9b-24gb": Case("self-cognition-qwen3.5-9b", "qwen3.5-9b", None, 23, "24 GB card", rows=50),
    "qwen3.5-9b-16gb": Case("self-cognition-qwen3.5-9b", "qwen3.5-9b", None, 15, "16 GB card", rows=50),
    "qwen3.5-27b-qlora": Case("self-cognition-qwen3.5-9b", "qwen3.5-27b", "qlora", 23, "24 GB card", rows=50),
    "qwen3.6-27b-qlora": Case("self-cognition-qwen3.5-9b", "qwen3.6-27b", "qlora", 23, "24 GB card", rows=50),
    "qwen3.5-35b-a3b": Case("self-cognition-qwen3.5-9b", "qwen3.5-35b-a3b", None, None, "H100 80GB (uncapped)", rows=50),
    "7b-blog-50": Case(
        "self-cognition-qwen2.5-7b", "qwen2.5-7b", None, None, "H100 80GB (uncapped)", rows=50, verify=False, blog=True
    ),
    # A user's real job (issue 22): 300 identity + 900 general rows of heavy-tailed length, one epoch; qwen-tune's
    # auto plan (packed rows, no padding), the same padded (--no-packing, for the loss), and Unsloth beside it.
    "7b-real": Case(str(REAL_JOB), "qwen2.5-7b", None, None, "H100 80GB (uncapped)", heavy_tail=(300, 900), verify=False),
    "7b-real-padded": Case(
        str(REAL_JOB), "qwen2.5-7b", None, None, "H100 80GB (uncapped)", heavy_tail=(300, 900), verify=False, packing=False
    ),
    "7b-real-unsloth": Case(
        str(REAL_JOB), "qwen2.5-7b", None, None, "H100 80GB (uncapped)", heavy_tail=(300, 900), verify=False, peer="unsloth"
    ),
    "7b-real-24gb": Case(str(REAL_JOB), "qwen2.5-7b", None, 23, "24 GB card", heavy_tail=(300, 900), verify=False),
    "7b-real-24gb-unsloth": Case(
        str(REAL_JOB),
        "qwen2.5-7b",
        None,
        23,
        "24 GB card",
        heavy_tail=(300, 900),
        verify=False,
        peer="unsloth",
        peer_args=("--checkpointing", "unsloth"),  # its offloaded checkpointing, as its docs advise for small cards
    ),
}


# The blog's command for this job, as the seed ran it (shared/measurements/2026-11-22-h100, run A),
# with swift 4.6's names for its flags: 1 × 16 with checkpointing (swift's default), 4 dataloader workers.
BLOG_FLAGS = [
    "--tuner_type", "lora", "--torch_dtype", "bfloat16", "--num_train_epochs", "10",
    "--per_device_train_batch_size", "1", "--gradient_accumulation_steps", "16", "--learning_rate", "1e-4",
    "--lora_rank", "8", "--lora_alpha", "32", "--target_modules", "all-linear", "--eval_steps", "50",
    "--save_steps", "50", "--save_total_limit", "2", "--logging_steps", "5", "--max_length", "2048",
    "--warmup_ratio", "0.05", "--dataloader_num_workers", "4", "--report_to", "none",
]  # fmt: skip
BLOG_LOGGING_STEPS = int(BLOG_FLAGS[BLOG_FLAGS.index("--logging_steps") + 1])
H100_BF16_PEAK_FLOPS = 989e12
_TOKEN_LENGTHS = re.compile(r"Dataset Token Length: ([\d.]+)±[\d.]+, min=[\d.]+, max=[\d.]+, size=(\d+)")
_PARAMS = re.compile(r"model_parameter_info: \w+: ([\d.]+)M Params")


def gpu_name() -> str:
    done = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                          capture_output=True, text=True)  # fmt: skip
    return done.stdout.strip().splitlines()[0] if done.returncode == 0 else "unknown"


def ensure_model(shape: str, models_dir: Path) -> Path:
    model = models_dir / shape
    if not (model / "config.json").exists():
        subprocess.run([sys.executable, str(REPO / "tools" / "make_model.py"), shape, str(model)], check=True)
    return model


def long_rows(n: int, out: Path, seed: int = 0) -> Path:
    """n rows whose answers run 100-600 tokens: the shipped English answers' words (about one token each with the
    bench models' tokenizers), in random order, after a shipped question; deterministic for a seed."""
    import random

    shipped = [
        json.loads(line)
        for line in (REPO / "qwen_tune" / "data" / "self_cognition.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    words = sorted({w for r in shipped for w in r["response"].split() if w.isascii() and "{{" not in w})
    rng = random.Random(seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as f:
        for i in range(n):
            row = shipped[i % len(shipped)]
            answer = " ".join(rng.choice(words) for _ in range(rng.randint(100, 600)))
            f.write(json.dumps({"query": row["query"], "response": answer}, ensure_ascii=False) + "\n")
    return out


def heavy_tailed_rows(identity: int, general: int, out: Path, seed: int = 0) -> Path:
    """A realistic job: `identity` rows of the shipped data (placeholders kept) and `general` rows whose answers have
    the heavy-tailed lengths of real instruction data: log-normal answers (median ~300 tokens, sigma 0.9); with the
    identity rows and the chat template a mean of ~370 tokens a row, about 3% past 1,500,
    none past 1,750 (so the longest row with its prompt stays under max_length 2048). A general row asks one of the
    shipped general prompts and answers in its language (random shipped words for English, random shipped Chinese
    characters for Chinese: about a token each with the bench models' tokenizers), in random order; shuffled;
    deterministic for a seed. The issue's own 1,200-row set is held out: this one is built to spread alike."""
    import math
    import random

    shipped = [
        json.loads(line)
        for line in (REPO / "qwen_tune" / "data" / "self_cognition.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    prompts = [
        p for p in (REPO / "qwen_tune" / "data" / "general_prompts.txt").read_text(encoding="utf-8").splitlines() if p.strip()
    ]
    answers = " ".join(r["response"] for r in shipped)
    words = sorted({w for w in answers.split() if w.isascii() and w.isalpha()})
    hanzi = sorted({ch for ch in answers if "\u4e00" <= ch <= "\u9fff"})
    rng = random.Random(seed)
    rows = [shipped[i % len(shipped)] for i in range(identity)]
    for i in range(general):
        prompt = prompts[i % len(prompts)]
        n = min(1750, max(20, round(math.exp(rng.gauss(math.log(300), 0.9)))))
        if any("\u4e00" <= ch <= "\u9fff" for ch in prompt):
            answer = "".join(rng.choice(hanzi) for _ in range(n))
        else:
            answer = " ".join(rng.choice(words) for _ in range(n))
        rows.append({"query": prompt, "response": answer})
    rng.shuffle(rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return out


def subset(rows: int, out: Path) -> Path:
    """The first rows/2 Chinese and rows/2 English rows of the shipped data, placeholders kept."""
    shipped = [
        json.loads(line)
        for line in (REPO / "qwen_tune" / "data" / "self_cognition.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    zh = [r for r in shipped if any("\u4e00" <= ch <= "\u9fff" for ch in r["query"])]
    en = [r for r in shipped if r not in zh]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in zh[: rows // 2] + en[: rows - rows // 2]), encoding="utf-8"
    )
    return out


def case_env(case: Case, memory_dir: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "tools" / "card_emulator"), env.get("PYTHONPATH", "")])
    env["QWEN_TUNE_MEMORY_REPORT"] = str(memory_dir)
    if case.cap_gib:
        env["QWEN_TUNE_MEMORY_CAP_GIB"] = str(case.cap_gib)
        if case.plan_for_cap:
            env["QWEN_TUNE_EMULATE_NVML"] = "1"
    if case.compute_capability:
        env["QWEN_TUNE_EMULATE_CC"] = case.compute_capability
    return env


def several_nodes(argv: list[str], env: dict, nodes: int) -> subprocess.CompletedProcess:
    """`nodes` runs of the same command on this host, node r on GPU r, meeting at 127.0.0.1; node 0's result."""
    gpus = argv.index("--gpus") + 1
    processes = []
    for rank in range(nodes):
        node_argv = [*argv[:gpus], str(rank), *argv[gpus + 1 :], "--nnodes", str(nodes), "--node-rank", str(rank),
                     "--master-addr", "127.0.0.1", "--master-port", "29533"]  # fmt: skip
        processes.append(
            subprocess.Popen(node_argv, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        )
    outputs = [p.communicate() for p in processes]
    return subprocess.CompletedProcess(argv, processes[0].returncode, outputs[0][0], "".join(o[1] for o in outputs))


def interrupt_then_resume(argv: list[str], env: dict, case_dir: Path, fraction: float) -> subprocess.CompletedProcess:
    """Start the run, SIGTERM qwen-tune once swift logged `fraction` of its steps, then --resume it."""
    process = subprocess.Popen(argv, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    while process.poll() is None:
        logs = list(case_dir.glob("*/swift/logging.jsonl"))
        steps = [line for line in logs[0].read_text().splitlines() if '"global_step/max_steps"' in line] if logs else []
        if steps:
            done, total = (int(x) for x in json.loads(steps[-1])["global_step/max_steps"].split("/"))
            if done >= fraction * total:
                process.send_signal(signal.SIGTERM)
                break
        time.sleep(0.5)
    first = process.communicate()[0]
    run_dir = sorted(case_dir.glob("*"))[-1]
    second = subprocess.run([sys.executable, "-m", "qwen_tune", "run", "--resume", str(run_dir)], env=env, cwd=REPO,
                            capture_output=True, text=True)  # fmt: skip
    (run_dir / "bench-interrupted.log").write_text(first)
    return second


def run_blog(case: Case, model: Path, data: Path, case_dir: Path, env: dict) -> dict:
    """The blog's `swift sft`, on the same model and the same filled data, timed the same way."""
    recipe = load_recipe(case.recipe)
    run_dir = case_dir / date.today().strftime("%Y%m%d-blog")
    run_dir.mkdir(parents=True)
    write_jsonl(fill_identity(load_dataset(str(data)), recipe.identity_name, recipe.identity_author), run_dir / "dataset.jsonl")
    argv = ["swift", "sft", "--model", str(model), "--model_type", "qwen2", "--template", "qwen2_5", "--check_model", "false",
            "--dataset", str(run_dir / "dataset.jsonl"), "--system", recipe.system, *BLOG_FLAGS,
            "--output_dir", str(run_dir / "swift"), "--add_version", "false"]  # fmt: skip
    start = time.monotonic()
    with open(run_dir / "swift.log", "w") as log:
        done = subprocess.run(
            argv, env={**env, "CUDA_VISIBLE_DEVICES": "0", "HF_HUB_OFFLINE": "1"}, stdout=log, stderr=subprocess.STDOUT
        )
    wall_seconds = round(time.monotonic() - start, 1)
    result = read_logging(run_dir / "swift" / "logging.jsonl")
    final = {"final_loss": result.final_loss, "train_seconds": result.train_seconds, "swift_peak_reserved_gib": result.peak_reserved_gib,
             "window_loss": window_loss(run_dir / "swift" / "logging.jsonl")}  # fmt: skip
    return {"status": "done" if done.returncode == 0 else "error", "command": argv, "wall_seconds": wall_seconds, "profile": "blog",
            "setup": {"micro_batch_size": 1, "gradient_checkpointing": True, "dtype": "bfloat16"}, "grad_accum": 16,
            "identity_check": "skipped", **final, **speed(run_dir / "swift.log", result.train_seconds)}  # fmt: skip


def run_peer(case: Case, model: Path, data: Path, case_dir: Path, env: dict) -> dict:
    """The same job trained by a peer (tools/peers/PEER_job.py), from PEER_SITE/PEER only: the same model, the same
    rows with the identity filled in as qwen-tune fills them, the recipe's hyper-parameters."""
    recipe = load_recipe(case.recipe)
    case_dir.mkdir(parents=True, exist_ok=True)
    rows = fill_identity(load_dataset(str(data)), recipe.identity_name, recipe.identity_author)
    write_jsonl(rows, case_dir / "dataset.jsonl")
    job = {"epochs": recipe.epochs, "learning_rate": recipe.learning_rate, "warmup_ratio": recipe.warmup_ratio,
           "lora_rank": recipe.lora_rank, "lora_alpha": recipe.lora_alpha, "target_modules": recipe.target_modules,
           "effective_batch_size": recipe.effective_batch_size, "max_length": recipe.max_length, "system": recipe.system}  # fmt: skip
    (case_dir / "job.json").write_text(json.dumps(job, indent=2))
    site = PEER_SITE / case.peer
    peer_env = {**env, "PYTHONPATH": os.pathsep.join([str(REPO / "tools" / "card_emulator"), str(site)]),
                "CUDA_VISIBLE_DEVICES": "0", "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}  # fmt: skip
    argv = [sys.executable, str(REPO / "tools" / "peers" / f"{case.peer}_job.py"), "--model", str(model),
            "--job", str(case_dir / "job.json"), "--data", str(case_dir / "dataset.jsonl"), "--out", str(case_dir),
            *case.peer_args]  # fmt: skip
    start = time.monotonic()
    with open(case_dir / "peer.log", "w") as log:
        done = subprocess.run(argv, env=peer_env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    result = json.loads((case_dir / "peer.json").read_text()) if (case_dir / "peer.json").is_file() else {}
    tail = (case_dir / "peer.log").read_text(errors="replace")[-800:]
    status = "done" if done.returncode == 0 and result else ("oom" if "OutOfMemoryError" in tail else "error")
    return {"status": status, "profile": case.peer, "command": argv[1:], "process_seconds": round(time.monotonic() - start, 1),
            "setup": {"micro_batch_size": result.get("micro_batch_size"), "gradient_checkpointing": result.get("gradient_checkpointing"),
                      "dtype": "bfloat16"},
            "grad_accum": result.get("grad_accum"), "versions": result.get("versions"),
            "train_seconds": result.get("train_seconds"), "train_tokens": result.get("train_tokens"),
            "tokens_per_second": result.get("tokens_per_second"), "mfu_6n": result.get("mfu_6n"),
            "swift_peak_reserved_gib": result.get("peak_reserved_gib"), "torch_peak_allocated_gib": result.get("peak_allocated_gib"),
            "final_loss": result.get("final_loss"), "losses": result.get("losses"), "wall_seconds": result.get("wall_seconds"),
            "identity_check": "skipped", **({"error": tail} if status != "done" else {})}  # fmt: skip


def speed(swift_log: Path, train_seconds: float | None) -> dict:
    """Tokens trained per second and MFU (6 × params × tokens over the H100's dense bf16 peak), from swift's log."""
    text = swift_log.read_text(errors="replace")
    lengths, params = _TOKEN_LENGTHS.search(text), _PARAMS.search(text)
    epochs = re.search(r"num_train_epochs=([\d.]+)", text)
    if not (lengths and params and epochs and train_seconds):
        return {}
    tokens = float(lengths.group(1)) * int(lengths.group(2)) * float(epochs.group(1))
    return {"train_tokens": int(tokens), "tokens_per_second": round(tokens / train_seconds),
            "mfu_6n": round(6 * float(params.group(1)) * 1e6 * tokens / train_seconds / H100_BF16_PEAK_FLOPS, 4)}  # fmt: skip


def own_speed(result: dict) -> dict:
    """qwen-tune's own count (result.json): the rows' tokens, no padding counted, over the card's dense peak."""
    if not result.get("tokens_per_second"):
        return {}
    return {"train_tokens": result["train_tokens"], "tokens_per_second": result["tokens_per_second"], "mfu_6n": result.get("mfu"),
            "padding_fraction": result.get("padding_fraction"), "attention": result.get("attention")}  # fmt: skip


def tail_loss(logging_jsonl: Path, share: float = 0.2) -> float | None:
    """Mean loss over the last fifth of the steps: packed and padded runs of one job end on different batches."""
    by_step = dict(logged_losses(logging_jsonl))
    last = sorted(by_step)[-max(1, round(len(by_step) * share)) :]
    return round(sum(by_step[s] for s in last) / len(last), 4) if last else None


def torch_peaks(memory_dir: Path) -> dict:
    """Peak allocated and reserved bytes of the training process(es), from the emulator's reports."""
    reports = [json.loads(p.read_text()) for p in memory_dir.glob("memory-*.json")]
    train = [r for r in reports if any("sft" in str(a) for a in r["argv"])]
    if not train:
        return {}
    return {"torch_peak_allocated_gib": round(max(r["max_allocated_bytes"] for r in train) / GIB, 2),
            "torch_peak_reserved_gib": round(max(r["max_reserved_bytes"] for r in train) / GIB, 2)}  # fmt: skip


def last_epoch_loss(logging_jsonl: Path, steps_per_epoch: int) -> float | None:
    """Mean training loss over the last epoch's steps: one step's loss is one batch's, too noisy to compare."""
    by_step = dict(logged_losses(logging_jsonl))  # a step logged again after a resume counts once, as resumed
    last = sorted(by_step)[-steps_per_epoch:]
    return round(sum(by_step[s] for s in last) / len(last), 4) if last else None


def window_loss(logging_jsonl: Path, steps: int = BLOG_LOGGING_STEPS) -> float | None:
    """Mean loss over the last `steps` optimizer steps: what a log every `steps` steps (the blog's) prints last.

    A single step's loss is one batch's (the 50-row job ends on a batch of 2), so final losses of runs that
    log at different intervals are not comparable; this window is.
    """
    logged = dict(logged_losses(logging_jsonl))
    if not logged:
        return None
    last = max(logged)
    window = [loss for step, loss in logged.items() if step > last - steps]
    return round(sum(window) / len(window), 4) if len(window) == steps or len(window) == 1 else None


def run_case(name: str, case: Case, models_dir: Path, runs_dir: Path) -> dict:
    model = ensure_model(case.shape, models_dir)
    case_dir = runs_dir / name
    memory_dir = runs_dir / f"{name}-memory"
    memory_dir.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "qwen_tune", "run", "--recipe", case.recipe, "--model", str(model),
            "--gpus", case.gpus, "--output-dir", str(case_dir)]  # fmt: skip
    if case.profile:
        argv += ["--profile", case.profile]
    if not case.verify:
        argv += ["--no-verify"]
    if case.tuner:
        argv += ["--tuner", case.tuner]
    if case.long_rows:
        argv += ["--dataset", str(long_rows(case.long_rows, runs_dir / f"long-{case.long_rows}.jsonl"))]
    if case.heavy_tail:
        argv += [
            "--dataset",
            str(heavy_tailed_rows(*case.heavy_tail, runs_dir / "heavy-tail-{}-{}.jsonl".format(*case.heavy_tail))),
        ]
    if case.packing is False:
        argv += ["--no-packing"]
    if case.rows:
        argv += ["--dataset", str(subset(case.rows, runs_dir / f"self_cognition-{case.rows}.jsonl"))]
    env = case_env(case, memory_dir)
    if case.peer:
        data = heavy_tailed_rows(*case.heavy_tail, runs_dir / "heavy-tail-{}-{}.jsonl".format(*case.heavy_tail))
        return {"case": name, "date": date.today().isoformat(), "gpu": gpu_name(), "card": case.card, "cap_gib": case.cap_gib,
                **run_peer(case, model, data, case_dir, env)}  # fmt: skip
    if case.blog:
        data = (
            subset(case.rows, runs_dir / f"self_cognition-{case.rows}.jsonl")
            if case.rows
            else REPO / "qwen_tune" / "data" / "self_cognition.jsonl"
        )
        blog = run_blog(case, model, data, case_dir, env)
        return {"case": name, "date": date.today().isoformat(), "gpu": gpu_name(), "card": case.card, "cap_gib": None,
                **blog, **torch_peaks(memory_dir)}  # fmt: skip
    start = time.monotonic()
    if case.nodes > 1:
        done = several_nodes(argv, env, case.nodes)
    elif case.interrupt_at:
        done = interrupt_then_resume(argv, env, case_dir, case.interrupt_at)
    else:
        done = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=REPO)
    record = {"case": name, "date": date.today().isoformat(), "gpu": gpu_name(), "card": case.card,
              "cap_gib": case.cap_gib, "command": argv[1:], "returncode": done.returncode,
              "process_seconds": round(time.monotonic() - start, 1)}  # fmt: skip
    run_dirs = sorted(p for p in case_dir.glob("*") if "-node" not in p.name)  # node 0's run dir
    if not run_dirs:
        return {**record, "status": "error", "error": (done.stderr or done.stdout).strip()[-500:]}
    run_dir = run_dirs[-1]
    (run_dir / "bench-output.log").write_text((done.stdout or "") + (done.stderr or ""))
    plan = json.loads((run_dir / "plan.json").read_text())
    result = json.loads((run_dir / "result.json").read_text()) if (run_dir / "result.json").exists() else {}
    attempts = json.loads((run_dir / "attempts.json").read_text()) if (run_dir / "attempts.json").exists() else []
    final = attempts[-1] if attempts else None
    versions = json.loads((run_dir / "versions.json").read_text())
    log = (run_dir / "swift.log").read_text(errors="replace")
    measured = result.get("swift_peak_reserved_gib")
    estimate = final["estimate_peak_gib"] if final else plan["estimate"]["peak_bytes"] / GIB
    estimate_reserved = plan["estimate"]["reserved_bytes"] / GIB if len(attempts) <= 1 else None
    logging_jsonl = run_dir / "swift" / "logging.jsonl"
    setup = {**plan["setup"], "seq_len": plan["seq_len"], "dtype": plan["dtype"],
             "quantization": plan["profile"]["quantization"], "lora_rank": plan["recipe"]["lora_rank"],
             "shape": plan["model"]["shape"], "n_gpus": len(plan["inventory"]["gpus"]),
             "tuner": plan["recipe"].get("tuner", "lora"), "linear_attention": plan.get("linear_attention")}  # fmt: skip
    if final:
        setup.update(micro_batch_size=final["micro_batch_size"], gradient_checkpointing=final["gradient_checkpointing"],
                     quantization=final["quantization"])  # fmt: skip
    return {
        **record,
        "status": result.get("status", "error")
        if result.get("status") != "train-failed" or "OutOfMemoryError" not in log
        else "oom",
        "versions": {
            k: versions.get(k) for k in ("python", "torch", "transformers", "peft", "ms-swift", "bitsandbytes", "fla-core")
        },
        "profile": final["profile"] if final else plan["profile"]["name"],
        "setup": setup,
        "grad_accum": final["grad_accum"] if final else plan["grad_accum"],
        "total_steps": plan["total_steps"],
        "estimate_reserved_gib": round(estimate_reserved, 2) if estimate_reserved else None,
        "estimate_peak_gib": round(estimate, 2),
        "swift_peak_reserved_gib": measured,
        **torch_peaks(memory_dir),
        "nvml_peak_used_gib": (result.get("nvml_peak_used_gib") or {}).get("0"),
        "nvml_peak_used_gib_per_gpu": result.get("nvml_peak_used_gib"),
        "estimate_error_pct": round(100 * (estimate_reserved - measured) / measured, 1)
        if measured and estimate_reserved
        else None,
        "train_seconds": result.get("train_seconds"),
        "wall_seconds": result.get("wall_seconds"),
        **speed(run_dir / "swift.log", result.get("train_seconds")),
        **own_speed(result),
        "final_loss": result.get("final_loss"),
        "tail_loss": tail_loss(logging_jsonl) if logging_jsonl.is_file() else None,
        "last_epoch_loss": last_epoch_loss(logging_jsonl, plan["steps_per_epoch"]) if logging_jsonl.is_file() else None,
        "window_loss": window_loss(logging_jsonl) if logging_jsonl.is_file() else None,
        "bytecode_cache": plan.get("bytecode_cache"),  # set: swift's imports were compiled once, into this cache
        "identity_check": result.get("identity_check"),
        "answers": [a["answer"] for a in result.get("answers", [])],
        "answers_before": [a.get("before") for a in result.get("answers", [])],
        "identity_asked": result.get("identity_asked"),
        "retention": result.get("retention"),
        "attempts": [
            {k: a.get(k) for k in ("profile", "micro_batch_size", "gradient_checkpointing", "quantization", "outcome", "error")}
            for a in attempts
        ],  # fmt: skip
        "timeline": result.get("timeline"),
        "resumed_from": result.get("resumed_from"),
    }


def estimator_now(record: dict) -> float:
    """The estimator as it is today, for the record's setup: calibration moves it, the record stays."""
    return estimate(recorded_setup(record["setup"])).reserved_bytes / GIB


def wall_seconds(record: dict) -> float | None:
    """From launching swift to the verdict (timeline.json, which counts from qwen-tune's start in newer records),
    across the ladder's attempts; else swift's own wall. process_seconds is the whole qwen-tune process."""
    timeline = record.get("timeline") or {}
    tries = len(record.get("attempts") or []) or 1
    done = timeline.get("done") or timeline.get(f"done (attempt {tries})")
    return round(done - timeline.get("swift started", 0.0), 1) if done else record.get("wall_seconds")


def report(results: Path) -> str:
    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    lines = [
        "| case | card (torch cap) | profile | micro × GA | status | swift peak GiB (reserved) | torch allocated GiB | NVML peak GiB "
        "| estimate at run time | estimate now (error) | train s | qwen-tune wall s | final loss | identity |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        setup = r.get("setup", {})
        cap = f" ({r['cap_gib']:g} GiB)" if r.get("cap_gib") else ""
        batch = f"{setup.get('micro_batch_size', '?')} × {r.get('grad_accum', '?')}" + (
            " ckpt" if setup.get("gradient_checkpointing") else ""
        )
        if setup.get("quantization") == "nf4":
            batch += " nf4"
        if setup.get("dtype") == "float16":
            batch += " fp16"
        measured = r.get("swift_peak_reserved_gib")
        now = estimator_now(r) if setup and r.get("profile") != "blog" else None  # the blog ran no plan of ours
        now_text = f"{now:.2f} ({100 * (now - measured) / measured:+.1f}%)" if now and measured else "?"
        tries = len(r.get("attempts") or []) or 1
        status = r["status"] + (f" after {tries} attempts" if tries > 1 else "")
        wall = wall_seconds(r)
        lines.append(
            f"| {r['case']} | {r['card']}{cap} | {r.get('profile', '?')} | {batch} | {status} | {measured} | "
            f"{r.get('torch_peak_allocated_gib', '–')} | {r.get('nvml_peak_used_gib')} | {r.get('estimate_reserved_gib') or '–'} | {now_text} | "
            f"{round(r['train_seconds'], 1) if r.get('train_seconds') else '?'} | {wall} | {r.get('final_loss')} | {r.get('identity_check')} |"
        )
    lines += ["", *speed_report(rows)]
    return "\n".join(lines)


# Side-by-side pairs the report compares: qwen-tune's case, and the peer's (or padded twin's) case of the same job.
PEER_PAIRS = (("7b-real", "7b-real-unsloth"), ("7b-real-24gb", "7b-real-24gb-unsloth"))
LOSS_PAIRS = (("7b-real", "7b-real-padded"),)


def speed_report(rows: list[dict]) -> list[str]:
    """How fast each case trained; qwen-tune's choice against the blog's command and against the peers."""
    # NF4 cases are left out: bitsandbytes packs two weights a byte, so swift's parameter count halves them.
    fast = [r for r in rows if r.get("mfu_6n") is not None and r.get("setup", {}).get("quantization") != "nf4"]
    lines = [
        "| case | tool | micro × GA | train s | wall s | tokens/s | MFU (6N) | padding | attention | peak GiB | final loss |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in fast:
        s = r.get("setup", {})
        batch = (
            f"≤{s['packing']['tokens']} tok × {r.get('grad_accum')}"
            if s.get("packing")
            else f"{s.get('micro_batch_size')} × {r.get('grad_accum')}"
        )
        batch += " ckpt" if s.get("gradient_checkpointing") not in (None, False, "false") else ""
        padding = "" if r.get("padding_fraction") is None else f"{100 * r['padding_fraction']:.0f}%"
        lines.append(f"| {r['case']} | {r.get('profile') if r.get('profile') in ('unsloth', 'blog') else 'qwen-tune'} | {batch} | "
                     f"{round(r['train_seconds'], 1)} | {wall_seconds(r)} | {r['tokens_per_second']} | {100 * r['mfu_6n']:.1f}% | "
                     f"{padding} | {r.get('attention', '')} | {r.get('swift_peak_reserved_gib')} | {r.get('final_loss')} |")  # fmt: skip
    by_case = {r["case"]: r for r in fast}
    if "7b-auto-50" in by_case and "7b-blog-50" in by_case:
        ours, blog = by_case["7b-auto-50"], by_case["7b-blog-50"]
        loss = ""
        if ours.get("window_loss") and blog.get("window_loss"):
            loss = (f", loss over the last {BLOG_LOGGING_STEPS} steps {ours['window_loss']} against {blog['window_loss']} "
                    f"({100 * (ours['window_loss'] - blog['window_loss']) / blog['window_loss']:+.1f}%)")  # fmt: skip
        lines += ["", f"qwen-tune's choice against the blog's command, same box and session: train {blog['train_seconds'] / ours['train_seconds']:.1f}× faster, "
                      f"wall {wall_seconds(blog) / wall_seconds(ours):.1f}× faster (theirs without the identity check){loss}."]  # fmt: skip
    for ours_name, peer_name in PEER_PAIRS:
        if ours_name in by_case and peer_name in by_case:
            ours, peer = by_case[ours_name], by_case[peer_name]
            lines += ["", f"{ours_name}: qwen-tune against {peer.get('profile')}, same job, box and session: "
                          f"{peer['train_seconds'] / ours['train_seconds']:.2f}× its speed (train {ours['train_seconds']:.1f} s "
                          f"against {peer['train_seconds']:.1f} s; the same tokens), peak {ours.get('swift_peak_reserved_gib')} "
                          f"against {peer.get('swift_peak_reserved_gib')} GiB."]  # fmt: skip
    by_any = {r["case"]: r for r in rows}
    for ours_name, padded_name in LOSS_PAIRS:
        ours, padded = by_any.get(ours_name, {}), by_any.get(padded_name, {})
        if ours.get("tail_loss") and padded.get("tail_loss"):
            lines += ["", f"{ours_name} against {padded_name} (the same job padded): loss over the last fifth of the steps "
                          f"{ours['tail_loss']} against {padded['tail_loss']} ({100 * (ours['tail_loss'] - padded['tail_loss']) / padded['tail_loss']:+.1f}%), "
                          f"train {padded.get('train_seconds')} s padded."]  # fmt: skip
    return lines if fast else []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run")
    run.add_argument("--cases", default=",".join(CASES), help=f"comma-separated: {', '.join(CASES)}")
    run.add_argument("--models-dir", type=Path, default=REPO / "build" / "models")
    run.add_argument("--runs-dir", type=Path, default=REPO / "runs" / "bench")
    run.add_argument("--results", type=Path, default=REPO / "runs" / "bench" / "results.jsonl")
    run.add_argument("--no-verify", action="store_true", help="train only, no identity check (random weights answer nothing)")
    rep = sub.add_parser("report")
    rep.add_argument("--results", type=Path, default=REPO / "docs" / "bench-results.jsonl")
    args = parser.parse_args()
    if args.command == "report":
        print(report(args.results))
        return 0
    names = [n.strip() for n in args.cases.split(",") if n.strip()]
    unknown = [n for n in names if n not in CASES]
    if unknown:
        print(f"bench: unknown case {unknown[0]}; cases: {', '.join(CASES)}", file=sys.stderr)
        return 2
    args.results.parent.mkdir(parents=True, exist_ok=True)
    for name in names:
        case = replace(CASES[name], verify=False) if args.no_verify else CASES[name]
        record = run_case(name, case, args.models_dir, args.runs_dir)
        with args.results.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
        print(f"{name}: {record['status']}, swift peak {record.get('swift_peak_reserved_gib')} GiB, "
              f"estimate {record.get('estimate_reserved_gib')} GiB, train {record.get('train_seconds')} s, "
              f"loss {record.get('final_loss')}, identity {record.get('identity_check')}", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
