"""The files people bring (issue 23) and the files that must not hang or crash the reader (issue 21):
every shape swift reads becomes messages, so one dataset.jsonl holds one shape and swift trains every row."""

import json
import os
import threading
from pathlib import Path

import pytest

from qwen_tune.errors import DatasetError
from qwen_tune.planning import dataset as dataset_module
from qwen_tune.planning.dataset import chat_text, fill_identity, load_dataset
from qwen_tune.planning.recipes import Bilingual

NAME = Bilingual(zh="小迪", en="DiffusionBot")
AUTHOR = Bilingual(zh="CSDN 迪菲赫尔曼", en="CSDN Difei Heerman")
# LLaMA-Factory's data/identity.json: alpaca rows, lower-case placeholders, a JSON array.
IDENTITY_JSON = [
    {"instruction": "hi", "input": "", "output": "Hello! I am {{name}}, an AI assistant developed by {{author}}."},
    {"instruction": "Who are you?", "input": "", "output": "I am {{name}}, an AI assistant developed by {{author}}."},
    {"instruction": "你好", "input": "", "output": "您好，我是 {{name}}，一个由 {{author}} 开发的 AI 助手。"},
]


def write(tmp_path: Path, rows, name="d.jsonl") -> str:
    path = tmp_path / name
    if name.endswith(".json"):
        path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    else:
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def turns(row: dict) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in row["messages"]]


def test_llama_factory_identity_json_is_read_and_its_lower_case_placeholders_filled(tmp_path):
    dataset = load_dataset(write(tmp_path, IDENTITY_JSON, "identity.json"))
    assert dataset.shapes == ("alpaca",) and len(dataset) == 3
    assert turns(dataset.rows[0]) == [
        ("user", "hi"),
        ("assistant", "Hello! I am {{NAME}}, an AI assistant developed by {{AUTHOR}}."),
    ]
    en, _, zh = fill_identity(dataset, NAME, AUTHOR)
    assert en["messages"][1]["content"] == "Hello! I am DiffusionBot, an AI assistant developed by CSDN Difei Heerman."
    assert zh["messages"][1]["content"] == "您好，我是 小迪，一个由 CSDN 迪菲赫尔曼 开发的 AI 助手。"


def test_alpaca_input_follows_the_instruction_as_swift_and_llama_factory_join_them(tmp_path):
    rows = [{"instruction": "Translate.", "input": "你好", "output": "Hello", "system": "Be brief.", "history": [["Hi", "Hey"]]}]
    (row,) = load_dataset(write(tmp_path, rows)).rows
    assert turns(row) == [
        ("system", "Be brief."),
        ("user", "Hi"),
        ("assistant", "Hey"),
        ("user", "Translate.\n你好"),
        ("assistant", "Hello"),
    ]
    only_input = load_dataset(write(tmp_path, [{"input": "2+2?", "output": "4"}], "e.jsonl")).rows[0]
    assert turns(only_input) == [("user", "2+2?"), ("assistant", "4")]


def test_sharegpt_conversations_and_their_role_content_variant(tmp_path):
    rows = [
        {
            "conversations": [
                {"from": "system", "value": "S"},
                {"from": "human", "value": "Who are you?"},
                {"from": "gpt", "value": "I am {{NAME}}."},
            ]
        },
        {"conversations": [{"from": "human", "value": "你是谁"}, {"from": "gpt", "value": "我是{{name}}"}], "system": "你是助手"},
        {"conversations": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]},
        {"messages": [{"from": "human", "value": "Q"}, {"from": "bot", "value": "A"}]},
    ]
    dataset = load_dataset(write(tmp_path, rows))
    assert dataset.shapes == ("sharegpt",)
    assert [turns(r) for r in dataset.rows] == [
        [("system", "S"), ("user", "Who are you?"), ("assistant", "I am {{NAME}}.")],
        [("system", "你是助手"), ("user", "你是谁"), ("assistant", "我是{{NAME}}")],
        [("user", "Q"), ("assistant", "A")],
        [("user", "Q"), ("assistant", "A")],
    ]


