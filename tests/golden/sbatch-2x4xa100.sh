#!/bin/bash
#SBATCH --job-name=qwen-tune-self-cognition-qwen2.5-7b
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=4
#SBATCH --output=qwen-tune-%j.log
# Written by `qwen-tune plan --slurm`. Each node runs the same qwen-tune command with its own
# rank; plan per node: multi-gpu, micro-batch 2 × grad-accum 1 × 8 GPUs = effective batch 16.
set -euo pipefail
MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
MASTER_PORT=29500
export MASTER_ADDR MASTER_PORT
srun --kill-on-bad-exit=1 bash -c 'exec qwen-tune run --output-dir runs --nnodes "$SLURM_NNODES" --node-rank "$SLURM_NODEID" --master-addr "$MASTER_ADDR" --master-port "$MASTER_PORT"'
