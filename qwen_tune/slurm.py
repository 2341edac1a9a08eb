"""An sbatch script for a multi-node plan: one task per node, each running the same qwen-tune command.

SLURM gives every task its node rank and the node list; the first node is torchrun's master.
qwen-tune on each node then plans for its own GPUs and launches swift with NNODES/NODE_RANK.
"""

from __future__ import annotations

import shlex

from qwen_tune.jobs import DEFAULT_RECIPE, JobOptions
from qwen_tune.plan import Plan

DEFAULT_PORT = 29500


def node_command(options: JobOptions) -> str:
    """`qwen-tune run` with the user's choices, quoted, plus the per-node values SLURM fills in."""
    argv = ["qwen-tune", "run"]
    if options.recipe != DEFAULT_RECIPE:
        argv += ["--recipe", options.recipe]
    for flag, value in (("--model", options.model), ("--dataset", options.dataset), ("--profile", options.profile),
                        ("--name", options.name), ("--author", options.author)):  # fmt: skip
        if value:
            argv += [flag, value]
    argv += ["--output-dir", options.output_dir]
    per_node = '--nnodes "$SLURM_NNODES" --node-rank "$SLURM_NODEID" --master-addr "$MASTER_ADDR" --master-port "$MASTER_PORT"'
    return f"exec {shlex.join(argv)} {per_node}"


def sbatch_script(plan: Plan, options: JobOptions) -> str:
    gpus_per_node = len(plan.inventory.gpus)
    port = options.master_port or DEFAULT_PORT
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name={shlex.quote('qwen-tune-' + plan.recipe.name)}",
        f"#SBATCH --nodes={options.nnodes}",
        "#SBATCH --ntasks-per-node=1",
        f"#SBATCH --gpus-per-node={gpus_per_node}",
        "#SBATCH --output=qwen-tune-%j.log",
        "# Written by `qwen-tune plan --slurm`. Each node runs the same qwen-tune command with its own",
        f"# rank; plan per node: {plan.profile.name}, micro-batch {plan.setup.micro_batch_size} × grad-accum {plan.grad_accum}"
        f" × {plan.n_devices} GPUs = effective batch {plan.effective_batch}.",
        "set -euo pipefail",
        'MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
        f"MASTER_PORT={port}",
        "export MASTER_ADDR MASTER_PORT",
        f"srun --kill-on-bad-exit=1 bash -c {shlex.quote(node_command(options))}",
    ]
    return "\n".join(lines) + "\n"
