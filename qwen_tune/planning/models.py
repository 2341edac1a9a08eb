"""Model shapes: from a local config.json, or a built-in table for the hub models we name.

The shape is all the memory estimator needs; swift's model_type/template names are
only passed for local directories, where swift cannot infer them from a hub id.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.parse import quote
from urllib.request import Request, urlopen

from qwen_tune.errors import ModelError


@dataclass(frozen=True)
class ModelShape:
    family: str  # config.json model_type: qwen2 | qwen3 | qwen3_moe | qwen3_5 | qwen3_5_moe | qwen3_next
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool
    # Mixture of experts (qwen3_moe, qwen3_5_moe, qwen3_next): every layer routes each token to experts_per_token of num_experts.
    num_experts: int = 0
    experts_per_token: int = 0
    moe_intermediate_size: int = 0
    # Hybrid models (qwen3_5, qwen3_5_moe, qwen3_next): `linear_layers` of the num_layers are Gated DeltaNet
    # (config.json layer_types "linear_attention"), the others full attention with an output gate.
    linear_layers: int = 0
    linear_key_heads: int = 0
    linear_value_heads: int = 0
    linear_key_head_dim: int = 0
    linear_value_head_dim: int = 0
    linear_conv_kernel: int = 0
    # The MoE layers of the hybrid models also run one shared expert of this width (and its 1-wide gate) for every token.
    shared_expert_intermediate_size: int = 0
    # The vision tower of Qwen3.5/3.6 (a composite checkpoint, ...ForConditionalGeneration): loaded with the text
    # model, frozen by swift (freeze_vit), never quantized, and idle on text-only data: only its weights count.
    vision_params: int = 0

    @property
    def has_qk_norm(self) -> bool:
        """Qwen3 normalises q and k per head; its activations need more memory than Qwen2's."""
        return self.family in ("qwen3", "qwen3_moe", *HYBRID_FAMILIES)

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def is_hybrid(self) -> bool:
        """Gated DeltaNet (linear attention) layers beside full-attention ones."""
        return self.linear_layers > 0

    @property
    def full_attention_layers(self) -> int:
        return self.num_layers - self.linear_layers

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def q_proj_width(self) -> int:
        """q_proj's output: the queries, and in the hybrid families as many again for the attention's output gate."""
        q = self.num_heads * self.head_dim
        return 2 * q if self.family in HYBRID_FAMILIES else q

    @property
    def linear_key_dim(self) -> int:
        return self.linear_key_heads * self.linear_key_head_dim

    @property
    def linear_value_dim(self) -> int:
        return self.linear_value_heads * self.linear_value_head_dim

    @property
    def linear_conv_dim(self) -> int:
        """The channels of the Gated DeltaNet's causal convolution: q, k and v side by side."""
        return 2 * self.linear_key_dim + self.linear_value_dim

    @property
    def active_ffn_size(self) -> int:
        """The MLP width one token goes through: the dense MLP, or its experts (and shared expert) side by side."""
        if self.is_moe:
            return self.experts_per_token * self.moe_intermediate_size + self.shared_expert_intermediate_size
        return self.intermediate_size

    def layer_linears(self) -> tuple[tuple[int, int], ...]:
        """(in, out) of every nn.Linear in one full-attention decoder layer: what `all-linear` LoRA targets and
        bitsandbytes quantizes (the only kind of layer of Qwen2.5/Qwen3).

        In an MoE layer attention's, and the hybrid families' shared expert with its gate: transformers 5 holds the
        routed experts as 3-D parameters and the router as a parameter of its own module, neither an nn.Linear
        (docs/models.md).
        """
        h, kv = self.hidden_size, self.kv_dim
        attention = ((h, self.q_proj_width), (h, kv), (h, kv), (self.num_heads * self.head_dim, h))
        return (*attention, *self.mlp_linears())

    def linear_attention_linears(self) -> tuple[tuple[int, int], ...]:
        """(in, out) of a Gated DeltaNet layer's nn.Linears (qwen3_5: in_proj_qkv, in_proj_z, in_proj_b, in_proj_a,
        out_proj; qwen3_next fuses them as in_proj_qkvz and in_proj_ba, the same weights), then its MLP's."""
        h, nv = self.hidden_size, self.linear_value_heads
        if self.family == "qwen3_next":
            mixer = ((h, self.linear_conv_dim + self.linear_value_dim), (h, 2 * nv), (self.linear_value_dim, h))
        else:
            mixer = ((h, self.linear_conv_dim), (h, self.linear_value_dim), (h, nv), (h, nv), (self.linear_value_dim, h))
        return (*mixer, *self.mlp_linears())

    def mlp_linears(self) -> tuple[tuple[int, int], ...]:
        h = self.hidden_size
        if not self.is_moe:
            ffn = self.intermediate_size
            return ((h, ffn), (h, ffn), (ffn, h))
        shared = self.shared_expert_intermediate_size
        return ((h, shared), (h, shared), (shared, h), (h, 1)) if shared else ()

    def layer_kinds(self) -> tuple[tuple[int, tuple[tuple[int, int], ...]], ...]:
        """(how many layers, their nn.Linears) for each kind of decoder layer."""
        kinds = ((self.full_attention_layers, self.layer_linears()),)
        return (*kinds, (self.linear_layers, self.linear_attention_linears())) if self.is_hybrid else kinds

    @property
    def linear_params(self) -> int:
        return sum(n * sum(i * o for i, o in linears) for n, linears in self.layer_kinds())

    @property
    def expert_params(self) -> int:
        """Experts (gate, up, down of each) and the router: 16-bit even under 4-bit quantization."""
        per_layer = self.num_experts * (3 * self.hidden_size * self.moe_intermediate_size + self.hidden_size)
        return self.num_layers * per_layer

    @property
    def other_params(self) -> int:
        """Embeddings, lm_head, norms, biases, the Gated DeltaNet's convolution and decay parameters and the vision
        tower: kept in 16 bits even under 4-bit quantization."""
        embed = self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)
        per_layer = 2 * self.hidden_size  # two RMSNorms
        if self.family == "qwen2":
            per_layer += self.num_heads * self.head_dim + 2 * self.kv_dim  # q/k/v biases
        else:
            per_layer += 2 * self.head_dim  # q_norm, k_norm
        layers = self.num_layers * per_layer
        if self.is_hybrid:
            # conv1d (depthwise, no bias), dt_bias and A_log a value head, the gated norm a value head dim; no q/k norms.
            mixer = self.linear_conv_dim * self.linear_conv_kernel + 2 * self.linear_value_heads + self.linear_value_head_dim
            layers += self.linear_layers * (mixer - 2 * self.head_dim)
        return embed + layers + self.hidden_size + self.vision_params

    @property
    def n_params(self) -> int:
        return self.linear_params + self.expert_params + self.other_params

    @property
    def text_params(self) -> int:
        """What trains under full fine-tuning: everything but the frozen vision tower."""
        return self.n_params - self.vision_params

    @property
    def active_params(self) -> int:
        """The parameters one token computes with: all of a dense model, the routed experts' share of an MoE; never
        the vision tower (text-only data)."""
        if not self.is_moe:
            return self.text_params
        routed = self.num_layers * self.experts_per_token * 3 * self.hidden_size * self.moe_intermediate_size
        return self.text_params - self.expert_params + routed

    def lora_params(self, rank: int) -> int:
        kinds = self.layer_kinds()
        if self.family == "qwen3_next":  # of its MLP only the shared expert's gate is adapted: lora_target_modules
            mlp = self.mlp_linears()  # the shared expert's gate, up, down, then its 1-wide gate
            kinds = tuple((n, linears[: len(linears) - len(mlp)] + mlp[3:]) for n, linears in kinds)
        return sum(n * sum(rank * (i + o) for i, o in linears) for n, linears in kinds)

    def lora_target_modules(self, requested: str) -> list[str]:
        """What to ask swift's --target_modules for. `all-linear` as it is, except for Qwen3-Next: there swift expands
        it to module names that peft 0.20 rewrites, on transformers 5, into target_parameters on the fused routed
        experts (gate_up_proj, down_proj), which refuse lora_dropout (a ValueError) and would adapt all 512 experts of
        every layer (docs/models.md). Its attention, Gated DeltaNet and shared-expert gate are named instead."""
        names = [name.strip() for name in requested.split(",") if name.strip()]  # q_proj,v_proj: swift takes a list
        if names == ["all-linear"] and self.family == "qwen3_next":
            return list(QWEN3_NEXT_LORA_TARGETS)
        return names


