"""Model shapes: from a local config.json, or a built-in table for the hub models we name.

The shape is all the memory estimator needs; swift's model_type/template names are
only passed for local directories, where swift cannot infer them from a hub id.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from qwen_tune.errors import ModelError


@dataclass(frozen=True)
class ModelShape:
    family: str  # config.json model_type: qwen2 | qwen3 | qwen3_moe
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool
    # Mixture of experts (qwen3_moe): every layer routes each token to experts_per_token of num_experts.
    num_experts: int = 0
    experts_per_token: int = 0
    moe_intermediate_size: int = 0

    @property
    def has_qk_norm(self) -> bool:
        """Qwen3 normalises q and k per head; its activations need more memory than Qwen2's."""
        return self.family in ("qwen3", "qwen3_moe")

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def active_ffn_size(self) -> int:
        """The MLP width one token goes through: the dense MLP, or its experts side by side."""
        return self.experts_per_token * self.moe_intermediate_size if self.is_moe else self.intermediate_size

    def layer_linears(self) -> tuple[tuple[int, int], ...]:
        """(in, out) of every nn.Linear in one decoder layer: what `all-linear` LoRA targets and bitsandbytes quantizes.

        In an MoE layer only attention's: transformers 5 holds the experts as 3-D parameters and the
        router as a parameter of its own module, neither an nn.Linear (docs/models.md).
        """
        h, q, kv, ffn = self.hidden_size, self.num_heads * self.head_dim, self.kv_dim, self.intermediate_size
        attention = ((h, q), (h, kv), (h, kv), (q, h))
        return attention if self.is_moe else (*attention, (h, ffn), (h, ffn), (ffn, h))

    @property
    def linear_params(self) -> int:
        return self.num_layers * sum(i * o for i, o in self.layer_linears())

    @property
    def expert_params(self) -> int:
        """Experts (gate, up, down of each) and the router: 16-bit even under 4-bit quantization."""
        per_layer = self.num_experts * (3 * self.hidden_size * self.moe_intermediate_size + self.hidden_size)
        return self.num_layers * per_layer

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
        return self.linear_params + self.expert_params + self.other_params

    @property
    def active_params(self) -> int:
        """The parameters one token computes with: all of a dense model, the routed experts' share of an MoE."""
        if not self.is_moe:
            return self.n_params
        routed = self.num_layers * self.experts_per_token * 3 * self.hidden_size * self.moe_intermediate_size
        return self.n_params - self.expert_params + routed

    def lora_params(self, rank: int) -> int:
        return self.num_layers * sum(rank * (i + o) for i, o in self.layer_linears())


# swift names for local directories, by config.json model_type.
SWIFT_NAMES = {"qwen2": ("qwen2", "qwen2_5"), "qwen3": ("qwen3", "qwen3"), "qwen3_moe": ("qwen3_moe", "qwen3")}


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
_HUB_MODELS: dict[str, ModelShape] = {
    **{f"Qwen2.5-{size}{kind}": shape for size, shape in _QWEN25.items() for kind in ("", "-Instruct")},
    **{f"Qwen2.5-Coder-{size}{kind}": _QWEN25[size] for size in _QWEN25 if size != "72B" for kind in ("", "-Instruct")},
    **{f"Qwen2.5-Math-{size}{kind}": _QWEN25[size] for size in ("1.5B", "7B", "72B") for kind in ("", "-Instruct")},
    **{f"Qwen3-{size}{kind}": shape for size, shape in _QWEN3.items() for kind in ("", "-Base")},
    **{f"Qwen3-{size}-{kind}-2507": _QWEN3[size] for size in ("4B", "30B-A3B", "235B-A22B") for kind in ("Instruct", "Thinking")},
    "Qwen3-Coder-30B-A3B-Instruct": _QWEN3["30B-A3B"],
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
        return SWIFT_NAMES[self.shape.family][1] if self.local_dir or self.files_dir else None

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
            "pass its local directory, or use a Qwen2.5/Qwen3 id like Qwen/Qwen3-8B (the README lists them)"
        )
    folder = (cache_dir or MODEL_CACHE) / source.replace("/", "--")
    config = folder / "config.json"
    if not config.is_file():
        for name in FETCHED_FILES:
            try:
                fetch(source, name, folder)
            except Exception as exc:  # the hub's client raises many kinds: not found, gated, no network
                if name == "config.json":
                    raise ModelError(
                        f"cannot fetch {name} of {source} from the hub ({type(exc).__name__}): check the id, or pass a local model dir"
                    ) from None
    return ModelRef(source=source, shape=shape_from_config(config), files_dir=folder)


MODEL_CACHE = Path.home() / ".cache" / "qwen-tune" / "models"


def hub_fetcher(*, offline: bool, use_hf: bool) -> Fetch | None:
    """How to fetch a file from the hub swift downloads from (ModelScope, or Hugging Face with USE_HF); None offline."""
    if offline:
        return None

    def fetch(repo_id: str, filename: str, folder: Path) -> Path:
        if use_hf:
            from huggingface_hub import hf_hub_download

            return Path(hf_hub_download(repo_id, filename, local_dir=folder))
        from modelscope.hub.file_download import model_file_download

        return Path(model_file_download(repo_id, filename, local_dir=str(folder)))

    return fetch


def hub_offline(environ: Mapping[str, str]) -> bool:
    """HF_HUB_OFFLINE as huggingface_hub reads it."""
    return _switched_on(environ.get("HF_HUB_OFFLINE", ""))


def use_hf(environ: Mapping[str, str]) -> bool:
    """USE_HF, as swift reads it: download from Hugging Face instead of ModelScope."""
    return _switched_on(environ.get("USE_HF", ""))


def _switched_on(value: str) -> bool:
    return value.strip().upper() in ("1", "ON", "YES", "TRUE")


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
            **(_moe_fields(config, config_path) if family == "qwen3_moe" else {}),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{config_path}: missing or bad field {exc}; is this a complete model config?") from None


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
    }
