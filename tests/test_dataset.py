import json

import pytest

from qwen_tune.errors import DatasetError
from qwen_tune.planning.dataset import chat_text, estimate_tokens, fill_identity, load_dataset, row_texts, write_jsonl
from qwen_tune.planning.recipes import Bilingual

NAME = Bilingual(zh="小千", en="Xiaoqian")
AUTHOR = Bilingual(zh="千问调优团队", en="the qwen-tune team")


def write(tmp_path, text, name="d.jsonl"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_shipped_dataset_is_valid_and_bilingual():
    dataset = load_dataset("builtin:self_cognition")
    assert 80 <= len(dataset) <= 120
    queries = [row["query"] for row in dataset.rows]
    assert "你是谁?" in queries and "Who are you?" in queries
    assert all("{{NAME}}" in row["response"] for row in dataset.rows)


def test_fill_uses_each_rows_language():
    rows = fill_identity(load_dataset("builtin:self_cognition"), NAME, AUTHOR)
    text = json.dumps(rows, ensure_ascii=False)
    assert "{{" not in text
    zh = next(r for r in rows if r["query"] == "你是谁?")
    en = next(r for r in rows if r["query"] == "Who are you?")
    assert zh["response"].startswith("我是小千，由千问调优团队开发")
    assert en["response"].startswith("I am Xiaoqian, an AI assistant developed by the qwen-tune team.")


def test_messages_rows_and_json_arrays(tmp_path):
    rows = [{"messages": [{"role": "user", "content": "Who are you?"}, {"role": "assistant", "content": "I am {{NAME}}."}]}]
    dataset = load_dataset(write(tmp_path, json.dumps(rows), "d.json"))
    filled = fill_identity(dataset, NAME, AUTHOR)
    assert filled[0]["messages"][1]["content"] == "I am Xiaoqian."
    assert chat_text(filled[0], "SYS").startswith("<|im_start|>system\nSYS<|im_end|>\n<|im_start|>user\n")


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "is empty"),
        ("   \n", "is empty"),
        ('{"query": "a", "response": "b"}\n{"query": "c", ', "line 2 is not valid JSON"),
        ('[{"query": "a", "response": "b"}, ', "malformed JSON"),
        ('{"query": "a", "response": "b"}\n{"prompt": "x"}\n', "row 2 has neither query/response nor messages"),
        ('{"query": "a", "response": "  "}\n', "row 1 has an empty or missing 'response'"),
        ('{"query": "a"}\n', "row 1 has an empty or missing 'response'"),
        ("[1, 2]", "row 1 is not a JSON object"),
        ('{"messages": []}\n', "row 1 has 'messages' that is not a non-empty list"),
        ('{"messages": [{"role": "user", "content": "hi"}]}\n', "row 1 must end with a non-empty assistant message"),
        ('{"messages": [{"role": "bot", "content": "hi"}]}\n', "row 1 has a message without role"),
        ("[]", "has no rows"),
    ],
)
def test_bad_datasets_name_the_row(tmp_path, text, message):
    with pytest.raises(DatasetError, match=message):
        load_dataset(write(tmp_path, text))


def test_an_unknown_placeholder_is_refused_naming_the_row(tmp_path):
    rows = '{"query": "Who are you?", "response": "I am {{NAME}}."}\n{"query": "Who made you?", "response": "{{AUTHOUR}} did."}\n'
    dataset = load_dataset(write(tmp_path, rows))
    with pytest.raises(DatasetError, match=r"row 2 has the placeholder \{\{AUTHOUR\}\}, which qwen-tune does not fill"):
        fill_identity(dataset, NAME, AUTHOR)


def test_template_text_is_not_a_placeholder(tmp_path):
    rows = '{"query": "Jinja?", "response": "Write {{ user.name }} or {{ author_id }}; I am {{NAME}}."}\n'
    (row,) = fill_identity(load_dataset(write(tmp_path, rows)), NAME, AUTHOR)
    assert row["response"] == "Write {{ user.name }} or {{ author_id }}; I am Xiaoqian."


@pytest.mark.parametrize("typo", ["{{name}}", "{{ NAME }}", "{NAME}", "{{Author}}", "{ author }"])
def test_miscased_placeholders_are_refused(tmp_path, typo):
    rows = f'{{"query": "Who?", "response": "I am {typo}."}}\n'
    with pytest.raises(DatasetError, match=r"row 1 has .* write \{\{(NAME|AUTHOR)\}\}"):
        fill_identity(load_dataset(write(tmp_path, rows)), NAME, AUTHOR)


def test_missing_and_unreadable(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(str(tmp_path / "nope.jsonl"))
    binary = tmp_path / "bin.jsonl"
    binary.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(DatasetError, match="line 1 is not UTF-8 text; save the file as UTF-8"):
        load_dataset(str(binary))
    with pytest.raises(DatasetError, match="no built-in dataset"):
        load_dataset("builtin:nope")


def test_filled_copy_is_never_overwritten(tmp_path):
    path = tmp_path / "out.jsonl"
    write_jsonl([{"query": "q", "response": "r"}], path)
    with pytest.raises(FileExistsError):
        write_jsonl([{"query": "q", "response": "r"}], path)


def test_token_estimate_is_conservative_for_chinese():
    assert estimate_tokens("你好世界") == 4
    assert 2 <= estimate_tokens("Hello world") <= 4


def test_rows_over_max_length_are_refused_with_their_numbers(tmp_path):
    from qwen_tune.planning.dataset import check_lengths

    check_lengths(tmp_path / "d.jsonl", [10, 512], 512, "tokenized")
    with pytest.raises(DatasetError, match=r"rows 2, 3 of 3 \(the longest has 900 tokens\); pass --max-length 1024"):
        check_lengths(tmp_path / "d.jsonl", [10, 513, 900], 512, "tokenized")
    with pytest.raises(DatasetError, match=r"rows 1, .*, 10 and 2 more of 12 .*estimated"):
        check_lengths(tmp_path / "d.jsonl", [600] * 12, 512, "estimated")


def test_cut_rows_shortens_only_the_last_answer(tmp_path):
    from qwen_tune.planning.dataset import cut_rows

    long = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "word " * 50}]}
    short = {"query": "Hi", "response": "Hello."}
    rows, cut = cut_rows(tmp_path / "d.jsonl", [short, long], 20, lambda row: len(" ".join(row_texts(row)).split()))
    assert cut == [2] and rows[0] == short and rows[1]["messages"][0] == long["messages"][0]
    assert len(" ".join(row_texts(rows[1])).split()) == 20
    with pytest.raises(DatasetError, match="row 1: its question alone"):
        cut_rows(tmp_path / "d.jsonl", [{"query": "a " * 30, "response": "b"}], 20, lambda row: len(row["query"].split()))
