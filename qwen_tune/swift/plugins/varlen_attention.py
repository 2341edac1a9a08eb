"""Training without padding, where no flash-attn package is installed: swift imports this file (--external_plugins).

It registers the attention `torch_varlen` in transformers' AttentionInterface: PyTorch's own FlashAttention-2
varlen kernel (`torch.nn.attention.varlen.varlen_attn`, torch >= 2.10, CUDA sm80+, bf16/fp16), with k/v
un-repeated (the kernel takes GQA), and lets swift 4.6 accept `--packing`/`--padding_free` with it (swift asks
for a flash-attn name by string: SftArguments._check_padding_free is widened for this name alone).

swift's packing of the rows into packs runs in a thread here, not in a process that imports swift again.

What arrives (q/k/v [B, H, S, D]; returns [B, S, Hq, D]):
- swift's packed/padding-free batch: B == 1, no mask, position_ids restarting at 0 for every row: the row
  bounds come from position_ids (one host sync a forward, cached for every layer and the recompute);
- an ordinary padded batch (evaluation, generation's prefill): the 2-D padding mask that transformers'
  flash mask function gives (registered for this name, so no 4-D mask is built): unpad, varlen, pad again;
- decoding with a KV cache (q shorter than k), or CPU tensors: plain SDPA, so swift infer, the identity probes
  and the CPU tests take the same code.
The name has no "flash" in it on purpose: transformers would then look for a kernel on the Hub.
"""

from __future__ import annotations

import inspect
import queue
import threading
import weakref

import torch
import torch.nn.functional as F

NAME = "torch_varlen"

try:  # torch >= 2.10; 2.13 added enable_gqa (required when k/v have fewer heads), 2.11 takes GQA without it
    from torch.nn.attention.varlen import varlen_attn

    _GQA = {"enable_gqa": True} if "enable_gqa" in inspect.signature(varlen_attn).parameters else {}
except ImportError:  # pragma: no cover - older torch: only the SDPA paths work
    varlen_attn, _GQA = None, {}

_bounds_cache: dict = {"ref": None, "version": None, "value": None}


def row_bounds(position_ids: torch.Tensor) -> tuple[torch.Tensor, int]:
    """cu_seqlens (int32) and the longest row of a packed batch, from position_ids that restart for every row."""
    ref = _bounds_cache["ref"]
    if ref is not None and ref() is position_ids and _bounds_cache["version"] == position_ids._version:
        return _bounds_cache["value"]
    pos = position_ids.reshape(-1)
    starts = torch.ones_like(pos, dtype=torch.bool)
    starts[1:] = pos[1:] != pos[:-1] + 1
    first = torch.nonzero(starts).flatten().to(torch.int32)
    cu = torch.cat([first, first.new_tensor([pos.numel()])])
    value = (cu, int((cu[1:] - cu[:-1]).max()))
    _bounds_cache.update(ref=weakref.ref(position_ids), version=position_ids._version, value=value)
    return value


def _sdpa(q, k, v, scale, causal, mask=None):  # [B, H, S, D]
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, is_causal=causal and mask is None, scale=scale, enable_gqa=q.shape[1] != k.shape[1]
    )


def _varlen(q, k, v, cu_q, cu_k, max_q, max_k, scale, causal, sliding_window):  # q [T, Hq, D], k/v [T, Hkv, D]
    if not q.is_cuda or varlen_attn is None:  # the CPU (tests): one SDPA per row, the same function
        rows = []
        for i in range(cu_q.numel() - 1):
            a, b, c, d = int(cu_q[i]), int(cu_q[i + 1]), int(cu_k[i]), int(cu_k[i + 1])
            out = _sdpa(q[a:b].transpose(0, 1)[None], k[c:d].transpose(0, 1)[None], v[c:d].transpose(0, 1)[None], scale, causal)
            rows.append(out[0].transpose(0, 1))
        return torch.cat(rows)
    if sliding_window is not None:
        window = (sliding_window - 1, 0 if causal else sliding_window - 1)
    else:
        window = (-1, 0) if causal else (-1, -1)  # a tuple: varlen_attn compares window_size == (-1, 0)
    return varlen_attn(q, k, v, cu_q, cu_k, int(max_q), int(max_k), scale=scale, window_size=window, **_GQA)


