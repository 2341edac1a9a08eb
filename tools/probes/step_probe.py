#!/usr/bin/env python3
"""How fast can one training step of the recipe's LoRA be, outside swift? (issue 5: what bounds the speed)

    python tools/probes/step_probe.py MODEL_DIR --out probe.json [--batch 16 --seq 80 --steps 10]

Loads the model in bf16 with sdpa on cuda:0, attaches the recipe's LoRA with peft (r8, alpha 32,
all-linear), then times forward + backward + AdamW on random tokens: the GPU time (CUDA events),
the host time to issue the step, and the kernel count from torch.profiler. If the host time is
close to the step time, the step is bound by Python and kernel launches, not by the GPU.
MFU counts 6 × parameters × tokens (the usual convention; LoRA skips the frozen weights' gradients,
so the arithmetic really done is nearer 4 ×) against the H100's dense bf16 peak, 989 TFLOP/s.
"""

from __future__ import annotations

import argparse
import json
import time

PEAK_FLOPS = 989e12


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--out", required=True)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=80)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(
        args.model, dtype=torch.bfloat16, attn_implementation="sdpa", device_map="cuda:0"
    )
    load_seconds = time.perf_counter() - t0
    n_params = sum(p.numel() for p in model.parameters())
    results = {"load_seconds": round(load_seconds, 1), "params": n_params, "batch": args.batch, "seq": args.seq, "cases": {}}

    def measure(name: str, dropout: float, fused: bool, batch: int, checkpointing: bool = False) -> None:
        peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=32, lora_dropout=dropout, target_modules="all-linear"))
        if checkpointing:
            peft_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
            peft_model.enable_input_require_grads()
        trainable = [p for p in peft_model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=1e-4, fused=fused)
        ids = torch.randint(0, model.config.vocab_size, (batch, args.seq), device="cuda:0")

        def step() -> float:
            issued = time.perf_counter()
            loss = peft_model(input_ids=ids, labels=ids).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return time.perf_counter() - issued

        for _ in range(3):
            step()
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        host = []
        start.record()
        for _ in range(args.steps):
            host.append(step())
        end.record()
        torch.cuda.synchronize()
        step_seconds = start.elapsed_time(end) / 1000 / args.steps
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            step()
            torch.cuda.synchronize()
        kernels = sum(e.count for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA)
        gpu_busy = sum(e.self_device_time_total for e in prof.key_averages()) / 1e6
        tokens = batch * args.seq
        results["cases"][name] = {
            "step_seconds": round(step_seconds, 4),
            "host_issue_seconds": round(sum(host) / len(host), 4),
            "gpu_busy_seconds": round(gpu_busy, 4),
            "cuda_kernels_per_step": kernels,
            "tokens_per_second": round(tokens / step_seconds),
            "mfu_6n": round(6 * n_params * tokens / step_seconds / PEAK_FLOPS, 3),
            "peak_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
        }
        print(name, results["cases"][name], flush=True)
        peft_model.unload()  # the base model, without LoRA layers, for the next case
        optimizer.state.clear()  # free AdamW's moments before the next case
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()

    measure("recipe (dropout 0.05)", 0.05, fused=False, batch=args.batch)
    measure("dropout 0", 0.0, fused=False, batch=args.batch)
    measure("dropout 0 + fused AdamW", 0.0, fused=True, batch=args.batch)
    measure("micro-batch 1", 0.05, fused=False, batch=1)
    measure("micro-batch 1 + checkpointing", 0.05, fused=False, batch=1, checkpointing=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
