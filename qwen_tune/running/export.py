"""`qwen-tune export`: merge a run's LoRA adapter into the base weights, in RUN_DIR/merged, and check it; and what
export, chat and serve share: the checkpoint they load, the environment they start swift with, whether its model's code
may run.

The merged model's chat template gets the training system prompt as its default, so transformers, vLLM or Ollama
sending no system message build the prompt training saw (Qwen2.5's template would put "You are Qwen, created by
Alibaba Cloud..." there). Then the merged weights are asked the identity probes as plain transformers asks them
(swift/plain_probe.py: no adapter, no system message) and judged as the adapter was, beside the adapter's answers.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from qwen_tune.checking.identity import dice
from qwen_tune.checking.verify import IdentityCheck, questions, verdict, write_verdict
from qwen_tune.errors import ModelError, OutputError, TrainingFailed, UsageError
from qwen_tune.planning.jobs import untrusted_code
from qwen_tune.planning.models import remote_code
from qwen_tune.running.children import run_to_end
from qwen_tune.running.files import open_log, read_json, write_json, write_text
from qwen_tune.running.locks import writing
from qwen_tune.running.rundir import RunRecord, recorded_env, require_run_dir, unused_path
from qwen_tune.swift.checkpoints import is_complete, latest_checkpoint
from qwen_tune.swift.command import export_argv, is_adapter, launchable, require_swift, single_process_env
from qwen_tune.swift.infer import Probed

# Marks a chat template qwen-tune gave a default system prompt, so that it is never given two.
_MARK = "{#- qwen-tune: a conversation without a system message gets the training system prompt #}"


@dataclass
class MergedCheck:
    """The merged model's answers judged as the adapter's were, each beside the adapter's answer to the same probe."""

    check: IdentityCheck
    same_prompt: bool  # a question without a system message renders as it does with the training system prompt
    prompt: str  # the first question rendered without a system message (what the model sees)
    adapter_answers: list[str | None] = field(default_factory=list)  # per answer; None where the run has none
    agreement: list[float] = field(default_factory=list)  # with the adapter's answer (1.0 the same)

    @property
    def passed(self) -> bool:
        return self.check.passed and self.same_prompt


def find_checkpoint(run_dir: Path, on_notice: Callable[[str], None] = print) -> Path:
    """The checkpoint a run produced: the one result.json names (relative to the run directory, so a moved or copied
    run directory uses its own), else the newest complete one in RUN_DIR/swift, saying why."""
    require_run_dir(run_dir)
    recorded, why = _recorded_checkpoint(run_dir)
    if recorded is not None and is_complete(recorded):
        return recorded
    if recorded is not None:
        why = f"{recorded.name}, which result.json names, is incomplete or corrupt"
    latest = latest_checkpoint(run_dir / "swift")
    if latest is None and (writer := writing(run_dir)):
        raise UsageError(
            f"{run_dir} is still training (qwen-tune pid {writer.get('pid')}) and has saved no checkpoint yet: wait for "
            "its first one (or its end), then run this again"
        )
    if latest is None:
        raise UsageError(
            f"{run_dir} has no complete checkpoint in {run_dir / 'swift'} ({why}); did its training start? "
            f"`qwen-tune run --resume {run_dir}` continues it"
        )
    on_notice(f"{why}: using {latest.name}, the newest complete checkpoint")
    return latest


def _recorded_checkpoint(run_dir: Path) -> tuple[Path | None, str]:
    """result.json's checkpoint where it names one, else None and why not."""
    result_file = run_dir / "result.json"
    if not result_file.is_file():
        return None, "it has no result.json"
    try:
        result = read_json(result_file)
    except UsageError:
        return None, "its result.json is not valid JSON"
    checkpoint = result.get("checkpoint") if isinstance(result, dict) else None
    if not isinstance(checkpoint, str) or not checkpoint:
        status = result.get("status") if isinstance(result, dict) else None
        return None, f"result.json names no checkpoint (status {status})"
    # swift/checkpoint-N of this run directory: an absolute path (written before paths were relative) or one that
    # climbs out of the run directory names the checkpoint of the same name here.
    return run_dir / "swift" / Path(checkpoint).name, ""