# Gated DeltaNet beside full attention, a vision tower beside the text model (qwen3_5, qwen3_5_moe); qwen3_next, and the
# text-only checkpoints of Qwen3.5 (qwen3_5_text, qwen3_5_moe_text: what tools/make_model.py builds for CI), are text.
QWEN3_NEXT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "in_proj_qkvz", "in_proj_ba", "out_proj", "shared_expert_gate")
HYBRID_FAMILIES = ("qwen3_5", "qwen3_5_moe", "qwen3_next", "qwen3_5_text", "qwen3_5_moe_text")


def vision_tower_params(
    depth: int, hidden: int, intermediate: int, out_hidden: int, *, patch: int = 16, temporal_patch: int = 2,
    channels: int = 3, positions: int = 2304, merge: int = 2,
) -> int:  # fmt: skip
    """The parameters of transformers' Qwen3_5VisionModel (Qwen3-VL's tower without deepstack) from its config:
    the patch embedding (a Conv3d with bias), learned positions, `depth` blocks (two LayerNorms, qkv and proj,
    a two-layer MLP, all with biases) and the merger (LayerNorm, then merge² × hidden → out_hidden)."""
    block = 4 * hidden + (3 * hidden * hidden + 3 * hidden) + (hidden * hidden + hidden) + 2 * hidden * intermediate
    block += intermediate + hidden
    merged = merge * merge * hidden
    merger = 2 * hidden + merged * merged + merged + merged * out_hidden + out_hidden
    patch_embed = hidden * channels * temporal_patch * patch * patch + hidden
    return patch_embed + positions * hidden + depth * block + merger