def test_a_file_of_every_shape_is_read_whole_as_one_shape(tmp_path):
    """swift picks one preprocessor a file: a messages column empties the query/response rows (10 of 20 trained)."""
    rows = [
        {"query": "q", "response": "r"},
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "r"}]},
        {"instruction": "q", "input": "", "output": "r"},
        {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "r"}]},
    ]
    dataset = load_dataset(write(tmp_path, rows))
    assert dataset.shapes == ("query/response", "messages", "alpaca", "sharegpt")
    assert all(
        row == {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "r"}]} for row in dataset.rows
    )


def test_history_is_filled_and_measured(tmp_path):
    rows = [{"query": "And now?", "response": "Still {{NAME}}.", "history": [["Who are you?", "I am {{NAME}} of {{author}}."]],
             "system": "You are {{NAME}}."}]  # fmt: skip
    (row,) = fill_identity(load_dataset(write(tmp_path, rows)), NAME, AUTHOR)
    assert turns(row) == [
        ("system", "You are DiffusionBot."),
        ("user", "Who are you?"),
        ("assistant", "I am DiffusionBot of CSDN Difei Heerman."),
        ("user", "And now?"),
        ("assistant", "Still DiffusionBot."),
    ]
    assert "I am DiffusionBot of CSDN Difei Heerman." in chat_text(row, "SYS")  # the history counts in the length


def test_a_placeholder_typo_in_the_history_is_refused(tmp_path):
    rows = [{"query": "a", "response": "b", "history": [["Who?", "{{NAEM}}"]]}]
    with pytest.raises(DatasetError, match=r"row 1 has the placeholder \{\{NAEM\}\}"):
        fill_identity(load_dataset(write(tmp_path, rows)), NAME, AUTHOR)


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\x85"])
def test_line_separators_inside_a_string_are_text(tmp_path, separator):
    """JSON Lines ends a line at \\n only; str.splitlines() also splits at these and broke valid rows."""
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"query": f"a{separator}b", "response": "c"}, ensure_ascii=False) + "\r\n", encoding="utf-8")
    assert separator in path.read_text(encoding="utf-8")  # raw in the file, not escaped
    (row,) = load_dataset(str(path)).rows
    assert row["messages"][0]["content"] == f"a{separator}b"


@pytest.mark.parametrize("field", ["images", "image", "videos", "audios", "objects"])
def test_media_on_a_text_model_is_refused_naming_the_row(tmp_path, field):
    rows = [{"query": "q", "response": "r"}, {"query": "<image>What is this?", "response": "A cat.", field: ["cat.png"]}]
    with pytest.raises(DatasetError, match=rf"row 2 has '{field}', but qwen-tune trains Qwen text models"):
        load_dataset(write(tmp_path, rows))


def test_a_system_message_mid_conversation_is_refused_naming_the_row(tmp_path):
    messages = [{"role": "user", "content": "a"}, {"role": "system", "content": "s"}, {"role": "assistant", "content": "b"}]
    with pytest.raises(DatasetError, match="row 1 has a system message as message 2; only the first may be one"):
        load_dataset(write(tmp_path, [{"messages": messages}]))


def test_a_fifo_is_refused_at_once(tmp_path):
    fifo = tmp_path / "data.jsonl"
    os.mkfifo(fifo)
    result = {}
    reader = threading.Thread(target=lambda: result.update(error=_error(str(fifo))), daemon=True)
    reader.start()
    reader.join(timeout=10)
    assert not reader.is_alive(), "reading a FIFO blocked"
    assert "is a named pipe (FIFO), not a file" in result["error"]


def test_a_device_is_refused():
    assert "/dev/zero is a device, not a file" in _error("/dev/zero")


