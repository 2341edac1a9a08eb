"""How a run ended, as a typed value: written to result.json and result.txt, and printed by the CLI from it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from qwen_tune.checking.identity import Answer
from qwen_tune.checking.retention import Retention
from qwen_tune.running.rundir import write_json

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
    checkpoint: str | None = None
    swift_peak_reserved_gib: float | None = None
    nvml_peak_used_gib: dict[str, float] = field(default_factory=dict)


@dataclass
class RunOutcome:
    """The end of a run (or of one node's share of it); `line` is its one-line summary."""

    run_dir: str
    profile: str
    estimate_peak_gib: float
    status: RunStatus
    line: str
    resumed_from: str | None = None
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
        (run_dir / "result.txt").write_text(self.line + "\n", encoding="utf-8")
