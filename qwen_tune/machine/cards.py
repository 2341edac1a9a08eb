"""Known cards, and `--gpus SPEC`: plan for hardware that is not in this box.

Memory is what NVML reports for the card (MiB), so plans for a named card match
what `qwen-tune gpus` would read on it.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, replace

from qwen_tune.errors import UsageError
from qwen_tune.machine.gpus import MIB, Gpu, Inventory


@dataclass(frozen=True)
class Card:
    key: str
    name: str
    memory_mib: int
    compute_capability: tuple[int, int]
    # Dense 16-bit tensor peak with FP32 accumulation, TFLOP/s (NVIDIA's datasheets, no sparsity; GeForce cards run
    # it at half their FP16-accumulate rate); None where NVIDIA publishes none (planning/speed.py then goes by cc).
    bf16_tflops: float | None = None


KNOWN_CARDS: tuple[Card, ...] = (
    Card("rtx5090", "NVIDIA GeForce RTX 5090", 32607, (12, 0), 209.5),
    Card("rtx5080", "NVIDIA GeForce RTX 5080", 16303, (12, 0), 112.6),
    Card("rtx4090d", "NVIDIA GeForce RTX 4090 D", 24564, (8, 9), 147),
    Card("rtx4090", "NVIDIA GeForce RTX 4090", 24564, (8, 9), 165.2),
    Card("rtx4080", "NVIDIA GeForce RTX 4080", 16376, (8, 9), 97.5),
    Card("rtx4070tisuper", "NVIDIA GeForce RTX 4070 Ti SUPER", 16376, (8, 9), 88.2),
    Card("rtx4070ti", "NVIDIA GeForce RTX 4070 Ti", 12282, (8, 9), 80.2),
    Card("rtx4070", "NVIDIA GeForce RTX 4070", 12282, (8, 9), 58.3),
    Card("rtx4060ti", "NVIDIA GeForce RTX 4060 Ti", 16380, (8, 9), 44.1),  # the 16 GB one; the 8 GB one trains little
    Card("rtx4060", "NVIDIA GeForce RTX 4060", 8188, (8, 9)),
    Card("rtx3090ti", "NVIDIA GeForce RTX 3090 Ti", 24564, (8, 6), 80),
    Card("rtx3090", "NVIDIA GeForce RTX 3090", 24576, (8, 6), 71),
    Card("rtx3080ti", "NVIDIA GeForce RTX 3080 Ti", 12288, (8, 6), 68.2),
    Card("rtx3080", "NVIDIA GeForce RTX 3080", 10240, (8, 6), 59.5),
    Card("rtx3060", "NVIDIA GeForce RTX 3060", 12288, (8, 6), 25.4),
    Card("rtx2080ti", "NVIDIA GeForce RTX 2080 Ti", 11264, (7, 5)),  # no bf16: fp16 plans
    Card("rtx6000ada", "NVIDIA RTX 6000 Ada Generation", 49140, (8, 9), 364.2),
    Card("a6000", "NVIDIA RTX A6000", 49140, (8, 6), 154.8),
    Card("a5000", "NVIDIA RTX A5000", 24564, (8, 6), 111.1),
    Card("a4000", "NVIDIA RTX A4000", 16376, (8, 6), 76.7),
    Card("a40", "NVIDIA A40", 46068, (8, 6), 149.7),
    Card("a10g", "NVIDIA A10G", 23028, (8, 6)),
    Card("a10", "NVIDIA A10", 23028, (8, 6), 125),
    Card("l40s", "NVIDIA L40S", 46068, (8, 9), 362),
    Card("l40", "NVIDIA L40", 46068, (8, 9), 181),
    Card("l20", "NVIDIA L20", 46068, (8, 9), 119.5),
    Card("l4", "NVIDIA L4", 23034, (8, 9), 121),
    Card("a100-40gb", "NVIDIA A100-SXM4-40GB", 40960, (8, 0), 312),
    Card("a100-80gb", "NVIDIA A100-SXM4-80GB", 81920, (8, 0), 312),
    Card("a800-40gb", "NVIDIA A800 40GB PCIe", 40960, (8, 0), 312),
    Card("a800-80gb", "NVIDIA A800-SXM4-80GB", 81920, (8, 0), 312),
    Card("h100", "NVIDIA H100 80GB HBM3", 81559, (9, 0), 989),
    Card("h800", "NVIDIA H800", 81559, (9, 0), 989),
    Card("h20", "NVIDIA H20", 97871, (9, 0), 148),
    Card("h200", "NVIDIA H200", 143771, (9, 0), 989),
    Card("t4", "Tesla T4", 15360, (7, 5), 65),
    Card("v100", "Tesla V100-SXM2-16GB", 16160, (7, 0), 125),
    Card("v100-32gb", "Tesla V100-SXM2-32GB", 32510, (7, 0), 125),
)

ALIASES = {
    "a10040g": "a100-40gb",
    "a10080g": "a100-80gb",
    "a80040g": "a800-40gb",
    "a80080g": "a800-80gb",
    "v10032g": "v100-32gb",
    "rtx6000adageneration": "rtx6000ada",
    "rtx4060ti16gb": "rtx4060ti",
    "rtx306012gb": "rtx3060",
}
# Names sold with two memory sizes: planning for the wrong one is worse than asking.
AMBIGUOUS = {"a100": ("a100-40gb", "a100-80gb"), "a800": ("a800-40gb", "a800-80gb")}

# A bare memory size says nothing about the architecture; assume an Ampere-class card.
ASSUMED_CC = (8, 0)

_COUNT = re.compile(r"^(?:(\d+)\s*[x×*]\s*)?(.+)$")
_MEMORY = re.compile(r"^(\d+(?:\.\d+)?)\s*gi?b$")
_SIZE = re.compile(r"([1-9]\d{0,3})(?:gb)?")


def _normalize(text: str) -> str:
    """'NVIDIA GeForce RTX 4090 D' → 'rtx4090d'; 'RTX A6000' → 'a6000'; full-width 'ｈ１００' → 'h100'."""
    return re.sub(r"nvidia|geforce|tesla|[^a-z0-9]", "", unicodedata.normalize("NFKC", text).lower()).replace("rtxa", "a")


def peak_tflops(gpu_name: str) -> float | None:
    """A GPU's dense bf16 peak by its NVML name (or a --gpus card's), where qwen-tune knows the card."""
    card = next((c for c in KNOWN_CARDS if c.name == gpu_name), None) or find_card(gpu_name)
    return card.bf16_tflops if card else None


def find_card(text: str) -> Card | None:
    """A card by any way people write it: 'RTX 4090', '4090', 'a100-80gb', 'A100-80G', 'h100-80gb'."""
    key = _normalize(text)
    key = "rtx" + key if re.fullmatch(r"\d{4}.*", key) else key
    key = ALIASES.get(key, key).replace("-", "")
    plain = {card.key.replace("-", ""): card for card in KNOWN_CARDS}
    sized = re.sub(r"(\d)(gib|g)$", r"\1gb", key)  # 80GiB, 80G: 80gb (after a10g, a card of its own, is looked up)
    for candidate in (key, sized, sized + "gb"):  # a100-80 is a100-80gb
        if candidate in plain:
            return plain[candidate]
    key = sized
    # A memory size after the name ('h10080gb', 'rtx309024g'): the card of that name, where it has that memory.
    # A memory size the card is sold with besides the table's ('rtx4060ti-8g'): that card with that memory.
    for name, card in sorted(plain.items(), key=lambda item: -len(item[0])):  # rtx4060ti before rtx4060
        size = _SIZE.fullmatch(key[len(name) :]) if key.startswith(name) else None
        if size and 4 <= (gib := int(size.group(1))) <= 1024:
            if abs(card.memory_mib / 1024 - gib) <= 0.1 * gib:
                return card
            return replace(card, key=f"{card.key}-{gib}gb", name=f"{card.name} ({gib} GB)", memory_mib=gib * 1024)
    return None


def parse_gpu_spec(spec: str) -> Inventory:
    """'2xrtx3090', 'a6000', '24GiB', '2x80GiB' → an inventory of that hardware."""
    match = _COUNT.match(spec.strip().lower())
    count = int(match.group(1) or 1) if match else 0
    what = match.group(2).strip() if match else ""
    if match and count > 64:
        raise UsageError(f"--gpus {spec!r}: at most 64 GPUs a machine; for more, plan one node's cards with --nnodes")
    if not match or not 1 <= count <= 64:
        raise UsageError(f"--gpus {spec!r}: give a card like rtx4090, 2xrtx3090, 24GiB or 2x80GiB")
    memory = _MEMORY.match(what)
    if memory:
        gib = float(memory.group(1))
        if not 1 <= gib <= 1024:
            raise UsageError(f"--gpus {spec!r}: memory must be between 1 and 1024 GiB")
        name = f"{gib:g} GiB GPU (assumed cc {ASSUMED_CC[0]}.{ASSUMED_CC[1]})"
        card = Card(what, name, int(gib * 1024), ASSUMED_CC)
    elif _normalize(what) in AMBIGUOUS:
        sizes = " or ".join(AMBIGUOUS[_normalize(what)])
        raise UsageError(f"--gpus {spec!r}: the {what.upper()} comes with 40 or 80 GB; say which: {sizes}")
    else:
        card = find_card(what)
        if card is None:
            known = ", ".join(c.key for c in KNOWN_CARDS)
            raise UsageError(f"--gpus {spec!r}: unknown card; known: {known}; or give memory, e.g. 24GiB")
    gpus = tuple(
        Gpu(index=i, name=card.name, total_bytes=card.memory_mib * MIB, compute_capability=card.compute_capability)
        for i in range(count)
    )
    return Inventory(gpus=gpus, source=f"spec:{spec}")
