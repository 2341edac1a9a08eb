"""Profiles: how a job fits the hardware (batching, recomputation, quantization, ZeRO), as YAML."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from qwen_tune.planning.config import Fields, find_config, load_yaml, shipped_names

Devices = Literal["single", "multi", "any", "cpu"]
Attention = Literal["flash_attn", "sdpa"]  # flash_attn falls back to sdpa where flash-attn is missing
Quantization = Literal["none", "nf4"]
DeepSpeedChoice = Literal["none", "auto"]  # auto: zero2 when the model fits one card, else zero3


@dataclass(frozen=True)
class Profile:
    name: str
    summary: str
    preference: int  # the chooser tries lower first
    devices: Devices  # what the profile serves: one GPU, several, either, or the CPU
    min_memory_gib: float  # the smallest card the chooser offers it to (a forced profile skips this)
    micro_batch_size: int | Literal["max"]  # "max": the largest that fits and divides the effective batch
    gradient_checkpointing: bool | Literal["auto"]  # "auto": off when it fits without
    attention: Attention
    quantization: Quantization
    deepspeed: DeepSpeedChoice


def load_profile(name_or_path: str) -> Profile:
    path = find_config("profiles", name_or_path)
    top = Fields(load_yaml(path), str(path))
    micro = top.raw("micro_batch_size")
    profile = Profile(
        name=top.text("name"),
        summary=top.text("summary"),
        preference=int(top.number("preference", 0, 1000, integer=True)),
        devices=top.choice("devices", get_args(Devices)),
        min_memory_gib=top.number("min_memory_gib", 0, 4096),
        micro_batch_size="max" if micro == "max" else int(top.number("micro_batch_size", 1, 4096, integer=True)),
        gradient_checkpointing=top.choice("gradient_checkpointing", (True, False, "auto")),
        attention=top.choice("attention", get_args(Attention)),
        quantization=top.choice("quantization", get_args(Quantization)),
        deepspeed=top.choice("deepspeed", get_args(DeepSpeedChoice)),
    )
    top.done()
    return profile


def shipped_profiles() -> list[Profile]:
    return sorted((load_profile(name) for name in shipped_names("profiles")), key=lambda p: p.preference)
