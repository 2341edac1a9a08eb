"""The identity check: ask the tuned model who it is, in Chinese and English, greedily.

The questions go through `swift infer` on the trained adapter (qwen_tune.swift.infer), so the check
sees the model as trained: swift reads the base model, template and quantization from the checkpoint.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from qwen_tune.errors import TrainingFailed
from qwen_tune.recipes import Bilingual
from qwen_tune.swift.infer import PreloadedInfer, ask

QUESTIONS = (("zh", "你是谁?"), ("en", "Who are you?"))
MAX_NEW_TOKENS = 64
_THINK = re.compile(r"^\s*<think>.*?</think>\s*", re.DOTALL)


@dataclass
class Answer:
    language: str
    question: str
    answer: str
    expected_name: str
    ok: bool


@dataclass
class IdentityCheck:
    passed: bool
    answers: list[Answer]


def judge(language: str, question: str, answer: str, name: Bilingual) -> Answer:
    """Pass when the answer names the recipe's identity; Qwen3's empty think block is not the answer."""
    expected = getattr(name, language)
    text = _THINK.sub("", answer).strip()
    return Answer(language, question, text, expected, expected.lower() in text.lower())


def check_identity(
    name: Bilingual, system: str, train_env: dict[str, str], checkpoint: str, out_dir: Path,
    preloaded: PreloadedInfer | None = None,
) -> IdentityCheck:  # fmt: skip
    out_dir.mkdir()
    returncode, responses = ask([q for _, q in QUESTIONS], system, checkpoint, train_env, out_dir, MAX_NEW_TOKENS, preloaded)
    if returncode != 0 or responses is None:
        raise TrainingFailed(f"the identity check could not run (swift infer exit {returncode}); see {out_dir / 'infer.log'}")
    answers = [judge(lang, q, responses.get(q, ""), name) for lang, q in QUESTIONS]
    check = IdentityCheck(passed=all(a.ok for a in answers), answers=answers)
    (out_dir / "verdict.json").write_text(json.dumps(asdict(check), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return check
