"""The identity check: ask the model who it is, in Chinese and English, greedily, before and after tuning.

The probes go to a worker that loads the trained adapter as `swift infer` does (base model, template and
quantization from the checkpoint) and answers with the adapter on and off in that one load
(qwen_tune.swift.infer.probe); plain `swift infer` answers them (after only) where it cannot.
What each answer is checked against, and the verdict, are qwen_tune.checking.identity's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from qwen_tune.checking.identity import Answer, Expectation, judge
from qwen_tune.checking.retention import GENERAL_PROBES, Retention, score
from qwen_tune.errors import TrainingFailed
from qwen_tune.running.files import write_json
from qwen_tune.swift.infer import PreloadedInfer, probe, train_probe_request

MAX_NEW_TOKENS = 64


@dataclass
class IdentityCheck:
    passed: bool
    answers: list[Answer]
    compared: Literal["before-after", "after-only"]  # after-only: the base model could not be asked (swift infer fallback)
    asked: Literal["in training", "worker", "swift infer"]  # which process answered (qwen_tune.swift.infer.probe)
    seconds: dict[str, float] = field(default_factory=dict)
    retention: Retention | None = None  # the general probes before → after; None where only the tuned model was asked


def questions(expected: list[Expectation]) -> list[str]:
    """Every probe, in the order asked: the identity questions, then the general ones (retention)."""
    return [e.question for e in expected] + [q for _, q in GENERAL_PROBES]


def in_training_request(expected: list[Expectation], system: str, run_dir: Path) -> Path:
    """The probes for training's own process to answer at its end (swift/train_probe.py)."""
    return train_probe_request(questions(expected), system, MAX_NEW_TOKENS, run_dir)


def check_identity(
    expected: list[Expectation], system: str, train_env: dict[str, str], checkpoint: str, out_dir: Path,
    preloaded: PreloadedInfer | None = None, in_training: Path | None = None, trust_remote_code: bool = False,
) -> IdentityCheck:  # fmt: skip
    out_dir.mkdir()
    returncode, probed = probe(
        questions(expected), system, checkpoint, train_env, out_dir, MAX_NEW_TOKENS, preloaded, in_training, trust_remote_code
    )
    if returncode != 0 or probed is None:
        raise TrainingFailed(f"the identity check could not run (swift infer exit {returncode}); see {out_dir / 'infer.log'}")
    before = probed.before or {}
    answers = [judge(e, probed.after.get(e.question, ""), before.get(e.question)) for e in expected]
    check = IdentityCheck(
        passed=all(a.ok for a in answers), answers=answers, compared="before-after" if probed.before else "after-only",
        asked=probed.where, seconds=probed.seconds,
        retention=score(probed.before, probed.after, tuple(t for e in expected for t in e.terms)) if probed.before else None,
    )  # fmt: skip
    write_json(out_dir / "verdict.json", asdict(check))
    return check