# swift names for local directories, by config.json model_type (a text-only Qwen3.5 is qwen3_5_text: see _TEXT_ONLY).
SWIFT_NAMES = {
    "qwen2": ("qwen2", "qwen2_5"),
    "qwen3": ("qwen3", "qwen3"),
    "qwen3_moe": ("qwen3_moe", "qwen3"),
    "qwen3_5": ("qwen3_5", "qwen3_5"),
    "qwen3_5_moe": ("qwen3_5_moe", "qwen3_5"),
    "qwen3_next": ("qwen3_next", "qwen3_nothinking"),
    "qwen3_5_text": ("qwen3_next", "qwen3"),
    "qwen3_5_moe_text": ("qwen3_next", "qwen3"),
}


def _qwen2(hidden, layers, heads, kv, ffn, vocab, tie) -> ModelShape:
    return ModelShape("qwen2", hidden, layers, heads, kv, hidden // heads, ffn, vocab, tie)


def _qwen3(hidden, layers, heads, ffn, tie) -> ModelShape:
    return ModelShape("qwen3", hidden, layers, heads, 8, 128, ffn, 151936, tie)


def _qwen3_moe(hidden, layers, heads, ffn, experts_ffn) -> ModelShape:
    return ModelShape("qwen3_moe", hidden, layers, heads, 4, 128, ffn, 151936, False, 128, 8, experts_ffn)


# The published config.json values (huggingface.co/Qwen/<name>/blob/main/config.json). Instruct,
# Coder, Math, Base, Thinking and 2507 releases of one size share its shape.
_QWEN25 = {
    "0.5B": _qwen2(896, 24, 14, 2, 4864, 151936, True),
    "1.5B": _qwen2(1536, 28, 12, 2, 8960, 151936, True),
    "3B": _qwen2(2048, 36, 16, 2, 11008, 151936, True),
    "7B": _qwen2(3584, 28, 28, 4, 18944, 152064, False),
    "14B": _qwen2(5120, 48, 40, 8, 13824, 152064, False),
    "32B": _qwen2(5120, 64, 40, 8, 27648, 152064, False),
    "72B": _qwen2(8192, 80, 64, 8, 29568, 152064, False),
}
_QWEN3 = {
    "0.6B": _qwen3(1024, 28, 16, 3072, True),
    "1.7B": _qwen3(2048, 28, 16, 6144, True),
    "4B": _qwen3(2560, 36, 32, 9728, True),
    "8B": _qwen3(4096, 36, 32, 12288, False),
    "14B": _qwen3(5120, 40, 40, 17408, False),
    "32B": _qwen3(5120, 64, 64, 25600, False),
    "30B-A3B": _qwen3_moe(2048, 48, 32, 6144, 768),
    "235B-A22B": _qwen3_moe(4096, 94, 64, 12288, 1536),
}


def _hybrid(family, hidden, layers, heads, kv, ffn, linear_v_heads, tie, vision_tower=(), vocab=248320, moe=()) -> ModelShape:
    """A Qwen3.5/3.6/Qwen3-Next shape: every 4th layer full attention (256-wide heads), the others Gated DeltaNet with
    16 key heads of 128 and linear_v_heads value heads of 128, a causal convolution of 4 (full_attention_interval 4,
    linear_num_key_heads 16, linear_key/value_head_dim 128, linear_conv_kernel_dim 4 in every published config).
    vision_tower: (depth, hidden, intermediate) of the composite checkpoints' tower, whose merger outputs `hidden`;
    moe: (experts, per token, expert width, shared expert width)."""
    experts, per_token, expert_ffn, shared = moe or (0, 0, 0, 0)
    return ModelShape(
        family, hidden, layers, heads, kv, 256, ffn, vocab, tie, experts, per_token, expert_ffn,
        linear_layers=layers - layers // 4, linear_key_heads=16, linear_value_heads=linear_v_heads,
        linear_key_head_dim=128, linear_value_head_dim=128, linear_conv_kernel=4, shared_expert_intermediate_size=shared,
        vision_params=vision_tower_params(*vision_tower, hidden) if vision_tower else 0,
    )  # fmt: skip


# Qwen3.5 and Qwen3.6 (huggingface.co/Qwen/<name>/blob/main/config.json, text_config and vision_config; docs/models.md).
# Every size ships a vision tower: 27 blocks of 1152 (intermediate 4304) from 9B up, 24 of 1024 (4096) at 2B and 4B,
# 12 of 768 (3072) at 0.8B.
_SMALL_VISION, _VISION = (12, 768, 3072), (27, 1152, 4304)
_QWEN35 = {
    "0.8B": _hybrid("qwen3_5", 1024, 24, 8, 2, 3584, 16, True, _SMALL_VISION),
    "2B": _hybrid("qwen3_5", 2048, 24, 8, 2, 6144, 16, True, (24, 1024, 4096)),
    "4B": _hybrid("qwen3_5", 2560, 32, 16, 4, 9216, 32, True, (24, 1024, 4096)),
    "9B": _hybrid("qwen3_5", 4096, 32, 16, 4, 12288, 32, False, _VISION),
    "27B": _hybrid("qwen3_5", 5120, 64, 24, 4, 17408, 48, False, _VISION),
    "35B-A3B": _hybrid("qwen3_5_moe", 2048, 40, 16, 2, 0, 32, False, _VISION, moe=(256, 8, 512, 512)),
    "122B-A10B": _hybrid("qwen3_5_moe", 3072, 48, 32, 2, 0, 64, False, _VISION, moe=(256, 8, 1024, 1024)),
    "397B-A17B": _hybrid("qwen3_5_moe", 4096, 60, 32, 2, 0, 64, False, _VISION, moe=(512, 10, 1024, 1024)),
}
# Qwen3-Next: text only, Qwen3's vocabulary.
_QWEN3_NEXT_80B = _hybrid("qwen3_next", 2048, 48, 16, 2, 0, 32, False, vocab=151936, moe=(512, 10, 512, 512))
_HUB_MODELS: dict[str, ModelShape] = {
    **{f"Qwen2.5-{size}{kind}": shape for size, shape in _QWEN25.items() for kind in ("", "-Instruct")},
    **{f"Qwen2.5-Coder-{size}{kind}": _QWEN25[size] for size in _QWEN25 if size != "72B" for kind in ("", "-Instruct")},
    **{f"Qwen2.5-Math-{size}{kind}": _QWEN25[size] for size in ("1.5B", "7B", "72B") for kind in ("", "-Instruct")},
    **{f"Qwen3-{size}{kind}": shape for size, shape in _QWEN3.items() for kind in ("", "-Base")},
    **{f"Qwen3-{size}-{kind}-2507": _QWEN3[size] for size in ("4B", "30B-A3B", "235B-A22B") for kind in ("Instruct", "Thinking")},
    "Qwen3-Coder-30B-A3B-Instruct": _QWEN3["30B-A3B"],
    **{f"Qwen3.5-{size}": shape for size, shape in _QWEN35.items()},
    **{f"Qwen3.5-{size}-Base": _QWEN35[size] for size in ("0.8B", "2B", "4B", "9B", "35B-A3B")},
    **{f"Qwen3.6-{size}": _QWEN35[size] for size in ("27B", "35B-A3B")},
    **{f"Qwen3-Next-80B-A3B-{kind}": _QWEN3_NEXT_80B for kind in ("Instruct", "Thinking")},
}
# The hub id as the hub spells it, by its lower-case form without the Qwen/ prefix.
HUB_IDS = {name.lower(): f"Qwen/{name}" for name in _HUB_MODELS}
BUILTIN_SHAPES = {f"qwen/{name.lower()}": shape for name, shape in _HUB_MODELS.items()}


@dataclass(frozen=True)
class ModelRef:
    """What the user asked for (`source`, a hub id as the hub spells it), and what we know of it."""

    source: str
    shape: ModelShape
    local_dir: Path | None = None
    files_dir: Path | None = None  # where a fetched hub id's config and tokenizer are cached

    @property
    def swift_model_type(self) -> str | None:
        """Named for a directory or a fetched id: swift infers them only for the hub ids it registers."""
        return SWIFT_NAMES[self.shape.family][0] if self.local_dir or self.files_dir else None

    @property
    def swift_template(self) -> str | None:
        if not (self.local_dir or self.files_dir):
            return None
        if self.shape.family == "qwen3_next" and "thinking" in Path(self.source).name.lower():
            return "qwen3_thinking"  # Qwen3-Next-80B-A3B-Thinking: swift's template of that id
        return SWIFT_NAMES[self.shape.family][1]

    @property
    def tokenizer_file(self) -> Path | None:
        folder = self.local_dir or self.files_dir
        path = folder / "tokenizer.json" if folder else None
        return path if path and path.is_file() else None


# Fetches one file of a hub repository into a folder and returns its path (the edge: hub_fetcher).
Fetch = Callable[[str, str, Path], Path]
# config.json for the shape; the tokenizer for exact sample lengths.
FETCHED_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json")


def resolve_model(source: str, *, fetch: Fetch | None = None, cache_dir: Path | None = None) -> ModelRef:
    """A local directory (read its config.json), a hub id of the built-in table (any case, `Qwen/`
    optional), or, given `fetch` (online), any other hub id: its config.json and tokenizer only."""
    path = Path(source).expanduser()
    known = HUB_IDS.get(source.lower().removeprefix("qwen/"))
    looks_local = path.exists() or source.startswith((".", "/", "~")) or (source.count("/") != 1 and not known)
    if looks_local:
        if not path.is_dir():
            raise ModelError(
                f"model directory {source} does not exist: give a local model dir or a hub id like Qwen/Qwen2.5-7B-Instruct"
            )
        return ModelRef(source=str(path.resolve()), shape=shape_from_config(path / "config.json"), local_dir=path.resolve())
    if known:
        return ModelRef(source=known, shape=BUILTIN_SHAPES[known.lower()])
    if fetch is None:
        raise ModelError(
            f"unknown hub model {source}, and HF_HUB_OFFLINE is set, so its config.json cannot be fetched: "
            "pass its local directory, or use a Qwen2.5/Qwen3/Qwen3.5/Qwen3.6 id like Qwen/Qwen3.5-9B (the README lists them)"
        )
    folder = (cache_dir or MODEL_CACHE) / source.replace("/", "--")
    config = folder / "config.json"
    if not config.is_file():
        for name in FETCHED_FILES:
            try:
                fetch(source, name, folder)
            except Exception as exc:  # not found, gated, no network
                if name == "config.json":
                    why = str(exc) if isinstance(exc, FetchFailed) else type(exc).__name__
                    raise ModelError(
                        f"cannot fetch {name} of {source} from the hub ({why}): check the id, or pass a local model dir "
                        "(HF_HUB_OFFLINE=1 plans without the hub)"
                    ) from None
    return ModelRef(source=source, shape=shape_from_config(config), files_dir=folder)


MODEL_CACHE = Path.home() / ".cache" / "qwen-tune" / "models"
# One request a file, this long at most: the hubs' own clients retry an unreachable endpoint for over a minute
# (modelscope's model_file_download, huggingface_hub's hf_hub_download), which `plan` must not wait through.
HUB_TIMEOUT_SECONDS = 10
HF_ENDPOINT, MODELSCOPE_DOMAIN = "https://huggingface.co", "www.modelscope.cn"


class FetchFailed(Exception):
    """One file could not be fetched from the hub: the reason, said in a few words."""


def hub_file_url(repo_id: str, filename: str, *, use_hf: bool, environ: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    """The URL the hub's own client downloads the file from, and its headers (HF_TOKEN for gated repositories):
    HF_ENDPOINT or Hugging Face, MODELSCOPE_DOMAIN or ModelScope, as those clients read them."""
    if use_hf:
        endpoint = (environ.get("HF_ENDPOINT") or HF_ENDPOINT).rstrip("/")
        token = environ.get("HF_TOKEN")
        return f"{endpoint}/{repo_id}/resolve/main/{filename}", {"Authorization": f"Bearer {token}"} if token else {}
    domain = environ.get("MODELSCOPE_DOMAIN") or MODELSCOPE_DOMAIN
    base = domain if "://" in domain else f"https://{domain}"
    return f"{base.rstrip('/')}/api/v1/models/{repo_id}/repo?Revision=master&FilePath={quote(filename)}", {}


def hub_fetcher(*, offline: bool, use_hf: bool, environ: Mapping[str, str] | None = None) -> Fetch | None:
    """How to fetch a file from the hub swift downloads from (ModelScope, or Hugging Face with USE_HF); None offline.
    One GET a file with a short timeout and no retry: an unknown id on an unreachable hub is one clear line, fast."""
    if offline:
        return None
    env = os.environ if environ is None else environ

    def fetch(repo_id: str, filename: str, folder: Path) -> Path:
        url, headers = hub_file_url(repo_id, filename, use_hf=use_hf, environ=env)
        where = url.split("/", 3)[2] if "://" in url else url
        try:
            with urlopen(Request(url, headers=headers), timeout=HUB_TIMEOUT_SECONDS) as response:
                body = response.read()
        except HTTPError as exc:
            raise FetchFailed(
                f"{where} answered HTTP {exc.code}{' (no such file or repository)' if exc.code == 404 else ''}"
            ) from None
        except (URLError, OSError) as exc:  # refused, unresolvable, timed out (socket.timeout is an OSError)
            reason = getattr(exc, "reason", exc)
            timed_out = isinstance(reason, TimeoutError) or "timed out" in str(reason)
            said = f"no answer in {HUB_TIMEOUT_SECONDS} s" if timed_out else re.sub(r"^\[Errno -?\d+\] ", "", str(reason))
            raise FetchFailed(f"{where} cannot be reached: {said}") from None
        folder.mkdir(parents=True, exist_ok=True)
        partial = folder / f".{filename}.part"
        partial.write_bytes(body)
        return partial.replace(folder / filename)

    return fetch


def hub_offline(environ: Mapping[str, str]) -> bool:
    """HF_HUB_OFFLINE as huggingface_hub reads it."""
    return _switched_on(environ.get("HF_HUB_OFFLINE", ""))


def use_hf(environ: Mapping[str, str]) -> bool:
    """USE_HF, as swift reads it: download from Hugging Face instead of ModelScope."""
    return _switched_on(environ.get("USE_HF", ""))


def _switched_on(value: str) -> bool:
    return value.strip().upper() in ("1", "ON", "YES", "TRUE")


# A config.json is a few KiB; reading one of this size means the path is something else.
MAX_CONFIG_BYTES = 16 * 2**20
# What transformers builds a Qwen tokenizer from: tokenizer.json, else the BPE files it came from.
TOKENIZER_FILES = (("tokenizer.json",), ("vocab.json", "merges.txt"))


def check_tokenizer(model: ModelRef) -> None:
    """A local model directory without its tokenizer loads in swift, which then drops every row (a TypeError each)."""
    folder = model.local_dir
    if folder is None or any(all((folder / name).is_file() for name in files) for files in TOKENIZER_FILES):
        return
    raise ModelError(
        f"model directory {folder} has no tokenizer (tokenizer.json, or vocab.json and merges.txt): copy the tokenizer "
        "files (tokenizer.json, tokenizer_config.json, vocab.json, merges.txt) from the model's hub repository into it"
    )


def check_reachable(model: ModelRef, *, offline: bool) -> None:
    """Training a hub id means swift downloads it: with the hub switched off, only a local directory can train."""
    if offline and model.local_dir is None:
        raise ModelError(
            f"model {model.source} is a hub id, but HF_HUB_OFFLINE is set, so it cannot be downloaded: "
            "pass its local directory with --model, or unset HF_HUB_OFFLINE"
        )


# The files of a model directory where transformers finds code of the model's own (`auto_map`).
CODE_CONFIGS = ("config.json", "tokenizer_config.json", "processor_config.json", "preprocessor_config.json")


def remote_code(folder: Path) -> list[str]:
    """The Python files a model directory's configs name in `auto_map`, which transformers imports and runs when
    trusted (swift 4.6 always trusts them): 'config.json: modeling_x.py', ...; [] where there are none."""
    found: list[str] = []
    for name in CODE_CONFIGS:
        try:
            config = json.loads((folder / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        auto_map = config.get("auto_map") if isinstance(config, dict) else None
        if not auto_map:
            continue
        refs = auto_map.values() if isinstance(auto_map, dict) else [auto_map]
        files = {_code_file(r) for ref in refs for r in (ref if isinstance(ref, list) else [ref]) if r}
        found += [f"{name}: {f}" for f in sorted(files)]
    return found


def _code_file(ref: object) -> str:
    """modeling_x.Cls -> modeling_x.py; other/repo--modeling_x.Cls -> modeling_x.py of other/repo."""
    if not isinstance(ref, str):
        return f"auto_map {ref!r}"
    repo, _, module = ref.rpartition("--")
    file = module.rsplit(".", 1)[0] + ".py"
    return f"{file} of {repo}" if repo else file


def shape_from_config(config_path: Path) -> ModelShape:
    try:
        if config_path.exists() and not config_path.is_file():
            raise ModelError(f"{config_path} is not a file: --model must be a Hugging Face model directory")
        if config_path.is_file() and config_path.stat().st_size > MAX_CONFIG_BYTES:
            raise ModelError(
                f"{config_path} is over {MAX_CONFIG_BYTES // 2**20} MiB, no model's config.json is: is this a model directory?"
            )
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"{config_path} is missing: --model must be a Hugging Face model directory") from None
    except RecursionError:
        raise ModelError(f"cannot read {config_path}: JSON nested too deep") from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {config_path}: {exc}") from None
    if not isinstance(config, dict):
        kind = {list: "a list", str: "text", int: "a number", float: "a number", bool: "true/false"}.get(type(config), "null")
        raise ModelError(f"{config_path} holds {kind}, not a JSON object: is this a model's config.json?")
    family = config.get("model_type")
    if family not in SWIFT_NAMES:
        raise ModelError(
            f"{config_path}: model_type {family!r} is not a Qwen2/Qwen2.5/Qwen3/Qwen3.5/Qwen3.6/Qwen3-Next model; "
            f"qwen-tune plans for {', '.join(SWIFT_NAMES)}"
        )
    # Qwen3.5/3.6 are composite: the text model's fields under text_config, the vision tower's under vision_config.
    text = config.get("text_config") if family in ("qwen3_5", "qwen3_5_moe") else config
    if not isinstance(text, dict):
        raise ModelError(f"{config_path}: text_config is missing or not an object; is this a complete model config?")

    def size(key: str, default: object = None) -> int:
        """A positive whole number from the config (a size, a count), else one line naming the field."""
        value = text.get(key) if text.get(key) is not None else default
        if value is None:
            raise ModelError(f"{config_path}: {key} is missing; is this a complete model config?")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value < 1:
            raise ModelError(
                f"{config_path}: {key} is {json.dumps(value)}, not a positive whole number; is this a complete model config?"
            )
        return int(value)

    heads = size("num_attention_heads")
    hidden = size("hidden_size")
    layers = size("num_hidden_layers")
    moe = family in ("qwen3_moe", "qwen3_5_moe", "qwen3_5_moe_text", "qwen3_next")
    try:
        return ModelShape(
            family=family,
            hidden_size=hidden,
            num_layers=layers,
            num_heads=heads,
            num_kv_heads=size("num_key_value_heads", heads),
            head_dim=size("head_dim", hidden // heads or None),
            intermediate_size=int(text.get("intermediate_size") or 0) if moe else size("intermediate_size"),
            vocab_size=size("vocab_size"),
            # A composite config says it at the top (transformers reads it there); a text one in itself.
            tie_word_embeddings=bool(config.get("tie_word_embeddings", text.get("tie_word_embeddings", False))),
            **(_moe_fields(text, config_path) if moe else {}),
            **(_hybrid_fields(text, layers) if family in HYBRID_FAMILIES else {}),
            **(_vision_fields(config.get("vision_config"), config_path) if text is not config else {}),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{config_path}: missing or bad field {exc}; is this a complete model config?") from None


def _hybrid_fields(text: dict, layers: int) -> dict[str, int]:
    """The Gated DeltaNet layers: layer_types, or every full_attention_interval-th layer full (transformers' default 4)."""
    layer_types = text.get("layer_types")
    if layer_types is None:
        interval = int(text.get("full_attention_interval", 4))
        layer_types = ["full_attention" if (i + 1) % interval == 0 else "linear_attention" for i in range(layers)]
    return {
        "linear_layers": sum(kind == "linear_attention" for kind in layer_types),
        "linear_key_heads": int(text.get("linear_num_key_heads", 16)),
        "linear_value_heads": int(text.get("linear_num_value_heads", 32)),
        "linear_key_head_dim": int(text.get("linear_key_head_dim", 128)),
        "linear_value_head_dim": int(text.get("linear_value_head_dim", 128)),
        "linear_conv_kernel": int(text.get("linear_conv_kernel_dim", 4)),
    }


def _vision_fields(vision: dict | None, config_path: Path) -> dict[str, int]:
    """The vision tower's size, from vision_config (transformers' Qwen3_5VisionConfig defaults where a field is left out)."""
    if not isinstance(vision, dict):
        raise ModelError(f"{config_path}: a composite Qwen3.5 config without vision_config; is this a complete model config?")
    patch, temporal = vision.get("patch_size", 16), vision.get("temporal_patch_size", 2)
    params = vision_tower_params(
        int(vision.get("depth", 27)), int(vision.get("hidden_size", 1152)), int(vision.get("intermediate_size", 4304)),
        int(vision.get("out_hidden_size", 3584)), patch=int(patch if isinstance(patch, int) else patch[0]),
        temporal_patch=int(temporal if isinstance(temporal, int) else temporal[0]), channels=int(vision.get("in_channels", 3)),
        positions=int(vision.get("num_position_embeddings", 2304)), merge=int(vision.get("spatial_merge_size", 2)),
    )  # fmt: skip
    return {"vision_params": params}


def _moe_fields(config: dict, config_path: Path) -> dict[str, int]:
    """The experts of a qwen3_moe config; the released models route in every layer, and so must this one."""
    if config.get("mlp_only_layers") or int(config.get("decoder_sparse_step", 1)) != 1:
        raise ModelError(
            f"{config_path}: dense layers among the MoE layers (mlp_only_layers/decoder_sparse_step) are not planned for"
        )
    return {
        # The released configs say num_experts; transformers 5.19 writes num_local_experts.
        "num_experts": int(config["num_experts"] if "num_experts" in config else config["num_local_experts"]),
        "experts_per_token": int(config["num_experts_per_tok"]),
        "moe_intermediate_size": int(config["moe_intermediate_size"]),
        "shared_expert_intermediate_size": int(config.get("shared_expert_intermediate_size") or 0),
    }
