"""An sbatch script for a multi-node plan: one task per node, each running the same qwen-tune command.

SLURM gives every task its node rank and the node list; the first node is torchrun's master.
qwen-tune on each node then plans for its own GPUs and launches swift with NNODES/NODE_RANK.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from qwen_tune.planning.jobs import DEFAULT_RECIPE, JobOptions
from qwen_tune.planning.plan import Plan
from qwen_tune.running.rundir import slug

# A free port on the master, asked for when the job starts there: a fixed one collides with other jobs.
FREE_PORT = "$(python3 -c 'import socket; s = socket.socket(); s.bind((\"\", 0)); print(s.getsockname()[1])')"
# What clusters ask for that qwen-tune cannot know: written switched off, with a value to edit.
PLACEHOLDERS = (
    "##SBATCH --partition=PARTITION",
    "##SBATCH --account=ACCOUNT",
    "##SBATCH --time=04:00:00",
    "##SBATCH --mem=0",
    "##SBATCH --cpus-per-task=16",
)


@dataclass(frozen=True)
class Launcher:
    """The Python environment `plan --slurm` runs in, so each node runs the same qwen-tune."""

    bin_dir: str  # where this qwen-tune (and its python3) live
    pythonpath: str | None  # an install with --target (README's air-gapped box) needs it too


def this_launcher(environ: Mapping[str, str] | None = None) -> Launcher:
    environ = os.environ if environ is None else environ
    # This Python's own qwen-tune first (a .venv need not be on PATH), then PATH's.
    beside = os.path.join(os.path.dirname(sys.executable), "qwen-tune")
    found = beside if os.access(beside, os.X_OK) else shutil.which("qwen-tune", path=environ.get("PATH"))
    bin_dir = os.path.dirname(found) if found else os.path.dirname(sys.executable)
    pythonpath = os.pathsep.join(os.path.abspath(p) for p in environ.get("PYTHONPATH", "").split(os.pathsep) if p)
    return Launcher(bin_dir=os.path.abspath(bin_dir), pythonpath=pythonpath or None)


def ignored_flags(options: JobOptions, *, as_json: bool) -> list[str]:
    """Flags --slurm would drop: SLURM gives each node its rank and the master's address."""
    dropped = [("--json", as_json), ("--node-rank", options.node_rank != 0), ("--master-addr", options.master_addr)]
    return [flag for flag, given in dropped if given]


def node_command(options: JobOptions, plan: Plan) -> str:
    """`qwen-tune run` with the user's choices, quoted, plus the per-node values SLURM fills in.

    Paths become absolute (the nodes may start elsewhere), and a local model is named by its directory.
    """
    argv = ["qwen-tune", "run"]
    if options.recipe != DEFAULT_RECIPE:
        argv += ["--recipe", _absolute(options.recipe)]
    model = str(plan.model.local_dir) if plan.model.local_dir else options.model
    for flag, value in (("--model", model), ("--dataset", options.dataset and _absolute(options.dataset)),
                        ("--profile", options.profile), ("--name", options.name), ("--author", options.author),
                        ("--max-length", options.max_length and str(options.max_length))):  # fmt: skip
        if value:
            argv += [flag, value]
    argv += ["--cut-long-rows"] * options.cut_long_rows + ["--trust-remote-code"] * options.trust_remote_code
    argv += ["--output-dir", options.output_dir]
    per_node = '--nnodes "$SLURM_NNODES" --node-rank "$SLURM_NODEID" --master-addr "$MASTER_ADDR" --master-port "$MASTER_PORT"'
    return f"exec {shlex.join(argv)} {per_node}"


def _absolute(path: str) -> str:
    """A file the user named, absolute; a shipped name or builtin: stays as it is."""
    return str(Path(path).expanduser().resolve()) if Path(path).expanduser().exists() else path


def sbatch_script(plan: Plan, options: JobOptions, launcher: Launcher) -> str:
    gpus_per_node = len(plan.inventory.gpus)
    port = str(options.master_port) if options.master_port else FREE_PORT
    environment = [f'export PATH={shlex.quote(launcher.bin_dir)}:"$PATH"']
    if launcher.pythonpath:
        environment.append(f"export PYTHONPATH={shlex.quote(launcher.pythonpath)}")
    if plan.model.local_dir:
        environment.append("export HF_HUB_OFFLINE=1  # the model is a local directory: nothing to download")
    lines = [
        "#!/bin/bash",
        # A directive line is no shell line: quoting would not keep a newline in a recipe's name from ending it.
        f"#SBATCH --job-name=qwen-tune-{slug(plan.recipe.name)}",
        f"#SBATCH --nodes={options.nnodes}",
        "#SBATCH --ntasks-per-node=1",
        f"#SBATCH --gpus-per-node={gpus_per_node}",
        "#SBATCH --output=qwen-tune-%j.log",
        "# Your cluster may need these: edit the value and remove one '#' to switch a line on (--mem=0: all of a node's).",
        *PLACEHOLDERS,
        "# Written by `qwen-tune plan --slurm`. Each node runs the same qwen-tune command with its own",
        f"# rank; plan per node: {plan.profile.name}, micro-batch {plan.setup.micro_batch_size} × grad-accum {plan.grad_accum}"
        f" × {plan.n_devices} GPUs = effective batch {plan.effective_batch}.",
        "set -euo pipefail",
        "# The environment this script was written from:",
        *environment,
        "# This script runs on the job's first node, the master; the port is free there when the job starts.",
        'MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
        f"MASTER_PORT={port}",
        "export MASTER_ADDR MASTER_PORT",
        f"srun --kill-on-bad-exit=1 bash -c {shlex.quote(node_command(options, plan))}",
    ]
    return "\n".join(lines) + "\n"
