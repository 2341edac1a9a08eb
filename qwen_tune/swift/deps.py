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
# pyproject's `gpu` extra installs these on Linux; `make run` adds it where nvidia-smi is found.
GPU_EXTRA = (DEEPSPEED, BITSANDBYTES, LIGER)


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
    return needs


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
    return MissingPackage(
        f"this plan uses {need.why}, which needs {need.requirement}{others}, but {python} {has}: {command}"
        " (qwen-tune[gpu] installs it); nothing was started"
    )
