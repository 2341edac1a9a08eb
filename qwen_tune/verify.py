"""The identity check: ask the tuned model who it is, in Chinese and English, greedily.

It runs `swift infer` on the trained adapter, which reads the base model, template and
quantization from the checkpoint's args.json, so the check sees the model as trained. Its worker is
started with the training (PreloadedInfer), so that swift's imports are done by the time it is needed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
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


class PreloadedInfer:
    """`swift infer`'s process, started while training runs: it imports swift then (13-15 s on the GPU box).

    It runs swift's own infer script, the one `swift infer` starts, on the arguments it is sent later; the
    run's verify/command.json still records the `swift infer` command, which does the same. It only imports
    on the CPU; CUDA starts when it is sent the check, after training has exited and freed the GPU.
    """

    def __init__(self, train_env: dict[str, str]):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "qwen_tune.infer_worker"], env=infer_env(train_env), stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
            start_new_session=True,  # Ctrl-C reaches swift's training through us; we end this one ourselves
        )  # fmt: skip

    @classmethod
    def start(cls, train_env: dict[str, str]) -> PreloadedInfer | None:
        """None where this Python cannot import swift (swift installed elsewhere): then plain `swift infer` runs."""
        return cls(train_env) if importlib.util.find_spec("swift") is not None else None

    def run(self, args: list[str], log: Path) -> int | None:
        """swift infer's exit code; None if the worker died before (a broken import): run `swift infer` instead."""
        if self.process.poll() is not None:
            return None
        try:
            self.process.stdin.write(json.dumps({"args": args, "log": str(log)}) + "\n")
            self.process.stdin.close()
        except BrokenPipeError:
            return None
        return self.process.wait()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


def check_identity(name: Bilingual, system: str, train_env: dict[str, str], checkpoint: str, out_dir: Path,
                   preloaded: PreloadedInfer | None = None) -> IdentityCheck:  # fmt: skip
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
    returncode = preloaded.run(argv[2:], out_dir / "infer.log") if preloaded else None
    if returncode is None:
        with open(out_dir / "infer.log", "w", encoding="utf-8") as log:
            returncode = subprocess.run(
                argv, env=infer_env(train_env), stdout=log, stderr=subprocess.STDOUT, text=True
            ).returncode
    if returncode != 0 or not answers_path.is_file():
        raise TrainingFailed(f"the identity check could not run (swift infer exit {returncode}); see {out_dir / 'infer.log'}")
    responses = {}
    for line in answers_path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        question = next(m["content"] for m in row["messages"] if m["role"] == "user")
        responses[question] = row["response"]
    answers = [judge(lang, q, responses.get(q, ""), name) for lang, q in QUESTIONS]
    check = IdentityCheck(passed=all(a.ok for a in answers), answers=answers)
    (out_dir / "verdict.json").write_text(json.dumps(asdict(check), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return check
