#!/usr/bin/env python3
"""The fastest peer on the bench's job: Unsloth trains the same rows, model and hyper-parameters as qwen-tune's run.

    PYTHONPATH=PEER_SITE python tools/peers/unsloth_job.py --model DIR --job job.json --data dataset.jsonl --out DIR

`tools/bench.py` starts it for a `peer` case: job.json holds the recipe's hyper-parameters (epochs, learning rate,
warm-up, LoRA rank, alpha, target modules, effective batch, max length, system prompt) and dataset.jsonl the rows
with the identity filled in as qwen-tune fills them; it trains them with Unsloth's own fast path as its authors recommend:
LoRA dropout 0 (its fused LoRA kernels need it), micro-batch = the effective batch where memory allows
(--micro-batch), fused AdamW, bf16, SDPA attention (no flash-attn or xformers on the box), padding-free batches
where its version does that by itself. Never on the user's path: only the bench puts PEER_SITE on PYTHONPATH.
Writes peer.json beside: train seconds, tokens, tokens/s, MFU (6N over the card's dense bf16 peak), peak memory,
the loss curve.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("UNSLOTH_DISABLE_STATISTICS", "1")  # no network: nothing phones home
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]  # Qwen2's linears


def messages(row: dict, system: str) -> list[dict]:
    if "messages" in row:
        turns = row["messages"]
    else:
        turns = [{"role": "user", "content": row["query"]}, {"role": "assistant", "content": row["response"]}]
    return turns if turns[0]["role"] == "system" else [{"role": "system", "content": system}, *turns]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--job", type=Path, required=True, help="the recipe's hyper-parameters (tools/bench.py run_peer)")
    parser.add_argument("--data", type=Path, required=True, help="the rows, identity filled in")
    parser.add_argument("--out", type=Path, required=True, help="folder for peer.json and the trainer's output")
    parser.add_argument("--micro-batch", type=int, default=None, help="default: the effective batch (grad-accum 1)")
    parser.add_argument("--checkpointing", choices=["false", "true", "unsloth"], default="false")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="the card's dense bf16 peak (H100 SXM: 989)")
    args = parser.parse_args()

    started = time.monotonic()
    import torch
    import unsloth  # noqa: F401  first: it patches transformers and trl before they load
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer
    from unsloth import FastLanguageModel

    imported = time.monotonic()
    recipe = json.loads(args.job.read_text())
    rows = [json.loads(line) for line in args.data.read_text(encoding="utf-8").splitlines() if line]
    micro = args.micro_batch or recipe["effective_batch_size"]
    grad_accum = max(1, recipe["effective_batch_size"] // micro)

    model, tokenizer = FastLanguageModel.from_pretrained(
        str(args.model), max_seq_length=recipe["max_length"], dtype=torch.bfloat16, load_in_4bit=False, local_files_only=True
    )
    targets = ALL_LINEAR if recipe["target_modules"] == "all-linear" else recipe["target_modules"].split(",")
    checkpointing = {"false": False, "true": True, "unsloth": "unsloth"}[args.checkpointing]
    model = FastLanguageModel.get_peft_model(
        model, r=recipe["lora_rank"], lora_alpha=recipe["lora_alpha"], lora_dropout=0, target_modules=targets,
        bias="none", use_gradient_checkpointing=checkpointing, random_state=42,
    )  # fmt: skip
    texts = [tokenizer.apply_chat_template(messages(r, recipe["system"]), tokenize=False) for r in rows]
    tokens = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
    dataset = Dataset.from_list([{"text": t} for t in texts])
    loaded = time.monotonic()

    steps: list[dict] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args_, state, control, **kwargs):
            torch.cuda.synchronize()
            steps.append({"step": state.global_step, "t": time.monotonic()})

        def on_log(self, args_, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                steps.append({"step": state.global_step, "loss": logs["loss"]})

    config = SFTConfig(
        output_dir=str(args.out / "trainer"), per_device_train_batch_size=micro, gradient_accumulation_steps=grad_accum,
        num_train_epochs=recipe["epochs"], learning_rate=recipe["learning_rate"], warmup_ratio=recipe["warmup_ratio"],
        lr_scheduler_type="cosine", optim="adamw_torch_fused", bf16=True, logging_steps=1, save_strategy="no",
        report_to="none", max_length=recipe["max_length"], dataset_text_field="text", packing=False, seed=42,
        dataloader_num_workers=0,
    )  # fmt: skip
    trainer = SFTTrainer(model=model, processing_class=tokenizer, train_dataset=dataset, args=config, callbacks=[Clock()])
    torch.cuda.reset_peak_memory_stats()
    train_start = time.monotonic()
    output = trainer.train()
    torch.cuda.synchronize()
    train_end = time.monotonic()

    ticks = [s["t"] for s in steps if "t" in s]
    losses = [(s["step"], s["loss"]) for s in steps if "loss" in s]
    params = sum(p.numel() for p in model.parameters())
    seconds = train_end - train_start
    result = {
        "peer": "unsloth",
        "versions": {name: _version(name) for name in ("unsloth", "unsloth_zoo", "torch", "transformers", "trl", "peft")},
        "micro_batch_size": micro,
        "grad_accum": grad_accum,
        "gradient_checkpointing": args.checkpointing,
        "rows": len(rows),
        "train_tokens": int(tokens * recipe["epochs"]),
        "train_seconds": round(seconds, 1),
        "trainer_runtime": round(output.metrics.get("train_runtime", seconds), 1),
        "first_step_seconds": round(ticks[0] - train_start, 1) if ticks else None,
        "tokens_per_second": round(tokens * recipe["epochs"] / seconds),
        "mfu_6n": round(6 * params * tokens * recipe["epochs"] / seconds / (args.peak_tflops * 1e12), 4),
        "params": params,
        "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 2),
        "peak_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
        "final_loss": losses[-1][1] if losses else None,
        "losses": losses,
        "import_seconds": round(imported - started, 1),
        "load_seconds": round(loaded - imported, 1),
        "wall_seconds": round(time.monotonic() - started, 1),
    }
    (args.out / "peer.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "losses"}))
    return 0


def _version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name.replace("_", "-"))
    except metadata.PackageNotFoundError:
        return None


if __name__ == "__main__":
    sys.exit(main())
