"""How a run ended, as a typed value: written to result.json and result.txt, and printed by the CLI from it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from qwen_tune.checking.identity import Answer
from qwen_tune.checking.retention import Retention
from qwen_tune.planning.plan import Plan, SpeedBasis
from qwen_tune.planning.speed import peak_tflops
from qwen_tune.running.rundir import write_json, write_text


def speed_basis(plan: Plan) -> SpeedBasis:
    """What a run of this plan is counted against: its tokens, its model's parameters, its devices' dense peak."""
    peak = None if plan.inventory.is_cpu else sum(peak_tflops(g) for g in plan.inventory.gpus) * plan.nodes.count
    return plan.speed_basis(peak)


RunStatus = Literal["done", "interrupted", "train-failed", "verify-failed", "no-checkpoint"]
IdentityVerdict = Literal["pass", "fail", "skipped"]


@dataclass
class TrainResult:
    """One launch of `swift sft`: its exit, its time and memory, and what its logging.jsonl says."""

    returncode: int
    wall_seconds: float
    train_seconds: float | None = None
    final_loss: float | None = None
    steps: int | None = None
    checkpoint: str | None = None  # relative to the run directory: swift/checkpoint-N
    swift_peak_reserved_gib: float | None = None
    nvml_peak_used_gib: dict[str, float] = field(default_factory=dict)
    train_tokens: int | None = None  # the rows' tokens × epochs, padding aside
    tokens_per_second: float | None = None
    mfu: float | None = None  # 6 × params × tokens/s over the devices' dense 16-bit peak (plan.SpeedBasis)
    padding_fraction: float | None = None  # of the token slots computed: 0 where rows were packed
    attention: str | None = None  # what ran it: torch_varlen (packed), flash_attn, sdpa

    def count_speed(self, basis: SpeedBasis | None) -> None:
        """tokens/s and MFU from the plan's basis and this launch's training time (None: a resumed launch, which
        trained only part of the tokens)."""
        if basis is None:
            return
        self.padding_fraction, self.attention = basis.padding_fraction, basis.attention
        if not basis.train_tokens or not self.train_seconds:
            return
        self.train_tokens, self.tokens_per_second = basis.train_tokens, round(basis.train_tokens / self.train_seconds)
        if basis.peak_tflops:
            self.mfu = round(6 * basis.params * basis.train_tokens / self.train_seconds / (basis.peak_tflops * 1e12), 4)

    def speed_text(self) -> str:
        """'8,734 tokens/s, MFU 40.4% (6N, bf16 dense peak), no padding (torch_varlen)'; '' where not counted."""
        if not self.tokens_per_second:
            return ""
        mfu = f", MFU {100 * self.mfu:.1f}% (6N over the dense 16-bit peak)" if self.mfu is not None else ""
        padding = "no padding" if not self.padding_fraction else f"{100 * self.padding_fraction:.0f}% padding"
        return f"{self.tokens_per_second:,.0f} tokens/s{mfu}, {padding} ({self.attention})"


@dataclass
class RunOutcome:
    """The end of a run (or of one node's share of it); `line` is its one-line summary."""

    run_dir: str
    profile: str
    estimate_peak_gib: float
    status: RunStatus
    line: str
    resumed_from: str | None = None  # relative to the run directory
    error: str | None = None
    train: TrainResult | None = None
    loss_curve: str | None = None
    identity_check: IdentityVerdict | None = None
    answers: list[Answer] = field(default_factory=list)  # each probe's answer before and after tuning, and its verdict
    identity_compared: str | None = None  # before-after, or after-only where the base model could not be asked
    identity_asked: str | None = None  # in training (its own process, at its end), worker, or swift infer
    identity_hint: str | None = None  # a FAIL's fix where --name/--author replaced the data's names (identity.flag_hint)
    retention: Retention | None = None  # general answers before → after (retention.py)
    timeline: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        """result.json: the training's figures at the top level, beside the status."""
        data: dict = {"run_dir": self.run_dir, "profile": self.profile, "estimate_peak_gib": self.estimate_peak_gib}
        if self.resumed_from:
            data["resumed_from"] = self.resumed_from
        if self.train is not None:
            data.update(asdict(self.train), loss_curve=self.loss_curve)
        data["status"] = self.status
        if self.error:
            data["error"] = self.error
        if self.identity_check:
            data["identity_check"] = self.identity_check
        if self.identity_compared:
            data["identity_compared"] = self.identity_compared
            data["identity_asked"] = self.identity_asked
        if self.identity_hint:
            data["identity_hint"] = self.identity_hint
        if self.answers:
            data["answers"] = [asdict(a) for a in self.answers]
        if self.retention:
            data["retention"] = asdict(self.retention)
        if self.timeline:
            data["timeline"] = self.timeline
        return data

    def write(self) -> None:
        run_dir = Path(self.run_dir)
        write_json(run_dir / "result.json", self.to_json())
        write_text(run_dir / "result.txt", self.line + "\n")
