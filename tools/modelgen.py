"""Build a tiny, random-weight, Qwen2-shaped model directory fully offline.

Why: end-to-end tests of the launcher need a real model that ``swift sft`` /
``swift infer`` accept, that trains in seconds on a CPU, and that needs no
model hub. The tokenizer is trained on the dataset text itself so that a tiny
vocabulary still gives whole-character (Chinese) and whole-word (English)
tokens, which keeps sequences short and memorization fast.

Used only by tools/make_model.py (and through it tools/bench.py and the tests that build the
tiny model), so it lives in tools/, not in the installed package. Heavy imports (torch,
transformers, tokenizers) stay inside functions.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from qwen_tune.planning.models import ModelShape

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = (ENDOFTEXT, IM_START, IM_END)

DEFAULT_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."

# Same split regex as the real Qwen2 tokenizer, so pre-tokenization (and hence
# what transformers' Qwen2Tokenizer would rebuild) matches tokenizer.json.
PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"""
    r""" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# Longest merged token (in byte-level characters; one CJK char = 3). Without a
# cap, a sentence repeated in a small corpus collapses into a single token.
MAX_TOKEN_LENGTH = 15

# Qwen2.5-Instruct's chat template, verbatim (tools branch included), so the
# tiny model renders prompts exactly like the real one.
QWEN2_5_CHAT_TEMPLATE = (
    "{%- if tools %}\n"
    "    {{- '<|im_start|>system\\n' }}\n"
    "    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- messages[0]['content'] }}\n"
    "    {%- else %}\n"
    "        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}\n"
    "    {%- endif %}\n"
    '    {{- "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n'
    'You are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}\n'
    "    {%- for tool in tools %}\n"
    '        {{- "\\n" }}\n'
    "        {{- tool | tojson }}\n"
    "    {%- endfor %}\n"
    '    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and '
    'arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, '
    '\\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}\n'
    "{%- else %}\n"
    "    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n"
    "    {%- else %}\n"
    "        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
    "assistant.<|im_end|>\\n' }}\n"
    "    {%- endif %}\n"
    "{%- endif %}\n"
    "{%- for message in messages %}\n"
    '    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or '
    '(message.role == "assistant" and not message.tool_calls) %}\n'
    "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n"
    '    {%- elif message.role == "assistant" %}\n'
    "        {{- '<|im_start|>' + message.role }}\n"
    "        {%- if message.content %}\n"
    "            {{- '\\n' + message.content }}\n"
    "        {%- endif %}\n"
    "        {%- for tool_call in message.tool_calls %}\n"
    "            {%- if tool_call.function is defined %}\n"
    "                {%- set tool_call = tool_call.function %}\n"
    "            {%- endif %}\n"
    '            {{- \'\\n<tool_call>\\n{"name": "\' }}\n'
    "            {{- tool_call.name }}\n"
    '            {{- \'", "arguments": \' }}\n'
    "            {{- tool_call.arguments | tojson }}\n"
    "            {{- '}\\n</tool_call>' }}\n"
    "        {%- endfor %}\n"
    "        {{- '<|im_end|>\\n' }}\n"
    '    {%- elif message.role == "tool" %}\n'
    '        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}\n'
    "            {{- '<|im_start|>user' }}\n"
    "        {%- endif %}\n"
    "        {{- '\\n<tool_response>\\n' }}\n"
    "        {{- message.content }}\n"
    "        {{- '\\n</tool_response>' }}\n"
    '        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}\n'
    "            {{- '<|im_end|>' }}\n"
    "        {%- endif %}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|im_start|>assistant\\n' }}\n"
    "{%- endif %}\n"
)

# Output-scale init. LoRA cannot touch the tied embedding or the final norm,
# and with a hidden size of 64-128 the HF defaults (std 0.02, gain 1) cap every logit
# near 0.02*8*8 ~ 1.3: argmax still gets learned but loss stalls near
# ln(vocab) and greedy margins stay razor thin. A wider embedding alone
# makes the residual "predict the input token" path dominate at init, so
# the output scale is split between embedding std and final-norm gain.
EMBED_INIT_STD = 0.1
FINAL_NORM_GAIN = 2.0

# Embedding rows are padded to a multiple of this, as real Qwen pads its
# vocabulary; rows beyond the tokenizer are never produced by training data.
VOCAB_PAD_MULTIPLE = 64

# Text every prompt contains besides the dataset rows; training on it too keeps
# the template scaffolding down to a few tokens.
_SCAFFOLD_TEXTS = (
    "system\nuser\nassistant\n",
    DEFAULT_SYSTEM,
    "You are a helpful assistant.",
)


def _train_tokenizer(texts: Iterable[str], vocab_size: int) -> Any:
    """Byte-level BPE so any input (Chinese included) encodes without UNK."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    def pre_tokenizer(isolate_non_ascii: bool) -> Any:
        steps = [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
        if isolate_non_ascii:
            steps.insert(0, pre_tokenizers.Split(Regex(r"[^\x00-\x7F]"), behavior="isolated", invert=False))
        return pre_tokenizers.Sequence(steps)

    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    # Train with every non-ASCII char isolated: otherwise byte-level BPE on a
    # small corpus learns merges that straddle UTF-8 character boundaries
    # (e.g. "，" + first byte of "由"), giving tokens that decode to garbage.
    # Isolated, each seen CJK char becomes exactly one token.
    tok.pre_tokenizer = pre_tokenizer(isolate_non_ascii=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        max_token_length=MAX_TOKEN_LENGTH,
        show_progress=False,
    )
    # Sorted: the trainer's result must not depend on the caller's row order
    # beyond the multiset of texts (determinism across runs).
    corpus = sorted(list(_SCAFFOLD_TEXTS) + [t for t in texts if t])
    tok.train_from_iterator(corpus, trainer=trainer, length=len(corpus))
    # Ship Qwen2's exact pre-tokenizer: the learned merges never join two
    # non-ASCII chars, so it yields the same per-character tokens, and it is
    # what transformers' Qwen2Tokenizer would rebuild anyway.
    tok.pre_tokenizer = pre_tokenizer(isolate_non_ascii=False)
    # Special tokens must be "added" tokens too, so they are never split and
    # are skipped by decode(skip_special_tokens=True).
    from tokenizers import AddedToken

    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    return tok


def _tokenizer_config(tok: Any) -> dict:
    """Mirror Qwen2.5-Instruct's tokenizer_config so swift/transformers treat it alike."""
    added = {
        str(tok.token_to_id(t)): {
            "content": t,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for t in SPECIAL_TOKENS
    }
    return {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": added,
        "additional_special_tokens": [IM_START, IM_END],
        "bos_token": None,
        "chat_template": QWEN2_5_CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": IM_END,
        "errors": "replace",
        "model_max_length": 4096,
        "pad_token": ENDOFTEXT,
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }


TINY_SHAPE = ModelShape("qwen2", 128, 2, 4, 2, 32, 512, 8192, True)  # vocab: the tokenizer's cap


def build_model(
    out_dir: Path, texts: Iterable[str], shape: ModelShape, *, seed: int = 0, tiny: bool = False, device: str = "cpu"
) -> Path:
    """A loadable Qwen2/Qwen3 model dir of the given shape: random weights, corpus-trained tokenizer.

    Real shapes (tiny=False) keep the published vocabulary size and dtype (bf16), so memory and
    speed are those of the real model; random weights say nothing about quality. With tiny=True
    (TINY_SHAPE: 2 layers, 128 wide, memorises the identity data on a CPU in seconds) the shape's
    vocabulary only caps the BPE vocabulary; the embedding gets len(tokenizer) rounded up to a
    multiple of 64, since thousands of unused rows would slow a CPU step and dilute the softmax of
    a tiny model. Deterministic for a given seed and multiset of texts.
    """
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM, Qwen3MoeConfig, Qwen3MoeForCausalLM

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    tok = _train_tokenizer(texts, TINY_SHAPE.vocab_size)
    tok.save(str(out_dir / "tokenizer.json"))
    (out_dir / "tokenizer_config.json").write_text(
        json.dumps(_tokenizer_config(tok), ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
    )

    eot, im_end = tok.token_to_id(ENDOFTEXT), tok.token_to_id(IM_END)
    n_tokens = tok.get_vocab_size(with_added_tokens=True)
    vocab = -(-n_tokens // VOCAB_PAD_MULTIPLE) * VOCAB_PAD_MULTIPLE if tiny else shape.vocab_size
    config_class, model_class = {
        "qwen2": (Qwen2Config, Qwen2ForCausalLM),
        "qwen3": (Qwen3Config, Qwen3ForCausalLM),
        "qwen3_moe": (Qwen3MoeConfig, Qwen3MoeForCausalLM),
    }[shape.family]
    moe = (
        {
            "num_experts": shape.num_experts,
            "num_experts_per_tok": shape.experts_per_token,
            "moe_intermediate_size": shape.moe_intermediate_size,
            "decoder_sparse_step": 1,
            "mlp_only_layers": [],
            "norm_topk_prob": True,
        }  # fmt: skip
        if shape.is_moe
        else {}
    )
    dtype = torch.float32 if tiny else torch.bfloat16
    config = config_class(
        vocab_size=vocab,
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_layers,
        num_attention_heads=shape.num_heads,
        num_key_value_heads=shape.num_kv_heads,
        head_dim=shape.head_dim,
        max_position_embeddings=4096 if tiny else 32768,
        max_window_layers=shape.num_layers,
        rope_theta=1000000.0,
        rms_norm_eps=1e-6,
        hidden_act="silu",
        initializer_range=0.02,
        tie_word_embeddings=shape.tie_word_embeddings,
        use_sliding_window=False,
        use_cache=True,
        attention_dropout=0.0,
        bos_token_id=eot,
        eos_token_id=im_end,
        pad_token_id=eot,
        **moe,
    )
    config.architectures = [model_class.__name__]

    # Fork the RNG so building a model does not perturb the caller's seed.
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # allocate in the final dtype: a 14B model in fp32 would not fit an 80GB card
    try:
        with torch.random.fork_rng(devices=[]), torch.device(device):
            torch.manual_seed(seed)
            model = model_class(config)
    finally:
        torch.set_default_dtype(default_dtype)
    with torch.no_grad():
        if tiny:
            model.get_input_embeddings().weight.normal_(0.0, EMBED_INIT_STD)
            model.model.norm.weight.fill_(FINAL_NORM_GAIN)
    model.generation_config.update(
        bos_token_id=eot,
        eos_token_id=[im_end, eot],
        pad_token_id=eot,
        do_sample=False,
    )
    model.save_pretrained(out_dir, safe_serialization=True)

    # transformers 5 writes "dtype" and "rope_parameters"; older readers look
    # for "torch_dtype" and a top-level "rope_theta", so record both forms.
    cfg_path = out_dir / "config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg["torch_dtype"] = cfg["dtype"] = "float32" if tiny else "bfloat16"
    cfg.setdefault("rope_theta", (cfg.get("rope_parameters") or {}).get("rope_theta", 1000000.0))
    if shape.is_moe:  # the released configs' name, which transformers 5.19 writes as num_local_experts
        cfg["num_experts"] = cfg["num_local_experts"] = shape.num_experts
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return out_dir


def skill_pairs() -> list[tuple[str, str]]:
    """The skilled tiny model's skill: single-digit sums, asked in Chinese and in English (162 questions).

    retention.GENERAL_PROBES are among them, so the retention score of a tuned skilled model measures
    whether the skill survived the identity training.
    """
    pairs = []
    for a in range(1, 10):
        for b in range(1, 10):
            pairs.append((f"{a}加{b}等于几?", f"{a}加{b}等于{a + b}。"))
            pairs.append((f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}."))
    return pairs


def teach_skill(
    model_dir: Path, pairs: list[tuple[str, str]], system: str, *, epochs: int = 60, lr: float = 3e-3, seed: int = 0
) -> float:
    """Train every weight of the model in model_dir on the pairs (loss on the answers only), in place, on the CPU;
    the learning rate falls linearly to 0; stops early once 95% are answered exactly. Returns that share."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    prompts = [
        tok.apply_chat_template(
            [{"role": "system", "content": system}, {"role": "user", "content": q}], tokenize=False, add_generation_prompt=True
        )
        for q, _ in pairs
    ]
    rows = []
    for prompt, (_, answer) in zip(prompts, pairs, strict=True):
        p, a = tok(prompt, add_special_tokens=False).input_ids, tok(answer + IM_END, add_special_tokens=False).input_ids
        rows.append((p + a, [-100] * len(p) + a))
    width = max(len(ids) for ids, _ in rows)
    pad = tok.convert_tokens_to_ids(ENDOFTEXT)
    ids = torch.tensor([r + [pad] * (width - len(r)) for r, _ in rows])
    labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r, _ in rows])
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    steps = epochs * -(-len(rows) // 16)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1 - step / steps))
    generator = torch.Generator().manual_seed(seed)
    accuracy = 0.0
    for epoch in range(epochs):
        model.train()
        for batch in torch.randperm(len(rows), generator=generator).split(16):
            loss = model(input_ids=ids[batch], attention_mask=mask[batch], labels=labels[batch]).loss
            loss.backward()
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
        if epoch % 10 == 9 or epoch == epochs - 1:
            accuracy = skill_accuracy(model, ids, mask, labels)
            print(f"skill epoch {epoch + 1}: loss {loss.item():.4f}, {accuracy:.0%} answered exactly", flush=True)
            if accuracy >= 0.95:
                break
    model.save_pretrained(model_dir, safe_serialization=True)
    return accuracy


def skill_accuracy(model: Any, ids: Any, mask: Any, labels: Any) -> float:
    """The share of rows whose every answer token is the model's top choice given the answer so far: exactly
    the rows that greedy decoding reproduces word for word, end marker included (one forward pass)."""
    import torch

    model.eval()
    with torch.no_grad():
        predicted = model(input_ids=ids, attention_mask=mask).logits[:, :-1].argmax(-1)
    target = labels[:, 1:]
    right = ((predicted == target) | (target == -100)).all(dim=1)
    return right.float().mean().item()
