"""Profiles: how a job fits the hardware (batching, recomputation, quantization, ZeRO), as YAML."""

from __future__ import annotations

from dataclasses import dataclass

from qwen_tune.config import Fields, find_config, load_yaml, shipped_names

DEVICES = ("single", "multi", "any", "cpu")


@dataclass(frozen=True)
class Profile:
    name: str
    summary: str
    preference: int  # the chooser tries lower first
    devices: str  # single | multi | any | cpu
    min_memory_gib: float
    micro_batch_size: int | str  # an integer, or "max": the largest that fits
    gradient_checkpointing: bool | str  # True, False, or "auto": off when it fits
    attention: str  # flash_attn (sdpa when flash-attn is missing) | sdpa
    quantization: str  # none | nf4
    deepspeed: str  # none | auto


def load_profile(name_or_path: str) -> Profile:
    path = find_config("profiles", name_or_path)
    top = Fields(load_yaml(path), str(path))
    micro = top.raw("micro_batch_size")
    profile = Profile(
        name=top.text("name"),
        summary=top.text("summary"),
        preference=int(top.number("preference", 0, 1000, integer=True)),
        devices=top.choice("devices", DEVICES),
        min_memory_gib=top.number("min_memory_gib", 0, 4096),
        micro_batch_size="max" if micro == "max" else int(top.number("micro_batch_size", 1, 4096, integer=True)),
        gradient_checkpointing=top.choice("gradient_checkpointing", (True, False, "auto")),
        attention=top.choice("attention", ("flash_attn", "sdpa")),
        quantization=top.choice("quantization", ("none", "nf4")),
        deepspeed=top.choice("deepspeed", ("none", "auto")),
    )
    top.done()
    return profile


def shipped_profiles() -> list[Profile]:
    return sorted((load_profile(name) for name in shipped_names("profiles")), key=lambda p: p.preference)
