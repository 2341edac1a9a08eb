"""The identity check: ask the model who it is, who made it and whether it is the base model, in Chinese and English,
greedily, before and after tuning (and, where the model can think, once more with thinking on).

The probes go to training's own process at its end, or to a worker that loads the trained adapter as `swift infer`
does (base model, template and quantization from the checkpoint) and answers with the adapter on and off in that
one load (qwen_tune.swift.infer.probe); plain `swift infer` answers them (after only) where neither can.
What each answer is checked against, and the verdict, are qwen_tune.checking.identity's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from qwen_tune.checking.identity import Answer, Expectation, flag_hint, judge
from qwen_tune.checking.retention import GENERAL_PROBES, Retention, score
from qwen_tune.errors import TrainingFailed
from qwen_tune.running.files import write_json
from qwen_tune.swift.infer import PreloadedInfer, Probed, Questions, probe, train_probe_request

MAX_NEW_TOKENS = 64
# A thinking answer starts with its thinking: enough for it to say who it is (Qwen3-8B's own begins "Okay, the user
# is asking 'who are you?' Let me start by introducing myself as Qwen" within 30 tokens), not to finish it.
THINKING_MAX_NEW_TOKENS = 128


@dataclass
class IdentityCheck:
    passed: bool
    answers: list[Answer]
    compared: Literal["before-after", "after-only"]  # after-only: the base model could not be asked (swift infer fallback)
    asked: Literal["in training", "worker", "swift infer", "merged"]  # which process answered
    seconds: dict[str, float] = field(default_factory=dict)
    retention: Retention | None = None  # the general probes before → after; None where only the tuned model was asked
    thinking_mode: str = "never"  # hybrid: also asked with thinking on; always: a thinking-only model; never
    hint: str | None = None  # on a FAIL where --name/--author replaced the data's names: the flag that would have matched


def questions(expected: list[Expectation], system: str | None) -> Questions:
    """Every probe, in the order asked: the identity questions, then the general ones (retention); and those asked
    again with thinking on where the model has both modes."""
    default = list(dict.fromkeys(e.question for e in expected if e.mode == "default"))
    thinking = list(dict.fromkeys(e.question for e in expected if e.mode == "thinking"))
    return Questions(default + [q for _, q in GENERAL_PROBES], thinking, system, MAX_NEW_TOKENS, THINKING_MAX_NEW_TOKENS)


def in_training_request(expected: list[Expectation], system: str, run_dir: Path) -> Path:
    """The probes for training's own process to answer at its end (swift/train_probe.py)."""
    return train_probe_request(questions(expected, system), run_dir)


def verdict(expected: list[Expectation], probed: Probed, before: dict[str, str] | None) -> tuple[list[Answer], str | None]:
    """Each asked probe's verdict (the thinking ones only where the model thought), and a FAIL's flag hint."""
    answers = []
    for e in expected:
        if e.mode == "thinking":
            if probed.thinking is not None:
                answers.append(judge(e, probed.thinking.get(e.question, ""), None))
        else:
            answers.append(judge(e, probed.after.get(e.question, ""), (before or {}).get(e.question)))
    passed = all(a.ok for a in answers)
    return answers, None if passed else flag_hint(answers, expected)


def check_identity(
    expected: list[Expectation], system: str, train_env: dict[str, str], checkpoint: str, out_dir: Path,
    preloaded: PreloadedInfer | None = None, in_training: Path | None = None, trust_remote_code: bool = False,
) -> IdentityCheck:  # fmt: skip
    out_dir.mkdir()
    returncode, probed = probe(
        questions(expected, system), checkpoint, train_env, out_dir, preloaded, in_training, trust_remote_code
    )
    if returncode != 0 or probed is None:
        raise TrainingFailed(f"the identity check could not run (swift infer exit {returncode}); see {out_dir / 'infer.log'}")
    answers, hint = verdict(expected, probed, probed.before)
    terms = tuple(dict.fromkeys(t for e in expected for t in e.terms))
    check = IdentityCheck(
        passed=all(a.ok for a in answers), answers=answers, compared="before-after" if probed.before else "after-only",
        asked=probed.where, seconds=probed.seconds,
        retention=score(probed.before, probed.after, terms) if probed.before else None,
        thinking_mode=probed.thinking_mode, hint=hint,
    )  # fmt: skip
    write_verdict(check, out_dir)
    return check


def write_verdict(check: IdentityCheck, out_dir: Path) -> None:
    write_json(out_dir / "verdict.json", asdict(check))
