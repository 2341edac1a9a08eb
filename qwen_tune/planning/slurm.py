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
from dataclasses import Field, dataclass, fields
from pathlib import Path

from qwen_tune.planning.jobs import JobOptions
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


# JobOptions fields each node sets for itself: SLURM gives it its rank, the node count and the master, and the
# GPUs it allocated (--gpus-per-node); every other field changes the job, so the script passes it on.
PER_NODE = {
    "nnodes": '"$SLURM_NNODES"',
    "node_rank": '"$SLURM_NODEID"',
    "master_addr": '"$MASTER_ADDR"',
    "master_port": '"$MASTER_PORT"',
    "gpus": None,  # the node's own GPUs; a CPU job (--gpus cpu) is passed on
}
# Fields that name files or folders: absolute in the script, since the nodes may start elsewhere.
PATHS = ("recipe", "model", "dataset", "general_data", "output_dir")


def node_command(options: JobOptions, plan: Plan) -> str:
    """`qwen-tune run` with every choice the user made, quoted, plus the per-node values SLURM fills in.

    Read from JobOptions' fields, so a new flag is passed on unless PER_NODE says otherwise
    (tests/test_multinode.py checks both). Paths become absolute; a local model is named by its directory.
    """
    argv = ["qwen-tune", "run"]
    for option in fields(JobOptions):
        value = getattr(options, option.name)
        if option.name == "model" and plan.model.local_dir:
            value = str(plan.model.local_dir)
        if not _passed_on(option, value):
            continue
        flag = "--" + option.name.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value is False:  # a --x/--no-x flag turned off (--no-packing)
            argv.append("--no-" + flag.removeprefix("--"))
        elif option.name in PATHS:
            argv += [flag, _absolute(str(value), always=option.name == "output_dir")]
        else:
            argv += [flag, str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)]  # --epochs 3
    per_node = " ".join(f"--{name.replace('_', '-')} {value}" for name, value in PER_NODE.items() if value)
    return f"exec {shlex.join(argv)} {per_node}"


def _passed_on(option: Field, value: object) -> bool:
    """Whether the script passes this field on: a choice that changes the job, and no per-node value."""
    if option.name == "gpus":
        return isinstance(value, str) and value.strip().lower().startswith("cpu")
    if option.name in PER_NODE:
        return False
    # --output-dir always: the nodes' default runs/ would be relative to wherever each one starts.
    return option.name == "output_dir" or (value is not None and value != option.default)


def _absolute(path: str, *, always: bool = False) -> str:
    """A file the user named, absolute; a shipped name, a hub id or builtin: stays as it is.
    A folder still to be made (--output-dir) is absolute all the same."""
    given = Path(path).expanduser()
    return str(given.resolve()) if always or given.exists() else path


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
        *([f"#SBATCH --gpus-per-node={gpus_per_node}"] if not plan.inventory.is_cpu else []),
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
