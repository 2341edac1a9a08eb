"""The packages a plan needs beside ms-swift, at the versions swift's stack accepts; pure (jobs.installed_versions probes).

swift 4.6 does not list them: `--deepspeed` calls `require_version('deepspeed')` (swift/arguments/sft_args.py), and
`--quant_method bnb` loads through transformers, which wants bitsandbytes at BITSANDBYTES_MIN_VERSION
(transformers/utils/import_utils.py) and deepspeed at its dependency table's version. tests/test_deps.py reads
both from the installed transformers, so a newer one that raises them fails CI.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING

from packaging.requirements import Requirement
from packaging.version import InvalidVersion, Version

from qwen_tune.errors import MissingPackage

if TYPE_CHECKING:
    from collections.abc import Mapping

    from qwen_tune.planning.plan import Plan

DEEPSPEED = "deepspeed>=0.9.3"
BITSANDBYTES = "bitsandbytes>=0.46.1"
# --use_liger_kernel: transformers' Trainer applies it (apply_liger_kernel_to_instance); 0.6 patches Qwen3 and its MoE.
LIGER = "liger-kernel>=0.6"
# flash-linear-attention's kernels (the `fla` package; pure Python and Triton, 1.1 MB, needs only einops beside torch):
# transformers 5 runs the hybrid models' Gated DeltaNet with them where `fla` imports, else on a slow torch path;
# swift's padding-free path for these models needs them. 0.6.0 is the version read here: its
# fla.ops.gated_delta_rule.chunk_gated_delta_rule and fla.modules.convolution.causal_conv1d are what both import.
FLA = "fla-core>=0.6.0"
# pyproject's `gpu` extra installs these on Linux; `make run` adds it where nvidia-smi is found.
GPU_EXTRA = (DEEPSPEED, BITSANDBYTES, LIGER, FLA)
# swift 4.6 loads Qwen3.5/3.6 (its qwen3_5 and qwen3_5_moe model types: Qwen3VLLoader.get_processor) only where
# qwen_vl_utils>=0.0.14 imports, and qwen_vl_utils imports torchvision, which must be the build of the box's torch:
# neither is in the `gpu` extra (torchvision from PyPI could replace the box's torch).
QWEN_VL_UTILS = "qwen-vl-utils>=0.0.14"
TORCHVISION = "torchvision"


@dataclass(frozen=True)
class Need:
    requirement: str  # a PEP 508 requirement, e.g. deepspeed>=0.9.3
    why: str  # what in the plan turns it on

    @property
    def name(self) -> str:
        return Requirement(self.requirement).name


def plan_needs(plan: Plan) -> list[Need]:
    """What the plan turns on that swift imports only when it gets there."""
    needs = []
    if plan.setup.zero:
        needs.append(Need(DEEPSPEED, f"DeepSpeed {plan.setup.zero}"))
    if plan.profile.quantization == "nf4":
        needs.append(Need(BITSANDBYTES, "4-bit QLoRA"))
    if plan.setup.liger:
        needs.append(Need(LIGER, "Liger's kernels"))
    if plan.model.shape.family in ("qwen3_5", "qwen3_5_moe"):
        why = "Qwen3.5/3.6, which swift loads with its processor"
        needs += [Need(QWEN_VL_UTILS, why), Need(TORCHVISION, why)]
    return needs


def linear_attention_warning() -> str:
    """The plan's line where a hybrid model's Gated DeltaNet runs on transformers' torch path on GPUs: a warning, not a
    refusal (that path trains, only slower and with more activation memory)."""
    return (
        "the Gated DeltaNet layers run on transformers' slow torch path (Qwen3.5-9B: 1.22 s a step against 0.70 s, "
        f"transformers#48718): flash-linear-attention is not installed; pip install '{FLA}' (qwen-tune[gpu] installs it)"
    )


def unmet(needs: list[Need], installed: Mapping[str, str | None]) -> list[tuple[Need, str | None]]:
    """The needs that the installed versions (None: not importable) do not meet, with what is there."""
    missing = []
    for need in needs:
        found = installed.get(need.name)
        try:
            ok = found is not None and Requirement(need.requirement).specifier.contains(Version(found), prereleases=True)
        except InvalidVersion:
            ok = False
        if not ok:
            missing.append((need, found))
    return missing


def missing_package(missing: list[tuple[Need, str | None]], python: str) -> MissingPackage:
    """One line: what the plan needs, what this Python has, and the exact command that installs it."""
    need, found = missing[0]
    has = f"has {need.name} {found}" if found else f"has no {need.name}"
    requirements = [n.requirement for n, _ in missing]
    command = shlex.join([python, "-m", "pip", "install", *requirements])
    others = f" (and {', '.join(requirements[1:])})" if len(requirements) > 1 else ""
    if any(n.requirement == TORCHVISION for n, _ in missing):
        where = " (torchvision must be the build of this Python's torch: pip's may replace it)"
    else:
        where = " (qwen-tune[gpu] installs it)"
    return MissingPackage(f"this plan uses {need.why}, which needs {need.requirement}{others}, but {python} {has}: {command}"
                          f"{where}; nothing was started")  # fmt: skip
