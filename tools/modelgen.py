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


def _train_tokenizer(texts: Iterable[str], vocab_size: int, added: tuple[tuple[str, bool], ...] = ()) -> Any:
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
    # Qwen3.5's: <think> and </think> whole tokens that decoding keeps, the vision markers special ones.
    tok.add_tokens([AddedToken(t, special=special, normalized=False) for t, special in added])
    return tok


def _tokenizer_config(tok: Any, extra: tuple[tuple[str, bool], ...] = ()) -> dict:
    """Mirror Qwen2.5-Instruct's tokenizer_config so swift/transformers treat it alike."""
    added = {
        str(tok.token_to_id(t)): {
            "content": t,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": special,
        }
        for t, special in tuple((t, True) for t in SPECIAL_TOKENS) + extra
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
# A tiny text-only Qwen3.5 for CI: 3 Gated DeltaNet layers and 1 gated full-attention layer, 128 wide (qwen3_5_text,
# what transformers' Qwen3_5ForCausalLM loads; swift trains it as qwen3_next: docs/models.md).
TINY_QWEN35_SHAPE = ModelShape(
    "qwen3_5_text", 128, 4, 4, 2, 32, 512, 8192, True,
    linear_layers=3, linear_key_heads=2, linear_value_heads=4, linear_key_head_dim=32, linear_value_head_dim=32, linear_conv_kernel=4,
)  # fmt: skip
THINK_TOKENS = (("<think>", False), ("</think>", False))
# The composite checkpoints' vision markers, and the ids their config names them by (Qwen3.5's config.json).
VISION_TOKENS = (("<|vision_start|>", True), ("<|vision_end|>", True), ("<|image_pad|>", True), ("<|video_pad|>", True))
VISION_TOKEN_IDS = {"<|vision_start|>": "vision_start_token_id", "<|vision_end|>": "vision_end_token_id",
                    "<|image_pad|>": "image_token_id", "<|video_pad|>": "video_token_id"}  # fmt: skip
# Qwen3.5's vision tower (vision_config of Qwen3.5-9B/27B/35B-A3B); tools/make_model.py names the sizes that differ.
VISION_CONFIG = {"depth": 27, "hidden_size": 1152, "intermediate_size": 4304, "num_heads": 16, "patch_size": 16,
                 "temporal_patch_size": 2, "spatial_merge_size": 2, "in_channels": 3, "num_position_embeddings": 2304,
                 "hidden_act": "gelu_pytorch_tanh"}  # fmt: skip
# What AutoProcessor reads beside the tokenizer (Qwen3VLProcessor: Qwen3.5's preprocessor_config.json and
# video_preprocessor_config.json, the fields that matter for text-only training).
PREPROCESSOR = {"patch_size": 16, "temporal_patch_size": 2, "merge_size": 2, "image_mean": [0.5, 0.5, 0.5],
                "image_std": [0.5, 0.5, 0.5], "processor_class": "Qwen3VLProcessor"}  # fmt: skip
IMAGE_PROCESSOR = {**PREPROCESSOR, "image_processor_type": "Qwen2VLImageProcessorFast",
                   "size": {"longest_edge": 16777216, "shortest_edge": 65536}}  # fmt: skip
VIDEO_PROCESSOR = {**PREPROCESSOR, "video_processor_type": "Qwen3VLVideoProcessor",
                   "size": {"longest_edge": 25165824, "shortest_edge": 4096}}  # fmt: skip


def build_model(
    out_dir: Path, texts: Iterable[str], shape: ModelShape, *, seed: int = 0, tiny: bool = False, device: str = "cpu"
) -> Path:
    """A loadable Qwen2/Qwen3/Qwen3.5 model dir of the given shape: random weights, corpus-trained tokenizer. Qwen3.5's
    composite shapes (family qwen3_5/qwen3_5_moe) get the vision tower and the processor files swift loads with it.

    Real shapes (tiny=False) keep the published vocabulary size and dtype (bf16), so memory and
    speed are those of the real model; random weights say nothing about quality. With tiny=True
    (TINY_SHAPE: 2 layers, 128 wide, memorises the identity data on a CPU in seconds) the shape's
    vocabulary only caps the BPE vocabulary; the embedding gets len(tokenizer) rounded up to a
    multiple of 64, since thousands of unused rows would slow a CPU step and dilute the softmax of
    a tiny model. Deterministic for a given seed and multiset of texts.
    """
    import torch

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    hybrid = shape.is_hybrid
    composite = shape.family in ("qwen3_5", "qwen3_5_moe")
    added = (THINK_TOKENS if hybrid else ()) + (VISION_TOKENS if composite else ())
    tok = _train_tokenizer(texts, TINY_SHAPE.vocab_size, added)
    tok.save(str(out_dir / "tokenizer.json"))
    (out_dir / "tokenizer_config.json").write_text(
        json.dumps(_tokenizer_config(tok, added), ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
    )

    eot, im_end = tok.token_to_id(ENDOFTEXT), tok.token_to_id(IM_END)
    n_tokens = tok.get_vocab_size(with_added_tokens=True)
    vocab = -(-n_tokens // VOCAB_PAD_MULTIPLE) * VOCAB_PAD_MULTIPLE if tiny else shape.vocab_size
    dtype = torch.float32 if tiny else torch.bfloat16
    text = {
        "vocab_size": vocab,
        "hidden_size": shape.hidden_size,
        "intermediate_size": shape.intermediate_size,
        "num_hidden_layers": shape.num_layers,
        "num_attention_heads": shape.num_heads,
        "num_key_value_heads": shape.num_kv_heads,
        "head_dim": shape.head_dim,
        "max_position_embeddings": 4096 if tiny else 32768,
        "rms_norm_eps": 1e-6,
        "hidden_act": "silu",
        "initializer_range": 0.02,
        "tie_word_embeddings": shape.tie_word_embeddings,
        "use_cache": True,
        "attention_dropout": 0.0,
        "bos_token_id": eot,
        "eos_token_id": im_end,
        "pad_token_id": eot,
    }
    if shape.is_moe:
        text.update(num_experts=shape.num_experts, num_experts_per_tok=shape.experts_per_token,
                    moe_intermediate_size=shape.moe_intermediate_size, norm_topk_prob=True)  # fmt: skip
    if hybrid:
        text.update(_hybrid_config(shape))
    else:
        text.update(max_window_layers=shape.num_layers, rope_theta=1000000.0, use_sliding_window=False)
        if shape.is_moe:
            text.update(decoder_sparse_step=1, mlp_only_layers=[])
    config_class, model_class = _classes(shape.family)
    if composite:
        vision = {**VISION_CONFIG, **_vision_size(shape), "out_hidden_size": shape.hidden_size}
        ids = {VISION_TOKEN_IDS[t]: tok.token_to_id(t) for t, _ in VISION_TOKENS}
        config = config_class(text_config=text, vision_config=vision, tie_word_embeddings=shape.tie_word_embeddings, **ids)
        for name, processor in (
            ("preprocessor_config.json", IMAGE_PROCESSOR),
            ("video_preprocessor_config.json", VIDEO_PROCESSOR),
        ):
            (out_dir / name).write_text(json.dumps(processor, indent=2) + "\n", encoding="utf-8")
    else:
        config = config_class(**text)
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
            # Qwen3.5's RMSNorm scales by 1 + weight (zero-centred).
            model.model.norm.weight.fill_(FINAL_NORM_GAIN - 1 if hybrid else FINAL_NORM_GAIN)
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
    if not hybrid:
        cfg.setdefault("rope_theta", (cfg.get("rope_parameters") or {}).get("rope_theta", 1000000.0))
    if shape.is_moe and not hybrid:  # the released configs' name, which transformers 5.19 writes as num_local_experts
        cfg["num_experts"] = cfg["num_local_experts"] = shape.num_experts
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return out_dir


def _classes(family: str) -> tuple[Any, Any]:
    """transformers' config and model classes for a config.json model_type: what swift loads for it."""
    import transformers as t

    return {
        "qwen2": (t.Qwen2Config, t.Qwen2ForCausalLM),
        "qwen3": (t.Qwen3Config, t.Qwen3ForCausalLM),
        "qwen3_moe": (t.Qwen3MoeConfig, t.Qwen3MoeForCausalLM),
        "qwen3_5_text": (t.Qwen3_5TextConfig, t.Qwen3_5ForCausalLM),
        "qwen3_5_moe_text": (t.Qwen3_5MoeTextConfig, t.Qwen3_5MoeForCausalLM),
        # What swift 4.6 loads for Qwen/Qwen3.5-* and Qwen/Qwen3.6-* (its qwen3_5 / qwen3_5_moe model types).
        "qwen3_5": (t.Qwen3_5Config, t.Qwen3_5ForConditionalGeneration),
        "qwen3_5_moe": (t.Qwen3_5MoeConfig, t.Qwen3_5MoeForConditionalGeneration),
        "qwen3_next": (t.Qwen3NextConfig, t.Qwen3NextForCausalLM),
    }[family]


def _hybrid_config(shape: ModelShape) -> dict:
    """The text_config fields of the Qwen3.5/Qwen3-Next families, as the published configs write them."""
    layer_types = ["full_attention" if (i + 1) % 4 == 0 else "linear_attention" for i in range(shape.num_layers)]
    fields = {
        "layer_types": layer_types,
        "full_attention_interval": 4,
        "linear_num_key_heads": shape.linear_key_heads,
        "linear_num_value_heads": shape.linear_value_heads,
        "linear_key_head_dim": shape.linear_key_head_dim,
        "linear_value_head_dim": shape.linear_value_head_dim,
        "linear_conv_kernel_dim": shape.linear_conv_kernel,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000000.0, "partial_rotary_factor": 0.25},
    }
    if shape.family in ("qwen3_5", "qwen3_5_moe"):
        fields["rope_parameters"].update(mrope_interleaved=True, mrope_section=[11, 11, 10])
    if shape.shared_expert_intermediate_size:
        fields["shared_expert_intermediate_size"] = shape.shared_expert_intermediate_size
    return fields


def _vision_size(shape: ModelShape) -> dict:
    """The published tower of each size (docs/models.md): 27 × 1152 from 9B up, 24 × 1024 at 4B, 12 × 768 below."""
    from qwen_tune.planning.models import vision_tower_params

    for depth, hidden, intermediate, heads in ((27, 1152, 4304, 16), (24, 1024, 4096, 16), (12, 768, 3072, 12)):
        if vision_tower_params(depth, hidden, intermediate, shape.hidden_size) == shape.vision_params:
            return {"depth": depth, "hidden_size": hidden, "intermediate_size": intermediate, "num_heads": heads}
    raise ValueError(f"no published vision tower has {shape.vision_params} parameters")


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
