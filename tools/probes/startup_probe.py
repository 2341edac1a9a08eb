#!/usr/bin/env python3
"""Where does swift's start-up time go on this box? (issue 5: the fixed cost of every run)

    python tools/probes/startup_probe.py --out startup.json [--importtime-dir DIR]

Times, each in a fresh interpreter: Python itself, `import torch`, swift's `swift` launcher (which
only spawns the worker), the worker's `from swift.pipelines import sft_main` twice (cold, then with
the page cache warm) and `infer_main`; sums `-X importtime` by package,
whether the packages' bytecode caches exist, and a one-thread CPU benchmark to compare boxes.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

CASES = (  # (name, code run with python -c)
    ("python", "pass"),
    ("import torch", "import torch"),
    ("swift launcher", "import swift.cli.main"),
    ("sft worker (cold)", "from swift.pipelines import sft_main"),
    ("sft worker (warm)", "from swift.pipelines import sft_main"),
    ("infer worker", "from swift.pipelines import infer_main"),
)
_LINE = re.compile(r"import time:\s+(\d+) \|\s+\d+ \| *(\S+)")


def by_package(importtime: str, n: int = 15) -> list[tuple[str, float]]:
    """Seconds spent importing each top-level package's own modules (self times summed), slowest first."""
    totals: dict[str, float] = {}
    for match in _LINE.finditer(importtime):
        package = match.group(2).split(".")[0]
        totals[package] = totals.get(package, 0.0) + int(match.group(1)) / 1e6
    return sorted(totals.items(), key=lambda r: -r[1])[:n]


def timed(code: str, env: dict) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", code], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{code!r} failed: {done.stderr[-500:]}")
    return seconds, done.stderr


def bytecode_cached(package: str) -> dict:
    """Is there a __pycache__ beside the package's sources, and could Python write one?"""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.origin:
        return {"package": package, "found": False}
    folder = Path(spec.origin).parent
    return {
        "package": package,
        "path": str(folder),
        "pycache": (folder / "__pycache__").is_dir(),
        "writable": os.access(folder, os.W_OK),
    }


def cpu_benchmark() -> float:
    start = time.perf_counter()
    sum(i * i for i in range(3_000_000))
    return round(time.perf_counter() - start, 3)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--importtime-dir", help="keep each case's full -X importtime output here")
    args = parser.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    results = {"python": sys.version.split()[0], "cpu": cpu, "cores": os.cpu_count(), "cpu_benchmark_s": cpu_benchmark(),
               "dont_write_bytecode": sys.flags.dont_write_bytecode, "pythonpath": env.get("PYTHONPATH", ""),
               "bytecode": [bytecode_cached(p) for p in ("torch", "transformers", "peft", "swift", "trl", "datasets")], "cases": []}  # fmt: skip
    for name, code in CASES:
        seconds, importtime = timed(code, env)
        if args.importtime_dir:
            Path(args.importtime_dir).mkdir(parents=True, exist_ok=True)
            (Path(args.importtime_dir) / (re.sub(r"\W+", "-", name).strip("-") + ".txt")).write_text(importtime)
        results["cases"].append(
            {"case": name, "seconds": round(seconds, 2), "top": [[m, round(s, 2)] for m, s in by_package(importtime)]}
        )
        print(f"{name:20s} {seconds:6.2f} s", flush=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
