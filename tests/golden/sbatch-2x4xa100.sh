#!/bin/bash
#SBATCH --job-name=qwen-tune-self-cognition-qwen2.5-7b
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=4
#SBATCH --output=qwen-tune-%j.log
# Your cluster may need these: edit the value and remove one '#' to switch a line on (--mem=0: all of a node's).
##SBATCH --partition=PARTITION
##SBATCH --account=ACCOUNT
##SBATCH --time=04:00:00
##SBATCH --mem=0
##SBATCH --cpus-per-task=16
# Written by `qwen-tune plan --slurm`. Each node runs the same qwen-tune command with its own
# rank; plan per node: multi-gpu, micro-batch 1 × grad-accum 1 × 8 GPUs = effective batch 14.
set -euo pipefail
# The environment this script was written from:
export PATH='/opt/qwen tune/bin':"$PATH"
# This script runs on the job's first node, the master; the port is free there when the job starts.
MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
MASTER_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])')
export MASTER_ADDR MASTER_PORT
srun --kill-on-bad-exit=1 bash -c 'exec qwen-tune run --output-dir /scratch/runs --nnodes "$SLURM_NNODES" --node-rank "$SLURM_NODEID" --master-addr "$MASTER_ADDR" --master-port "$MASTER_PORT"'
