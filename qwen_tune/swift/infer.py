"""Asking the tuned model questions, before and after tuning, in a worker that starts ahead of time.

swift's imports take 13-15 s on the GPU box; the worker (infer_worker.py) does them on the CPU while
training runs. Once the checkpoint exists it loads the model as `swift infer` would and answers the
questions with the adapter on and off, in that one load (`probe`). Where the worker cannot, plain
`swift infer` answers them with the adapter on only (`ask`).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from qwen_tune.errors import Interrupted, TrainingFailed
from qwen_tune.running.children import PARENT_PID_ENV, Child, run_to_end
from qwen_tune.running.files import open_log, write_json, write_text
from qwen_tune.swift.command import (
    LAUNCH_TRUST_FLAG,
    distill_argv,
    infer_argv,
    is_adapter,
    launchable,
    probe_args,
    single_process_env,
    tuned_model,
)

ThinkingMode = Literal["hybrid", "always", "never"]
# swift 4.6's Qwen templates whose model thinks or not on request (is_thinking with a non-thinking prefix), and those
# that always think; tests/test_swift_args.py checks them against swift's own registry. train_probe.thinking_mode asks
# swift itself; plain `swift infer` (the fallback) is told from the adapter's args.json.
HYBRID_TEMPLATES = ("qwen3", "qwen3_5", "qwen3_8", "qwen3_5_emb")
THINKING_TEMPLATES = ("qwq", "qwen3_thinking")


@dataclass(frozen=True)
class Questions:
    """What the identity check asks: questions in the model's default mode (adapter on and off), and for a model that
    can also think, questions asked again with thinking on (adapter on), with a longer budget for the thinking."""

    default: list[str]
    thinking: list[str]
    system: str | None  # None: no system message (the merged model's own default)
    max_new_tokens: int
    thinking_max_new_tokens: int

    def request(self, result: Path) -> dict:
        """The request train_probe.answer_probes reads (in training, or in the worker)."""
        return {"questions": self.default, "thinking_questions": self.thinking, "system": self.system,
                "max_new_tokens": self.max_new_tokens, "thinking_max_new_tokens": self.thinking_max_new_tokens,
                "result": str(result)}  # fmt: skip


@dataclass
class Probed:
    """The answers to each question after tuning, and before it where the worker could ask the base model too."""

    after: dict[str, str]
    before: dict[str, str] | None = None
    seconds: dict[str, float] = field(default_factory=dict)  # the model load and each pass of generation
    where: Literal["in training", "worker", "swift infer", "merged"] = "worker"
    thinking: dict[str, str] | None = None  # the thinking questions' answers, thinking on; None where not asked
    thinking_mode: ThinkingMode = "never"

    @classmethod
    def read(cls, data: dict, questions: Questions, where: str = "worker") -> Probed:
        """From train_probe.answer_probes' answers."""
        thinking = data.get("thinking")
        return cls(
            dict(zip(questions.default, data["after"], strict=True)),
            None if data["before"] is None else dict(zip(questions.default, data["before"], strict=True)),  # full FT: none
            data["seconds"], where, None if thinking is None else dict(zip(questions.thinking, thinking, strict=True)),
            data.get("thinking_mode", "never"),
        )  # fmt: skip


def _with_parent(env: dict[str, str]) -> dict[str, str]:
    """The worker ends with this qwen-tune (swift/launch.py's die_with_parent), as a Child's process does."""
    return {**env, PARENT_PID_ENV: str(os.getpid())}


