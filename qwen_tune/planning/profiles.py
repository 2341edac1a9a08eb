"""Profiles: how a job fits the hardware (batching, recomputation, quantization, ZeRO), as YAML.

Profile is a pydantic dataclass: the file's fields, each with its rule and its help text, checked as it is read.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass

from qwen_tune.planning.config import Integer, Number, Text, find_config, load_yaml, parse, shipped_names

Devices = Literal["single", "multi", "any", "cpu"]
Attention = Literal["flash_attn", "sdpa"]  # flash_attn falls back to sdpa where flash-attn is missing
Quantization = Literal["none", "nf4"]
DeepSpeedChoice = Literal["none", "auto"]  # auto: zero2 when the model fits one card, else zero3


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class Profile:
    name: Text = Field(description="What --profile calls it.")
    summary: Text = Field(description="One line the plan prints: what the profile does.")
    preference: Integer = Field(ge=0, le=1000, description="The chooser tries lower first.")
    devices: Devices = Field(description="What it serves: one GPU, several, either, or the CPU.")
    min_memory_gib: Number = Field(
        ge=0, le=4096, description="The smallest card the chooser offers it to (--profile skips this)."
    )
    micro_batch_size: Annotated[Integer, Field(ge=1, le=4096)] | Literal["max"] = Field(
        description="Rows per GPU per micro-step; max: the largest that fits and divides the effective batch."
    )
    gradient_checkpointing: Literal[True, False, "auto"] = Field(
        description="Recompute activations; auto: off when it fits without."
    )
    attention: Attention = Field(description="flash_attn falls back to sdpa where flash-attn is missing.")
    quantization: Quantization = Field(description="nf4: 4-bit base weights (QLoRA, bitsandbytes).")
    deepspeed: DeepSpeedChoice = Field(description="auto: ZeRO-2 when the model fits one card, else ZeRO-3.")


def load_profile(name_or_path: str) -> Profile:
    path = find_config("profiles", name_or_path)
    return parse(Profile, load_yaml(path), str(path))


def shipped_profiles() -> list[Profile]:
    return sorted((load_profile(name) for name in shipped_names("profiles")), key=lambda p: p.preference)
