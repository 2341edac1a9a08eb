"""Model shapes: from a local config.json, or a built-in table for the hub models we name.

The shape is all the memory estimator needs; swift's model_type/template names are
only passed for local directories, where swift cannot infer them from a hub id.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from qwen_tune.errors import ModelError


@dataclass(frozen=True)
class ModelShape:
    family: str  # config.json model_type: qwen2 | qwen3
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool

    @property
    def has_qk_norm(self) -> bool:
        """Qwen3 normalises q and k per head; its activations need more memory than Qwen2's."""
        return self.family == "qwen3"

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim

    def layer_linears(self) -> tuple[tuple[int, int], ...]:
        """(in, out) of every nn.Linear in one decoder layer: what `all-linear` LoRA targets."""
        h, q, kv, ffn = self.hidden_size, self.num_heads * self.head_dim, self.kv_dim, self.intermediate_size
        return ((h, q), (h, kv), (h, kv), (q, h), (h, ffn), (h, ffn), (ffn, h))

    @property
    def linear_params(self) -> int:
        return self.num_layers * sum(i * o for i, o in self.layer_linears())

    @property
    def other_params(self) -> int:
        """Embeddings, lm_head, norms and biases: kept in 16 bits even under 4-bit quantization."""
        embed = self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)
        per_layer = 2 * self.hidden_size  # two RMSNorms
        if self.family == "qwen2":
            per_layer += self.num_heads * self.head_dim + 2 * self.kv_dim  # q/k/v biases
        else:
            per_layer += 2 * self.head_dim  # q_norm, k_norm
        return embed + self.num_layers * per_layer + self.hidden_size

    @property
    def n_params(self) -> int:
        return self.linear_params + self.other_params

    def lora_params(self, rank: int) -> int:
        return self.num_layers * sum(rank * (i + o) for i, o in self.layer_linears())


# swift names for local directories, by config.json model_type.
SWIFT_NAMES = {"qwen2": ("qwen2", "qwen2_5"), "qwen3": ("qwen3", "qwen3")}

BUILTIN_SHAPES = {
    "qwen/qwen2.5-7b-instruct": ModelShape("qwen2", 3584, 28, 28, 4, 128, 18944, 152064, False),
    "qwen/qwen3-14b": ModelShape("qwen3", 5120, 40, 40, 8, 128, 17408, 151936, False),
    "qwen/qwen2.5-0.5b-instruct": ModelShape("qwen2", 896, 24, 14, 2, 64, 4864, 151936, True),
}


@dataclass(frozen=True)
class ModelRef:
    """What the user asked for (`source`), and what we know of it."""

    source: str
    shape: ModelShape
    local_dir: Path | None = None

    @property
    def swift_model_type(self) -> str | None:
        return SWIFT_NAMES[self.shape.family][0] if self.local_dir else None

    @property
    def swift_template(self) -> str | None:
        return SWIFT_NAMES[self.shape.family][1] if self.local_dir else None

    @property
    def tokenizer_file(self) -> Path | None:
        path = self.local_dir / "tokenizer.json" if self.local_dir else None
        return path if path and path.is_file() else None


def resolve_model(source: str) -> ModelRef:
    """A local directory (read its config.json) or one of the built-in hub ids."""
    path = Path(source).expanduser()
    looks_local = path.exists() or source.startswith((".", "/", "~")) or source.count("/") != 1
    if looks_local:
        if not path.is_dir():
            raise ModelError(
                f"model directory {source} does not exist: give a local model dir or a hub id like Qwen/Qwen2.5-7B-Instruct"
            )
        return ModelRef(source=str(path.resolve()), shape=shape_from_config(path / "config.json"), local_dir=path.resolve())
    shape = BUILTIN_SHAPES.get(source.lower())
    if shape is None:
        known = ", ".join(sorted({k.split("/")[1] for k in BUILTIN_SHAPES}))
        raise ModelError(f"unknown hub model {source}: download it and pass its directory, or use one of {known}")
    return ModelRef(source=source, shape=shape)


def hub_offline(environ: Mapping[str, str]) -> bool:
    """HF_HUB_OFFLINE as huggingface_hub reads it."""
    return environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


def check_reachable(model: ModelRef, *, offline: bool) -> None:
    """Training a hub id means swift downloads it: with the hub switched off, only a local directory can train."""
    if offline and model.local_dir is None:
        raise ModelError(
            f"model {model.source} is a hub id, but HF_HUB_OFFLINE is set, so it cannot be downloaded: "
            "pass its local directory with --model, or unset HF_HUB_OFFLINE"
        )


def shape_from_config(config_path: Path) -> ModelShape:
    try:
        config = json.loads(config_path.read_text())
    except FileNotFoundError:
        raise ModelError(f"{config_path} is missing: --model must be a Hugging Face model directory") from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {config_path}: {exc}") from None
    family = config.get("model_type")
    if family not in SWIFT_NAMES:
        raise ModelError(
            f"{config_path}: model_type {family!r} is not a Qwen2/Qwen2.5/Qwen3 model; qwen-tune plans for {', '.join(SWIFT_NAMES)}"
        )
    try:
        heads = int(config["num_attention_heads"])
        hidden = int(config["hidden_size"])
        return ModelShape(
            family=family,
            hidden_size=hidden,
            num_layers=int(config["num_hidden_layers"]),
            num_heads=heads,
            num_kv_heads=int(config.get("num_key_value_heads") or heads),
            head_dim=int(config.get("head_dim") or hidden // heads),
            intermediate_size=int(config["intermediate_size"]),
            vocab_size=int(config["vocab_size"]),
            tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{config_path}: missing or bad field {exc}; is this a complete model config?") from None