class PreloadedInfer:
    """`swift infer`'s process, started while training runs: it imports swift then.

    It runs on the arguments it is sent later; the run's verify/command.json still records the
    `swift infer` command, which does the same. CUDA starts only when it is sent the check, after
    training has exited and freed the GPU.
    """

    def __init__(self, train_env: dict[str, str], trust_remote_code: bool = False):
        trust = [LAUNCH_TRUST_FLAG] if trust_remote_code else []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "qwen_tune.swift.infer_worker", *trust], env=_with_parent(single_process_env(train_env)), stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
            start_new_session=True,  # Ctrl-C reaches swift's training through us; we end this one ourselves
        )  # fmt: skip

    @classmethod
    def start(cls, train_env: dict[str, str], trust_remote_code: bool = False) -> PreloadedInfer | None:
        """None where this Python cannot import swift (swift installed elsewhere): then plain `swift infer` runs."""
        return cls(train_env, trust_remote_code) if importlib.util.find_spec("swift") is not None else None

    def run(self, args: list[str], log: Path, probe: dict | None = None) -> int | None:
        """The worker's exit code; None if it died before (a broken import): run `swift infer` instead."""
        if self.process.poll() is not None:
            return None
        request = {"args": args, "log": str(log), **({"probe": probe} if probe else {})}
        try:
            self.process.stdin.write(json.dumps(request, ensure_ascii=False) + "\n")
            self.process.stdin.close()
        except BrokenPipeError:
            return None
        with Child(grace=10.0) as child:  # a stop of qwen-tune now reaches the worker too
            child.adopt(self.process)
            code = child.wait()
        if child.stopped_by:
            raise Interrupted(f"stopped by {child.stopped_by}")
        return code

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


def ask(
    questions: list[str], system: str | None, model_args: list[str], train_env: dict[str, str], out_dir: Path,
    max_new_tokens: int, extra: list[str] = (), name: str = "", trust_remote_code: bool = False,
) -> tuple[int, dict[str, str] | None]:  # fmt: skip
    """swift infer's exit code and its answer to each question (None if it wrote none), greedy; files go in out_dir
    (named with name: questions{name}.jsonl...). model_args say which model (--adapters CKPT, or --model DIR)."""
    queries, answers_path = out_dir / f"questions{name}.jsonl", out_dir / f"answers{name}.jsonl"
    lines = [json.dumps({"query": q, **({"system": system} if system else {})}, ensure_ascii=False) for q in questions]
    write_text(queries, "".join(line + "\n" for line in lines))
    argv = [*infer_argv(model_args, queries, answers_path, max_new_tokens), *extra]
    write_json(out_dir / f"command{name}.json", {"argv": argv})
    with open_log(out_dir / f"infer{name}.log") as log:
        env = single_process_env(train_env)
        returncode = run_to_end(launchable(argv, env, trust_remote_code=trust_remote_code), env=env, stdout=log,
                                stderr=subprocess.STDOUT)  # fmt: skip
    if returncode != 0 or not answers_path.is_file():
        return returncode, None
    responses = {}
    for line in answers_path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        question = next(m["content"] for m in row["messages"] if m["role"] == "user")
        responses[question] = row["response"]
    return returncode, responses


def thinking_mode_of(template: str | None) -> ThinkingMode:
    return "hybrid" if template in HYBRID_TEMPLATES else "always" if template in THINKING_TEMPLATES else "never"


def checkpoint_template(checkpoint: str) -> str | None:
    """The swift template a checkpoint was trained with, from its args.json (or its run's)."""
    for folder in (Path(checkpoint), Path(checkpoint).parent):
        try:
            return json.loads((folder / "args.json").read_text(encoding="utf-8")).get("template")
        except (OSError, ValueError):
            continue
    return None


def ask_both_modes(
    questions: Questions,
    model_args: list[str],
    mode: ThinkingMode,
    train_env: dict[str, str],
    out_dir: Path,
    trust_remote_code: bool = False,
) -> tuple[int, Probed | None]:
    """Plain `swift infer` (no before): the default questions in the model's default mode, and for a hybrid model the
    thinking questions again with --enable_thinking true, as train_probe.answer_probes asks them."""
    tokens = questions.thinking_max_new_tokens if mode == "always" else questions.max_new_tokens
    returncode, after = ask(questions.default, questions.system, model_args, train_env, out_dir, tokens,
                            trust_remote_code=trust_remote_code)  # fmt: skip
    if after is None:
        return returncode, None
    probed = Probed(after, where="swift infer", thinking_mode=mode)
    if mode == "hybrid" and questions.thinking:
        returncode, probed.thinking = ask(
            questions.thinking, questions.system, model_args, train_env, out_dir, questions.thinking_max_new_tokens,
            ["--enable_thinking", "true"], name="-thinking", trust_remote_code=trust_remote_code,
        )  # fmt: skip
        if probed.thinking is None:
            return returncode, None
    return 0, probed