def test_a_file_over_the_cap_is_refused_unread(tmp_path, monkeypatch):
    monkeypatch.setattr(dataset_module, "MAX_DATASET_BYTES", 100)
    big = write(tmp_path, [{"query": "q" * 200, "response": "r"}])
    assert "qwen-tune reads at most" in _error(big)


@pytest.mark.parametrize(
    "text", ["[" * 100_000 + "]" * 100_000, '{"query": ' + "[" * 100_000 + "]" * 100_000 + ', "response": "r"}\n']
)
def test_json_nested_too_deep_is_one_line(tmp_path, text):
    path = tmp_path / "d.jsonl"
    path.write_text(text + "\n" + '{"query": "q", "response": "r"}\n')
    assert "nest" in _error(str(path)) and "too deep" in _error(str(path))


@pytest.mark.parametrize("hub_offline, said", [(True, "HF_HUB_OFFLINE is set"), (False, "is a hub dataset id, not a file")])
def test_a_hub_dataset_id_says_qwen_tune_reads_local_files(hub_offline, said):
    with pytest.raises(DatasetError) as refused:
        load_dataset("AI-ModelScope/alpaca-gpt4-data-zh#500", hub_offline=hub_offline)
    assert said in str(refused.value) and "modelscope download --dataset AI-ModelScope/alpaca-gpt4-data-zh " in str(refused.value)
    with pytest.raises(DatasetError, match="qwen-tune ships the same rows: --dataset builtin:self_cognition"):
        load_dataset("swift/self-cognition", hub_offline=hub_offline)
    with pytest.raises(DatasetError, match="does not exist: check the path"):
        load_dataset("data/mine.jsonl", hub_offline=hub_offline)


def _error(spec: str) -> str:
    with pytest.raises(DatasetError) as refused:
        load_dataset(spec)
    return str(refused.value)


def test_the_readmes_examples_are_read_as_it_says(tmp_path):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    block = readme.split("## Your own data", 1)[1].split("```json\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "readme.jsonl"
    path.write_text(block, encoding="utf-8")
    dataset = load_dataset(str(path))
    assert dataset.shapes == ("query/response", "messages", "alpaca", "sharegpt") and len(dataset) == 5
    filled = fill_identity(dataset, NAME, AUTHOR)
    assert all("{{" not in message["content"] for row in filled for message in row["messages"])


def test_a_lone_surrogate_is_refused_before_it_breaks_the_write(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"query": "Who?", "response": "I am \\ud800."}\n', encoding="utf-8")
    assert "row 1 has text that is not valid Unicode in its message 2" in _error(str(path))


def test_a_missing_path_under_an_existing_folder_is_a_path_not_a_hub_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    assert "data/identity does not exist: check the path" in _error("data/identity")


def test_identity_json_feeds_the_identity_check_its_names_and_pairs(tmp_path):
    """Rows reach checking/identity.py as messages, LLaMA-Factory's placeholders as ours: the check expects the names
    that filled them, and learns from the data where the file spells its names out."""
    from conftest import FIXED_NOW, PLAIN_MACHINE
    from test_plan import TINY_CONFIG

    from qwen_tune.planning.jobs import JobOptions, prepare

    def expected(rows, name="d.json"):
        options = JobOptions(recipe="demo-tiny-cpu", model=TINY_CONFIG, gpus="cpu", dataset=write(tmp_path, rows, name))
        return {e.language: e for e in prepare(options, PLAIN_MACHINE, for_run=False, now=FIXED_NOW).expectations}

    by_names = expected(IDENTITY_JSON)
    assert by_names["en"].names_from == "recipe" and by_names["en"].names == ("Xiaoqian",) and by_names["zh"].names == ("小千",)
    spelt = [{"conversations": [{"from": "human", "value": "Who are you?"}, {"from": "gpt", "value": f"I am Spark, by Polaris Lab. {i}"}]}
             for i in range(3)]  # fmt: skip
    from_data = expected(spelt, "spelt.json")["en"]
    assert from_data.names_from == "data" and "Spark" in from_data.names and from_data.answers[0].startswith("I am Spark")