def torch_varlen_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, sliding_window=None,
                           is_causal=None, **kwargs):  # fmt: skip
    if dropout:
        raise ValueError(f"{NAME}: attention dropout is not supported (the model's attention_dropout must be 0)")
    causal = module.is_causal if is_causal is None else is_causal
    batch, q_heads, length, dim = query.shape
    kv_heads, kv_length = key.shape[1], key.shape[2]
    dtype = query.dtype
    if query.is_cuda and dtype == torch.float32:  # the kernel takes 16-bit inputs only
        half = torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else torch.bfloat16
        query, key, value = query.to(half), key.to(half), value.to(half)

    if length != kv_length:  # decoding with a KV cache: no training path
        mask = None
        if attention_mask is not None or causal:
            keep = torch.ones(length, kv_length, dtype=torch.bool, device=query.device)
            if causal:
                keep = torch.tril(keep, diagonal=kv_length - length)
            mask = keep[None, None]
            if attention_mask is not None:  # the flash mask function's 2-D [B, Sk] padding mask
                mask = mask & attention_mask[:, None, None, -kv_length:].bool()
        return _sdpa(query, key, value, scaling, False, mask).transpose(1, 2).to(dtype).contiguous(), None

    q = query.transpose(1, 2).reshape(batch * length, q_heads, dim)
    k = key.transpose(1, 2).reshape(batch * kv_length, kv_heads, dim)
    v = value.transpose(1, 2).reshape(batch * kv_length, kv_heads, dim)

    if attention_mask is not None:  # a padded batch
        keep = attention_mask[:, -length:].bool()
        lengths = keep.sum(-1, dtype=torch.int32)
        index = torch.nonzero(keep.flatten()).flatten()
        cu = F.pad(torch.cumsum(lengths, 0, dtype=torch.int32), (1, 0))
        longest = int(lengths.max())
        packed = _varlen(q[index], k[index], v[index], cu, cu, longest, longest, scaling, causal, sliding_window)
        out = packed.new_zeros(batch * length, q_heads, dim)
        out[index] = packed
        return out.view(batch, length, q_heads, dim).to(dtype), None

    cu_q, cu_k = kwargs.get("cu_seq_lens_q"), kwargs.get("cu_seq_lens_k")
    position_ids = kwargs.get("position_ids")
    if cu_q is not None and cu_k is not None:
        max_q, max_k = kwargs.get("max_length_q"), kwargs.get("max_length_k")
        if max_q is None or max_k is None:
            max_q = max_k = int((cu_q[1:] - cu_q[:-1]).max())
        cu_q, cu_k = cu_q.to(torch.int32), cu_k.to(torch.int32)
    elif batch == 1 and position_ids is not None and position_ids.dim() == 2:
        cu_q, max_q = row_bounds(position_ids)
        cu_k, max_k = cu_q, max_q
    else:
        cu_q = cu_k = torch.arange(0, (batch + 1) * length, length, dtype=torch.int32, device=q.device)
        max_q = max_k = length
    out = _varlen(q, k, v, cu_q, cu_k, max_q, max_k, scaling, causal, sliding_window)
    return out.view(batch, length, q_heads, dim).to(dtype), None


def register() -> None:
    """The attention and its mask function under NAME (flash's mask: the 2-D padding mask or None, never 4-D;
    without a mask function of its own a custom name gets no mask at all, and a padded batch attends to padding)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, flash_attention_mask

    AttentionInterface.register(NAME, torch_varlen_attention)
    AttentionMaskInterface.register(NAME, flash_attention_mask)


def allow_in_swift() -> None:
    """swift 4.6 refuses packing and padding_free unless --attn_impl names flash-attn; this name runs the same kernel."""
    try:
        from swift.arguments import SftArguments
    except ImportError:
        return
    if getattr(SftArguments, "_qwen_tune_varlen", False):
        return
    check = SftArguments._check_padding_free

    def check_padding_free(self):
        if (self.padding_free or self.packing) and self.attn_impl == NAME:
            self.padding_free = True  # as swift's own check does for packing
            return None
        return check(self)

    SftArguments._check_padding_free = check_padding_free
    SftArguments._qwen_tune_varlen = True


class _ThreadContext:
    """The two parts of a multiprocessing context swift's PackingDataset uses, as a thread and its queue."""

    Queue = staticmethod(queue.Queue)

    @staticmethod
    def Process(target, args=(), daemon=None):  # noqa: N802 - multiprocessing's name
        return threading.Thread(target=target, args=args, daemon=daemon)


def pack_in_this_process() -> None:
    """swift packs in a worker process, and where CUDA is up already (the model is loaded first) it spawns one, which
    imports swift again: 7 s of a 50-row job on the H100 (2026-12-05) for a few milliseconds of bin packing. The
    worker is pure Python: run it in a thread of this process instead."""
    try:
        from swift.dataset import packing
    except ImportError:
        return
    if getattr(packing, "_qwen_tune_in_process", False):
        return
    packing._resolve_mp_context = lambda multiprocessing_context=None: _ThreadContext
    packing._qwen_tune_in_process = True


register()
allow_in_swift()
pack_in_this_process()
