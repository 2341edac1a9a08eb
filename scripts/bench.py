#!/usr/bin/env python3
"""Benchmark the profiles on a real GPU, each under the memory of the card it is for.

    python scripts/bench.py run --cases 7b-24gb,7b-16gb --models-dir /dev/shm/models --results bench.jsonl
    python scripts/bench.py report --results docs/bench-results.jsonl

`run` builds the random-weight model of each case's shape when it is missing
(scripts/make_model.py), then runs the real `qwen-tune run` with the profile forced and torch's
memory pool capped to the card (scripts/card_emulator), and appends one JSON line per case:
fit or OOM, swift's and NVML's peak memory, train and wall time, final loss, identity check,
and the estimator's prediction with its error. `report` prints the Markdown table for
docs/hardware-validation.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GIB = 1024**3


@dataclass(frozen=True)
class Case:
    recipe: str
    shape: str  # scripts/make_model.py shape
    profile: str | None  # None: let qwen-tune choose
    cap_gib: float | None  # torch's pool on the emulated card: its memory less the CUDA context
    card: str


CASES = {
    "7b-auto": Case("self-cognition-qwen2.5-7b", "qwen2.5-7b", None, None, "H100 80GB (uncapped)"),
    "7b-24gb": Case("self-cognition-qwen2.5-7b", "qwen2.5-7b", "24gb", 23, "24 GB card"),
    "7b-16gb": Case("self-cognition-qwen2.5-7b", "qwen2.5-7b", "16gb", 15, "16 GB card"),
    "7b-qlora": Case("self-cognition-qwen2.5-7b", "qwen2.5-7b", "qlora", 11, "12 GB card"),
    "14b-auto": Case("self-cognition-qwen3-14b", "qwen3-14b", None, None, "H100 80GB (uncapped)"),
    "14b-qlora": Case("self-cognition-qwen3-14b", "qwen3-14b", "qlora", 23, "24 GB card"),
}


def gpu_name() -> str:
    done = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                          capture_output=True, text=True)  # fmt: skip
    return done.stdout.strip().splitlines()[0] if done.returncode == 0 else "unknown"


def ensure_model(shape: str, models_dir: Path) -> Path:
    model = models_dir / shape
    if not (model / "config.json").exists():
        subprocess.run([sys.executable, str(REPO / "scripts" / "make_model.py"), shape, str(model)], check=True)
    return model


def run_case(name: str, case: Case, models_dir: Path, runs_dir: Path) -> dict:
    model = ensure_model(case.shape, models_dir)
    argv = [sys.executable, "-m", "qwen_tune", "run", "--recipe", case.recipe, "--model", str(model),
            "--gpus", "0", "--output-dir", str(runs_dir / name)]  # fmt: skip
    if case.profile:
        argv += ["--profile", case.profile]
    env = dict(os.environ)
    if case.cap_gib:
        env["PYTHONPATH"] = os.pathsep.join([str(REPO / "scripts" / "card_emulator"), env.get("PYTHONPATH", "")])
        env["QWEN_TUNE_MEMORY_CAP_GIB"] = str(case.cap_gib)
    start = time.monotonic()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=REPO)
    record = {"case": name, "date": date.today().isoformat(), "gpu": gpu_name(), "card": case.card,
              "cap_gib": case.cap_gib, "command": argv[1:], "returncode": done.returncode,
              "process_seconds": round(time.monotonic() - start, 1)}  # fmt: skip
    run_dirs = sorted((runs_dir / name).glob("*"))
    if not run_dirs:
        return {**record, "status": "error", "error": done.stderr.strip()[-500:]}
    run_dir = run_dirs[-1]
    plan = json.loads((run_dir / "plan.json").read_text())
    result = json.loads((run_dir / "result.json").read_text()) if (run_dir / "result.json").exists() else {}
    versions = json.loads((run_dir / "versions.json").read_text())
    log = (run_dir / "swift.log").read_text(errors="replace")
    measured = result.get("swift_peak_reserved_gib")
    estimate = plan["estimate"]["reserved_bytes"] / GIB
    return {
        **record,
        "status": "oom" if "OutOfMemoryError" in log else result.get("status", "error"),
        "versions": {k: versions.get(k) for k in ("python", "torch", "transformers", "peft", "ms-swift", "bitsandbytes")},
        "profile": plan["profile"]["name"],
        "setup": {**plan["setup"], "seq_len": plan["seq_len"], "dtype": plan["dtype"],
                  "quantization": plan["profile"]["quantization"], "lora_rank": plan["recipe"]["lora_rank"],
                  "shape": plan["model"]["shape"], "n_gpus": len(plan["inventory"]["gpus"])},  # fmt: skip
        "grad_accum": plan["grad_accum"],
        "total_steps": plan["total_steps"],
        "estimate_reserved_gib": round(estimate, 2),
        "estimate_peak_gib": round(plan["estimate"]["peak_bytes"] / GIB, 2),
        "swift_peak_reserved_gib": measured,
        "nvml_peak_used_gib": (result.get("nvml_peak_used_gib") or {}).get("0"),
        "estimate_error_pct": round(100 * (estimate - measured) / measured, 1) if measured else None,
        "train_seconds": result.get("train_seconds"),
        "wall_seconds": result.get("wall_seconds"),
        "final_loss": result.get("final_loss"),
        "identity_check": result.get("identity_check"),
        "answers": [a["answer"] for a in result.get("answers", [])],
    }


def report(results: Path) -> str:
    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    lines = [
        "| case | card (torch cap) | profile | micro × GA | status | swift peak GiB | NVML peak GiB | estimate GiB (error) | train s | wall s | final loss | identity |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        setup = r.get("setup", {})
        cap = f" ({r['cap_gib']:g} GiB)" if r.get("cap_gib") else ""
        batch = f"{setup.get('micro_batch_size', '?')} × {r.get('grad_accum', '?')}" + (" ckpt" if setup.get("gradient_checkpointing") else "")
        err = f" ({r['estimate_error_pct']:+.1f}%)" if r.get("estimate_error_pct") is not None else ""
        lines.append(
            f"| {r['case']} | {r['card']}{cap} | {r.get('profile', '?')} | {batch} | {r['status']} | {r.get('swift_peak_reserved_gib')} | "
            f"{r.get('nvml_peak_used_gib')} | {r.get('estimate_reserved_gib')}{err} | {r.get('train_seconds')} | {r.get('wall_seconds')} | "
            f"{r.get('final_loss')} | {r.get('identity_check')} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run")
    run.add_argument("--cases", default=",".join(CASES), help=f"comma-separated: {', '.join(CASES)}")
    run.add_argument("--models-dir", type=Path, default=REPO / "build" / "models")
    run.add_argument("--runs-dir", type=Path, default=REPO / "runs" / "bench")
    run.add_argument("--results", type=Path, default=REPO / "runs" / "bench" / "results.jsonl")
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
        record = run_case(name, CASES[name], args.models_dir, args.runs_dir)
        with args.results.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
        print(f"{name}: {record['status']}, swift peak {record.get('swift_peak_reserved_gib')} GiB, "
              f"estimate {record.get('estimate_reserved_gib')} GiB, train {record.get('train_seconds')} s, "
              f"loss {record.get('final_loss')}, identity {record.get('identity_check')}", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