def train_probe_request(questions: Questions, run_dir: Path) -> Path:
    """What swift/train_probe.py asks inside training (its answers go to in_training_answers.json); stale answers removed."""
    request, result = run_dir / "in_training_probe.json", run_dir / "in_training_answers.json"
    for stale in (result, result.with_name(result.name + ".error"), result.with_name(result.name + ".tmp")):
        stale.unlink(missing_ok=True)
    write_json(request, questions.request(result))
    return request


def in_training_answers(request: Path, questions: Questions, checkpoint: str) -> Probed | None:
    """The answers training's own process gave at its end, if it gave them for the model the checkpoint holds."""
    result = Path(json.loads(request.read_text(encoding="utf-8"))["result"])
    if not result.is_file():
        return None
    data = json.loads(result.read_text(encoding="utf-8"))
    if not checkpoint.rstrip("/").endswith(f"checkpoint-{data['step']}"):
        return None  # the last checkpoint is not the model that answered
    return Probed.read(data, questions, "in training")


def probe(
    questions: Questions, checkpoint: str, train_env: dict[str, str], out_dir: Path, preloaded: PreloadedInfer | None,
    in_training: Path | None = None, trust_remote_code: bool = False,
) -> tuple[int, Probed | None]:  # fmt: skip
    """Greedy answers with the adapter on and off in one model load: training's own where it gave them (in_training,
    its request), else the worker's; where the worker fails, `swift infer`'s (after only)."""
    answered = in_training_answers(in_training, questions, checkpoint) if in_training and in_training.is_file() else None
    if answered is not None:
        return 0, answered
    result = out_dir / "before_after.json"
    if preloaded is not None and is_adapter(checkpoint):  # it asks with the adapter on and off; a full model has none
        args = probe_args(checkpoint)
        request = questions.request(result)
        write_json(out_dir / "probe.json", {"args": args, **request})
        if preloaded.run(args, out_dir / "probe.log", request) == 0 and result.is_file():
            return 0, Probed.read(json.loads(result.read_text(encoding="utf-8")), questions)
    mode = thinking_mode_of(checkpoint_template(checkpoint))
    return ask_both_modes(questions, tuned_model(checkpoint), mode, train_env, out_dir, trust_remote_code)


def distill(
    prompts: list[str], sft: list[str], train_env: dict[str, str], out_dir: Path, trust_remote_code: bool = False
) -> tuple[list[dict], list[str]]:
    """The base model's own greedy answers to the prompts, as messages rows, the shape of every row of dataset.jsonl
    (`swift infer` without an adapter); and the prompts it answered with nothing, which teach nothing and are dropped."""
    if out_dir.is_symlink():
        out_dir.unlink()  # qwen-tune's own folder of the run, not wherever a link points
    out_dir.mkdir(exist_ok=True)
    questions, answers = out_dir / "prompts.jsonl", out_dir / "answers.jsonl"
    write_text(questions, "".join(json.dumps({"query": p}, ensure_ascii=False) + "\n" for p in prompts))
    answers.unlink(missing_ok=True)
    argv = distill_argv(sft, questions, answers)
    write_json(out_dir / "command.json", {"argv": argv})
    with open_log(out_dir / "infer.log") as log:
        env = single_process_env(train_env)
        code = run_to_end(launchable(argv, env, trust_remote_code=trust_remote_code), env=env, stdout=log,
                          stderr=subprocess.STDOUT)  # fmt: skip
    if code != 0 or not answers.is_file():
        raise TrainingFailed(
            f"the base model could not answer the general prompts (swift infer exit {code}); see {out_dir / 'infer.log'}"
        )
    rows, empty = [], []
    for line in answers.read_text(encoding="utf-8").split("\n"):
        if not line.strip():
            continue
        row = json.loads(line)
        question = next(m["content"] for m in row["messages"] if m["role"] == "user")
        if row["response"].strip():
            answer = [{"role": "user", "content": question}, {"role": "assistant", "content": row["response"]}]
            rows.append({"messages": answer})
        else:
            empty.append(question)
    return rows, empty
