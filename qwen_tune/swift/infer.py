"""Asking the tuned model questions through `swift infer`, whose worker starts ahead of time.

swift's imports take 13-15 s on the GPU box; the worker (infer_worker.py) does them on the CPU while
training runs, then runs swift's own infer script, the one `swift infer` starts, once the checkpoint exists.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

from qwen_tune.swift.command import infer_argv, launchable, single_process_env


class PreloadedInfer:
    """`swift infer`'s process, started while training runs: it imports swift then.

    It runs on the arguments it is sent later; the run's verify/command.json still records the
    `swift infer` command, which does the same. CUDA starts only when it is sent the check, after
    training has exited and freed the GPU.
    """

    def __init__(self, train_env: dict[str, str]):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "qwen_tune.swift.infer_worker"], env=single_process_env(train_env), stdin=subprocess.PIPE,
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


def ask(
    questions: list[str], system: str, checkpoint: str, train_env: dict[str, str], out_dir: Path, max_new_tokens: int,
    preloaded: PreloadedInfer | None = None,
) -> tuple[int, dict[str, str] | None]:  # fmt: skip
    """swift infer's exit code and its answer to each question (None if it wrote none), greedy; files go in out_dir."""
    queries, answers_path = out_dir / "questions.jsonl", out_dir / "answers.jsonl"
    with queries.open("w", encoding="utf-8") as f:
        for question in questions:
            f.write(json.dumps({"query": question, "system": system}, ensure_ascii=False) + "\n")
    argv = infer_argv(checkpoint, queries, answers_path, max_new_tokens)
    (out_dir / "command.json").write_text(json.dumps({"argv": argv}, indent=2) + "\n")
    returncode = preloaded.run(argv[2:], out_dir / "infer.log") if preloaded else None
    if returncode is None:
        with open(out_dir / "infer.log", "w", encoding="utf-8") as log:
            env = single_process_env(train_env)
            returncode = subprocess.run(
                launchable(argv), env=env, stdout=log, stderr=subprocess.STDOUT, text=True, check=False
            ).returncode
    if returncode != 0 or not answers_path.is_file():
        return returncode, None
    responses = {}
    for line in answers_path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        question = next(m["content"] for m in row["messages"] if m["role"] == "user")
        responses[question] = row["response"]
    return returncode, responses
