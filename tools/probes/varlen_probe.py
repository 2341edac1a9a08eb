#!/usr/bin/env python3
"""Is torch's own FlashAttention varlen kernel right, and fast, for packed rows? (issue 22)

    python tools/probes/varlen_probe.py [--heads 28 --kv-heads 4 --head-dim 128 --lengths 87,300,1500,40,2048,700,5,999]

qwen-tune's swift plugin (qwen_tune/swift/plugins/varlen_attention.py) runs packed rows through
`torch.nn.attention.varlen.varlen_attn` with the model's key/value heads as they are (GQA). This checks it against
SDPA row by row, forward and backward, in bf16 on the GPU, which dtypes it takes, and times one layer's attention
forward + backward: varlen over the packed rows, against the same rows padded (SDPA with a 4-D mask, and causal
SDPA without one). Printed as one line each; the 2026-12-05 H100 figures are in docs/hardware-validation.md.
"""

from __future__ import annotations

import argparse
import inspect
import itertools
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--heads", type=int, default=28)
    parser.add_argument("--kv-heads", type=int, default=4)
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--lengths", default="87,300,1500,40,2048,700,5,999")
    args = parser.parse_args()

    import torch
    import torch.nn.functional as F
    from torch.nn.attention.varlen import varlen_attn

    gqa = {"enable_gqa": True} if "enable_gqa" in inspect.signature(varlen_attn).parameters else {}
    print(torch.__version__, torch.cuda.get_device_name(), inspect.signature(varlen_attn))
    torch.manual_seed(0)
    device, bf16, heads, kv, dim = "cuda", torch.bfloat16, args.heads, args.kv_heads, args.head_dim
    lengths = [int(x) for x in args.lengths.split(",")]
    total, longest = sum(lengths), max(lengths)
    cu = torch.tensor([0, *itertools.accumulate(lengths)], dtype=torch.int32, device=device)

    def tokens(h):
        return torch.randn(total, h, dim, device=device, dtype=bf16, requires_grad=True)

    q, k, v = tokens(heads), tokens(kv), tokens(kv)
    out = varlen_attn(q, k, v, cu, cu, longest, longest, window_size=(-1, 0), **gqa)
    grad = torch.randn_like(out)
    out.backward(grad)
    qr, kr, vr = (x.detach().clone().requires_grad_() for x in (q, k, v))

    def row(x, a, b):
        return x[a:b].transpose(0, 1)[None]

    bounds = list(zip(cu[:-1].tolist(), cu[1:].tolist(), strict=True))
    reference = torch.cat(
        [F.scaled_dot_product_attention(row(qr, a, b), row(kr, a, b), row(vr, a, b), is_causal=True, enable_gqa=True)[0]
         .transpose(0, 1) for a, b in bounds]
    )  # fmt: skip
    reference.backward(grad)

    def error(a, b):
        return f"{(a.float() - b.float()).abs().max().item():.4g} of {b.float().abs().max().item():.4g}"

    print(f"max abs error: out {error(out, reference)}, dq {error(q.grad, qr.grad)}, dk {error(k.grad, kr.grad)}, "
          f"dv {error(v.grad, vr.grad)}")  # fmt: skip
    for dtype in (torch.float16, torch.float32):
        try:
            varlen_attn(*(x.detach().to(dtype) for x in (q, k, v)), cu, cu, longest, longest, window_size=(-1, 0), **gqa)
            print(f"{dtype}: runs")
        except Exception as exc:  # noqa: BLE001 - the probe reports what the kernel refuses
            print(f"{dtype}: refused: {str(exc)[:120]}")

    batch = len(lengths)
    qp = torch.randn(batch, heads, longest, dim, device=device, dtype=bf16, requires_grad=True)
    kp = torch.randn(batch, kv, longest, dim, device=device, dtype=bf16, requires_grad=True)
    vp = torch.randn_like(kp, requires_grad=True)
    keep = torch.arange(longest, device=device)[None] < torch.tensor(lengths, device=device)[:, None]
    mask = torch.tril(torch.ones(longest, longest, dtype=torch.bool, device=device))[None, None] & keep[:, None, None, :]

    def timed(step, repeats=10):
        step()
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            step()
        torch.cuda.synchronize()
        return (time.perf_counter() - start) / repeats * 1e3

    packed = timed(lambda: varlen_attn(q, k, v, cu, cu, longest, longest, window_size=(-1, 0), **gqa).sum().backward())
    masked = timed(lambda: F.scaled_dot_product_attention(qp, kp, vp, attn_mask=mask, enable_gqa=True).sum().backward())
    causal = timed(lambda: F.scaled_dot_product_attention(qp, kp, vp, is_causal=True, enable_gqa=True).sum().backward())
    print(f"one layer, forward + backward: varlen {packed:.2f} ms, padded SDPA with a 4-D mask {masked:.2f} ms, "
          f"padded causal SDPA {causal:.2f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
