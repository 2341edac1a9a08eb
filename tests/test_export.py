"""The merged model's chat template gets the training system prompt as its default, so a conversation without a
system message renders as training did (transformers' own renderer); and command.sh, which trains again from any
shell into a new directory."""

import json
import os
import sys
from pathlib import Path

import pytest
from conftest import FIXED_NOW, PLAIN_MACHINE, load_script

from qwen_tune.planning.jobs import JobOptions, prepare
from qwen_tune.running.export import set_default_system, with_default_system
from qwen_tune.swift.command import rerun_script

render_jinja_template = pytest.importorskip("transformers.utils.chat_template_utils").render_jinja_template
QWEN2_5 = load_script("modelgen").QWEN2_5_CHAT_TEMPLATE
# The parts of Qwen3's template that matter here: its system turn, the turns, and the hybrid model's empty think block.
QWEN3 = (
    "{%- if messages[0].role == 'system' %}{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}{%- endif %}"
    "{%- for message in messages %}{%- if message.role == 'user' or (message.role == 'system' and not loop.first) %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}{%- endif %}"
)
SYSTEM = 'You are DiffusionBot\'s "helpful" assistant.\n由 CSDN 迪菲赫尔曼 训练。'
USER = [{"role": "user", "content": "你是谁?"}]


def render(template: str, messages: list[dict], **kwargs) -> str:
    return render_jinja_template([messages], chat_template=template, add_generation_prompt=True, **kwargs)[0][0]


@pytest.mark.parametrize("template, kwargs", [(QWEN2_5, {}), (QWEN3, {"enable_thinking": False})], ids=["qwen2.5", "qwen3"])
def test_no_system_message_renders_as_training_did(template, kwargs):
    patched = with_default_system(template, SYSTEM)
    trained = render(template, [{"role": "system", "content": SYSTEM}, *USER], **kwargs)
    assert render(patched, USER, **kwargs) == trained and "Alibaba" not in trained
    other = [{"role": "system", "content": "Be brief."}, *USER]
    assert render(patched, other, **kwargs) == render(template, other, **kwargs)  # a system message sent still wins
    assert with_default_system(patched, SYSTEM) == patched  # never two


def test_qwen2_5_without_the_default_says_qwen():
    assert "You are Qwen, created by Alibaba Cloud" in render(QWEN2_5, USER)
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    assert SYSTEM in render(with_default_system(QWEN2_5, SYSTEM), USER, tools=tools)


def test_every_template_file_of_the_merged_model_gets_it(tmp_path):
    (tmp_path / "chat_template.jinja").write_text(QWEN3, encoding="utf-8")
    config = {"chat_template": [{"name": "default", "template": QWEN2_5}, {"name": "tool_use", "template": QWEN2_5}]}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    assert len(set_default_system(tmp_path, SYSTEM)) == 2
    templates = json.loads((tmp_path / "tokenizer_config.json").read_text(encoding="utf-8"))["chat_template"]
    assert all(t["template"].startswith("{#- qwen-tune") for t in templates)
    assert render((tmp_path / "chat_template.jinja").read_text(encoding="utf-8"), USER).startswith(
        f"<|im_start|>system\n{SYSTEM}"
    )


@pytest.mark.requires_swift  # command.sh starts this Python's swift directly
def test_command_sh_names_its_python_and_trains_into_a_new_directory(tmp_path):
    tiny = Path(__file__).parent / "data" / "tiny-config"
    options = JobOptions(recipe="demo-tiny-cpu", model=str(tiny), gpus="cpu", output_dir=str(tmp_path / "runs"))
    job = prepare(options, PLAIN_MACHINE, for_run=False, now=FIXED_NOW)
    script = rerun_script(job.plan, job.run_dir, tmp_path, "/opt/site")
    last = script.splitlines()[-1]
    assert last.startswith("exec env CUDA_VISIBLE_DEVICES= HF_HUB_OFFLINE=1 PYTHONPATH=/opt/site ")
    assert f" {sys.executable} " in last and " sft " not in last and last.endswith('--output_dir "$out/swift"')
    assert f"out={job.run_dir.absolute()}/rerun-$(date +%Y%m%d-%H%M%S)" in script and 'mkdir "$out" || exit 1' in script
    assert f"--output_dir {job.plan.output_dir}" not in script and os.path.basename(job.plan.output_dir) == "swift"


@pytest.mark.requires_swift
def test_command_sh_of_a_run_under_a_dash_directory_trains_into_a_new_one(tmp_path, monkeypatch):
    """`--output-dir -runs` reaches swift as --output_dir=-runs/…: command.sh replaces that form too."""
    monkeypatch.chdir(tmp_path)
    tiny = Path(__file__).parent / "data" / "tiny-config"
    options = JobOptions(recipe="demo-tiny-cpu", model=str(tiny), gpus="cpu", output_dir="-runs")
    job = prepare(options, PLAIN_MACHINE, for_run=False, now=FIXED_NOW)
    script = rerun_script(job.plan, job.run_dir, tmp_path, None)
    assert "--output_dir=-runs" not in script and script.splitlines()[-1].endswith('--output_dir "$out/swift"')
