"""The identity check: ask the tuned model who it is, in Chinese and English, greedily.

It runs `swift infer` on the trained adapter, which reads the base model, template and
quantization from the checkpoint's args.json, so the check sees the model as trained.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from qwen_tune.errors import TrainingFailed
from qwen_tune.recipes import Bilingual

TORCHRUN_ENV = ("NPROC_PER_NODE", "NNODES", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT")
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


def infer_env(train_env: dict[str, str]) -> dict[str, str]:
    """Training's devices, as one process (infer, export): swift spreads a model over several GPUs by itself."""
    env = {k: v for k, v in train_env.items() if k not in TORCHRUN_ENV}
    return {**os.environ, **env, "PYTHONUNBUFFERED": "1"}


def check_identity(name: Bilingual, system: str, train_env: dict[str, str], checkpoint: str, out_dir: Path) -> IdentityCheck:
    out_dir.mkdir()
    queries = out_dir / "questions.jsonl"
    answers_path = out_dir / "answers.jsonl"
    with queries.open("w", encoding="utf-8") as f:
        for _, question in QUESTIONS:
            f.write(json.dumps({"query": question, "system": system}, ensure_ascii=False) + "\n")
    argv = [
        "swift", "infer",
        "--adapters", checkpoint,
        "--val_dataset", str(queries),
        "--temperature", "0",
        "--max_new_tokens", str(MAX_NEW_TOKENS),
        "--result_path", str(answers_path),
    ]  # fmt: skip
    (out_dir / "command.json").write_text(json.dumps({"argv": argv}, indent=2) + "\n")
    with open(out_dir / "infer.log", "w", encoding="utf-8") as log:
        done = subprocess.run(argv, env=infer_env(train_env), stdout=log, stderr=subprocess.STDOUT, text=True)
    if done.returncode != 0 or not answers_path.is_file():
        raise TrainingFailed(f"the identity check could not run (swift infer exit {done.returncode}); see {out_dir / 'infer.log'}")
    responses = {}
    for line in answers_path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        question = next(m["content"] for m in row["messages"] if m["role"] == "user")
        responses[question] = row["response"]
    answers = [judge(lang, q, responses.get(q, ""), name) for lang, q in QUESTIONS]
    check = IdentityCheck(passed=all(a.ok for a in answers), answers=answers)
    (out_dir / "verdict.json").write_text(json.dumps(asdict(check), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return check