def swift_env_for(run_dir: Path, on_notice: Callable[[str], None] = print) -> dict[str, str]:
    """The environment swift infer/export/deploy start with: the devices the run trained on, the allowed variables of
    run.json's env only (rundir.RECORDED_ENV: nothing there loads code), as one process."""
    try:
        recorded = recorded_env(run_dir)
    except UsageError as unreadable:
        on_notice(f"{unreadable}; using this box's default devices")
        recorded = {}
    return single_process_env(recorded)


def require_trusted_base(checkpoint: Path, trust_remote_code: bool) -> None:
    """The base model the checkpoint names (its args.json) runs code of its own only with --trust-remote-code."""
    try:
        args = read_json(checkpoint / "args.json")
    except UsageError:
        return
    model = args.get("model") if isinstance(args, dict) else None
    if isinstance(model, str) and Path(model).is_dir():
        code = remote_code(Path(model))
        if code and not trust_remote_code:
            raise ModelError(untrusted_code(model, code))


def export_merged(run_dir: Path, on_notice: Callable[[str], None] = print, *, trust_remote_code: bool = False) -> Path:
    """`swift export --merge_lora` into RUN_DIR/merged, which must not exist yet; its template defaults to the training
    system prompt."""
    checkpoint = find_checkpoint(run_dir, on_notice)
    if not is_adapter(str(checkpoint)):
        raise UsageError(
            f"{run_dir} trained every weight (full fine-tuning): {checkpoint} is already the whole model, with nothing "
            "to merge; load that directory itself (README 'Using the tuned model elsewhere')"
        )
    target = run_dir / "merged"
    if target.exists() or target.is_symlink():
        raise OutputError(f"{target} already exists; qwen-tune never overwrites it (move it away to export again)")
    require_trusted_base(checkpoint, trust_remote_code)
    require_swift()
    on_notice(f"merging {run_dir}'s adapter ({checkpoint.name}) into the base model...")
    env = swift_env_for(run_dir, on_notice)
    try:
        with open_log(run_dir / "export.log") as log:
            argv = launchable(export_argv(str(checkpoint), target), env, trust_remote_code=trust_remote_code)
            code = run_to_end(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    except OSError as exc:
        raise OutputError(
            f"cannot write {exc.filename or run_dir}: {exc.strerror}; {run_dir} must be writable to export"
        ) from None
    if code != 0:
        raise TrainingFailed(f"swift export failed with exit code {code}; see {run_dir / 'export.log'}")
    set_default_system(target, _training_system(checkpoint))
    return target


def _training_system(checkpoint: Path) -> str | None:
    """The system prompt training sent: swift keeps it in the checkpoint's args.json."""
    try:
        args = read_json(checkpoint / "args.json")
    except UsageError:
        return None
    system = args.get("system") if isinstance(args, dict) else None
    return system if isinstance(system, str) else None


def set_default_system(model_dir: Path, system: str | None) -> list[Path]:
    """Give every chat template of the model directory the training system prompt as its default; the files changed."""
    changed = []
    if not system:
        return changed
    jinja = model_dir / "chat_template.jinja"
    if jinja.is_file():
        write_text(jinja, with_default_system(jinja.read_text(encoding="utf-8"), system))
        changed.append(jinja)
    config_file = model_dir / "tokenizer_config.json"
    if config_file.is_file():
        config = json.loads(config_file.read_text(encoding="utf-8"))
        template = config.get("chat_template")
        if isinstance(template, str):
            config["chat_template"] = with_default_system(template, system)
        elif isinstance(template, list):  # named templates: [{"name": "default", "template": "..."}, ...]
            config["chat_template"] = [{**t, "template": with_default_system(t["template"], system)} for t in template]
        if template:
            write_json(config_file, config)
            changed.append(config_file)
    return changed


def with_default_system(template: str, system: str) -> str:
    """The chat template with a system message of its own in front of a conversation that has none: the one training
    sent, instead of whatever the template puts there (Qwen2.5: "You are Qwen, created by Alibaba Cloud...";
    Qwen3: none at all). A jinja string literal takes JSON's escapes."""
    if _MARK in template:
        return template
    literal = json.dumps(system, ensure_ascii=False)
    preamble = (
        f"{_MARK}\n{{%- if not messages or messages[0]['role'] != 'system' %}}"
        f"{{%- set messages = [{{'role': 'system', 'content': {literal}}}] + messages %}}{{%- endif %}}\n"
    )
    return preamble + template


def check_merged(run_dir: Path, model_dir: Path, on_notice: Callable[[str], None] = print) -> MergedCheck:
    """The merged weights asked the run's identity probes as plain transformers asks them, judged as the adapter was."""
    record = RunRecord.load(run_dir)
    expected = record.expected_identity()
    asked = questions(expected, None)
    out_dir = unused_path(run_dir / "merged-check")
    out_dir.mkdir()
    result = out_dir / "answers.json"
    request = {**asked.request(result), "model": str(model_dir), "system": record.system}
    write_json(out_dir / "probe.json", request)
    on_notice(f"asking the merged model the identity probes, with no system message (log: {out_dir / 'probe.log'})...")
    argv = [sys.executable, "-m", "qwen_tune.swift.plain_probe", str(out_dir / "probe.json")]
    with open_log(out_dir / "probe.log") as log:
        env = swift_env_for(run_dir, on_notice)
        code = run_to_end(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    if code != 0 or not result.is_file():
        raise TrainingFailed(f"the merged model could not be asked (exit {code}); see {out_dir / 'probe.log'}")
    data = json.loads(result.read_text(encoding="utf-8"))
    thinking = data["thinking"]
    probed = Probed(
        dict(zip(asked.default, data["after"], strict=True)), seconds=data["seconds"], where="merged",
        thinking=None if thinking is None else dict(zip(asked.thinking, thinking, strict=True)), thinking_mode=data["thinking_mode"],
    )  # fmt: skip
    adapter = _adapter_answers(run_dir)
    before = {q: a["before"] for (q, mode), a in adapter.items() if mode == "default" and a.get("before") is not None}
    answers, hint = verdict(expected, probed, before or None)
    check = IdentityCheck(
        passed=all(a.ok for a in answers), answers=answers, compared="before-after" if before else "after-only",
        asked="merged", seconds=data["seconds"], thinking_mode=data["thinking_mode"], hint=hint,
    )  # fmt: skip
    write_verdict(check, out_dir)
    theirs = [adapter.get((a.question, a.mode), {}).get("answer") for a in answers]
    agreement = [_agreement(t, a.answer) for t, a in zip(theirs, answers, strict=True)]
    same_prompt = data["prompt"] == data["prompt_with_system"]
    merged = MergedCheck(check, same_prompt, data["prompt"], theirs, agreement)
    write_json(out_dir / "merged_check.json", asdict(merged))
    return merged


def _agreement(adapter: str | None, merged: str) -> float:
    """1.0 where the merged model says what the adapter said; their character-bigram similarity otherwise."""
    if adapter is None:
        return 0.0
    return 1.0 if adapter.strip() == merged.strip() else round(dice(adapter, merged), 3)


def _adapter_answers(run_dir: Path) -> dict[tuple[str, str], dict]:
    """The adapter's answers from result.json, by (question, mode); none where the run was not checked."""
    try:
        result = read_json(run_dir / "result.json")
    except UsageError:
        return {}
    answers = result.get("answers", []) if isinstance(result, dict) else []
    return {(a["question"], a.get("mode", "default")): a for a in answers if isinstance(a, dict) and "question" in a}


def merged_lines(merged: MergedCheck) -> list[str]:
    """The merged model's verdict per probe, beside the adapter's answer."""
    lines = []
    for a, theirs, agreement in zip(merged.check.answers, merged.adapter_answers, merged.agreement, strict=True):
        mode = " (thinking on)" if a.mode == "thinking" else ""
        lines.append(f"  [{'ok ' if a.ok else 'BAD'}] {a.question}{mode}" + ("" if a.ok else f"  ({a.why})"))
        lines.append(f"        merged:  {_flat(a.answer)}")
        if theirs is not None:
            lines.append(f"        adapter: {'the same' if agreement == 1.0 else f'{_flat(theirs)} (agreement {agreement:.2f})'}")
    prompt = "the same prompt as training" if merged.same_prompt else "ANOTHER prompt than training (see merged-check/)"
    lines.append(f"  with no system message its chat template builds {prompt}")
    return lines


def _flat(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= 160 else flat[:159] + "…"
