#!/usr/bin/env python3
"""What does attention cost the first time it meets a new batch shape? (issue 5: steps that stall)

    python tools/probes/attention_probe.py --out attention.json [--heads 28 --kv-heads 4 --head-dim 128 --batch 16]

swift pads each batch to its own longest sample, so a short-sample job meets a new (batch, length)
shape every few steps. This times forward + backward of one layer's attention, as transformers calls
it for a padded batch (boolean mask, key/value heads repeated), for each new length in turn: the first
call of a shape and a repeat, per backend: torch's default choice, the default with cuDNN's attention
switched off, and eager (matmul + softmax, what `--attn_impl eager` runs). Also lists which kernels
the default ran.
"""

from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--heads", type=int, default=28)
    parser.add_argument("--kv-heads", type=int, default=4)
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lengths", default="64,71,77,80,86,93")
    args = parser.parse_args()

    import torch
    import torch.nn.functional as F

    device = torch.device("cuda")
    lengths = [int(x) for x in args.lengths.split(",")]

    def inputs(length: int, seed: int):
        generator = torch.Generator(device=device).manual_seed(seed)
        q = torch.randn(args.batch, args.heads, length, args.head_dim, device=device, dtype=torch.bfloat16, generator=generator)
        kv = [torch.randn(args.batch, args.kv_heads, length, args.head_dim, device=device, dtype=torch.bfloat16, generator=generator)
              for _ in range(2)]  # fmt: skip
        pad = torch.randint(0, length // 4, (args.batch,), device=device, generator=generator)
        keep = torch.arange(length, device=device)[None, :] >= pad[:, None]  # left padding, as swift's template pads
        causal = torch.ones(length, length, device=device, dtype=torch.bool).tril()
        mask = causal[None, None] & keep[:, None, None, :]
        return q.requires_grad_(), *(t.requires_grad_() for t in kv), mask

    def attend(kind: str, q, k, v, mask):
        k, v = (t.repeat_interleave(args.heads // args.kv_heads, dim=1) for t in (k, v))
        if kind == "eager":
            scores = (q @ k.transpose(-1, -2)) * args.head_dim**-0.5
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min).softmax(-1, dtype=torch.float32).to(q.dtype)
            return scores @ v
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    def once(kind: str, length: int, seed: int) -> float:
        q, k, v, mask = inputs(length, seed)
        torch.cuda.synchronize()
        start = time.perf_counter()
        out = attend(kind, q, k, v, mask)
        out.float().pow(2).mean().backward()
        torch.cuda.synchronize()
        return time.perf_counter() - start

    results: dict = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                     "cudnn": torch.backends.cudnn.version(), "shape": vars(args), "cases": {}}  # fmt: skip
    for kind in ("default", "default without cuDNN", "eager"):
        torch.backends.cuda.enable_cudnn_sdp(kind != "default without cuDNN")
        rows = []
        for i, length in enumerate(lengths):
            first = once(kind, length, seed=i)
            repeat = min(once(kind, length, seed=100 + i) for _ in range(3))
            rows.append({"length": length, "first_ms": round(first * 1e3, 2), "repeat_ms": round(repeat * 1e3, 3)})
        results["cases"][kind] = rows
        print(kind, [(r["length"], r["first_ms"], r["repeat_ms"]) for r in rows], flush=True)
    torch.backends.cuda.enable_cudnn_sdp(True)
    q, k, v, mask = inputs(lengths[0] + 1, seed=7)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as profile:
        attend("default", q, k, v, mask).float().pow(2).mean().backward()
        torch.cuda.synchronize()
    results["default_kernels"] = sorted({e.name[:120] for e in profile.events() if "attention" in e.name.lower() or "fmha" in e.name.lower()
                                         or "cudnn" in e.name.lower() or "flash" in e.name.lower()})  # fmt: skip
    print(results["default_kernels"], flush=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
