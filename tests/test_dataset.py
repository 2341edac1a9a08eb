import json

import pytest

from qwen_tune.errors import DatasetError
from qwen_tune.planning.dataset import (
    chat_text,
    check_lengths,
    estimate_tokens,
    fill_identity,
    load_dataset,
    pair_row,
    row_texts,
    write_jsonl,
)
from qwen_tune.planning.recipes import Bilingual

NAME = Bilingual(zh="小千", en="Xiaoqian")
AUTHOR = Bilingual(zh="千问调优团队", en="the qwen-tune team")


def write(tmp_path, text, name="d.jsonl"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_shipped_dataset_is_valid_and_bilingual():
    dataset = load_dataset("builtin:self_cognition")
    assert 80 <= len(dataset) <= 120 and dataset.shapes == ("query/response",)
    queries = [row["messages"][0]["content"] for row in dataset.rows]
    assert "你是谁?" in queries and "Who are you?" in queries
    assert all("{{NAME}}" in row["messages"][-1]["content"] for row in dataset.rows)


def test_fill_uses_each_rows_language():
    rows = fill_identity(load_dataset("builtin:self_cognition"), NAME, AUTHOR)
    text = json.dumps(rows, ensure_ascii=False)
    assert "{{" not in text
    zh = next(r["messages"] for r in rows if r["messages"][0]["content"] == "你是谁?")
    en = next(r["messages"] for r in rows if r["messages"][0]["content"] == "Who are you?")
    assert zh[1]["content"].startswith("我是小千，由千问调优团队开发")
    assert en[1]["content"].startswith("I am Xiaoqian, an AI assistant developed by the qwen-tune team.")


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
        ('{"query": "a", "response": "b"}\n{"prompt": "x"}\n', "row 2 has none of the shapes qwen-tune reads"),
        ('{"query": "a", "response": "  "}\n', "row 1 has an empty or missing 'response'"),
        ('{"query": "a"}\n', "row 1 has an empty or missing 'response'"),
        ("[1, 2]", "row 1 is not a JSON object"),
        ('{"messages": []}\n', "row 1 has 'messages' that is not a non-empty list"),
        ('{"messages": [{"role": "user", "content": "hi"}]}\n', "row 1 must end with a non-empty assistant message"),
        ('{"messages": [{"role": "tool", "content": "hi"}]}\n', "row 1 has message 1 of 'messages' with the role 'tool'"),
        ('{"messages": [{"content": "hi"}]}\n', r"row 1 has message 1 of 'messages' with no role \(role or from\)"),
        ('{"messages": [{"role": "user", "content": 3}]}\n', "row 1 has message 1 of 'messages' with content that is a number"),
        ('{"messages": [{"role": "user", "content": null}]}\n', "with no content"),
        ('{"messages": ["hi"]}\n', "row 1 has message 1 of 'messages' that is text"),
        ('{"query": "a", "response": "b", "messages": []}\n', "row 1 mixes shapes: it has 'query' and 'response' and 'messages'"),
        (
            '{"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}, {"role": "assistant", "content": "c"}]}\n',
            "row 1 has two user turns in a row \\(turn 2\\)",
        ),
        ('{"messages": [{"role": "assistant", "content": "a"}]}\n', "row 1 starts with an assistant turn"),
        ('{"messages": [{"role": "system", "content": "s"}]}\n', "row 1 has only a system message"),
        (
            '{"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], '
            '"system": "t"}\n',
            "row 1 has both 'system' and a system message",
        ),
        ('{"query": "a", "response": "b", "history": [["q"]]}\n', "row 1 has a 'history' that is not a list of"),
        ('{"query": "a", "response": "b", "history": "[[1, 2]]"}\n', "row 1 has a 'history' that is not a list of"),
        ('{"query": "a", "response": "b", "system": 1}\n', "row 1 has 'system' that is a number, not text"),
        ('{"instruction": "", "input": "", "output": "b"}\n', "row 1 has an empty or missing 'instruction'"),
        ('{"instruction": "a", "output": ["b", "c"]}\n', "row 1 has 'output' that is a list, not text"),
        (
            '{"conversations": [{"from": "human", "value": "a"}, {"from": "function_call", "value": "b"}]}\n',
            "message 2 of 'conversations' with the role 'function_call'",
        ),
        ('{"conversations": []}\n', "row 1 has 'conversations' that is not a non-empty list"),
        ('{"query": "a", "response": "b", "tools": "[]", "history": []}\n', "row 1 has 'tools' \\(function calling\\)"),
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
    assert row["messages"][1]["content"] == "Write {{ user.name }} or {{ author_id }}; I am Xiaoqian."


@pytest.mark.parametrize("typo", ["{{Name}}", "{{ NAME }}", "{NAME}", "{{Author}}", "{ author }", "{{ name }}"])
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
    write_jsonl([pair_row("q", "r")], path)
    with pytest.raises(FileExistsError):
        write_jsonl([pair_row("q", "r")], path)


def test_token_estimate_is_conservative_for_chinese():
    assert estimate_tokens("你好世界") == 4
    assert 2 <= estimate_tokens("Hello world") <= 4


def test_rows_over_max_length_are_refused_with_their_numbers(tmp_path):
    check_lengths("dataset d.jsonl", [10, 512], 512, "tokenized")
    with pytest.raises(
        DatasetError, match=r"^dataset d.jsonl: .*rows 2, 3 of 3 \(the longest has 900 tokens\); pass --max-length 1024"
    ):
        check_lengths("dataset d.jsonl", [10, 513, 900], 512, "tokenized")
    with pytest.raises(DatasetError, match=r"rows 1, .*, 10 and 2 more of 12 .*estimated"):
        check_lengths("dataset d.jsonl", [600] * 12, 512, "estimated")


def test_no_max_length_is_advised_that_the_cli_refuses():
    """1,200,000 tokens: --max-length takes at most 131072, so the line offers the other ways only."""
    with pytest.raises(DatasetError) as refused:
        check_lengths("dataset d.jsonl", [10, 1_200_000], 512, "tokenized")
    assert "--max-length 1200128" not in str(refused.value) and "pass --cut-long-rows" in str(refused.value)


def test_cut_rows_shortens_only_the_last_answer(tmp_path):
    from qwen_tune.planning.dataset import cut_rows

    long = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "word " * 50}]}
    short = pair_row("Hi", "Hello.")
    words = lambda row: len(" ".join(row_texts(row)).split())  # noqa: E731
    rows, cut = cut_rows("dataset d.jsonl", [short, long], 20, words)
    assert cut == [2] and rows[0] == short and rows[1]["messages"][0] == long["messages"][0]
    assert len(" ".join(row_texts(rows[1])).split()) == 20
    with pytest.raises(DatasetError, match="row 1: its question alone"):
        cut_rows("dataset d.jsonl", [pair_row("a " * 30, "b")], 20, words)


def test_a_row_no_limit_fits_is_refused_without_tokenizing_all_of_it(tmp_path):
    """A 20 MB row counts as more than any --max-length from its size alone (a token holds at most the vocabulary's
    longest entry), and a 1 MiB one from its first MiB; the identity check reads only a row's start."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    from qwen_tune.checking.identity import expectations
    from qwen_tune.planning.dataset import PREFIX_CHARS, length_measure
    from qwen_tune.planning.recipes import MAX_LENGTH_LIMIT

    tokenizer = Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1, "x" * 64: 2}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.save(str(tmp_path / "tokenizer.json"))  # its longest entry: 64 bytes
    measure, how = length_measure("Be brief.", tmp_path / "tokenizer.json")
    huge = {"messages": [{"role": "user", "content": "a" * (20 << 20)}, {"role": "assistant", "content": "b"}]}
    prefix = {"messages": [{"role": "user", "content": "a " * PREFIX_CHARS}, {"role": "assistant", "content": "b"}]}
    assert how == "tokenized" and measure(huge) == MAX_LENGTH_LIMIT + 1
    assert MAX_LENGTH_LIMIT < measure(prefix) <= PREFIX_CHARS // 2 + 1  # its first MiB counted: 2 chars a token
    assert expectations([huge] * 3, Bilingual("小千", "Xiaoqian"), Bilingual("团队", "team"))


@pytest.mark.parametrize(
    "text, where",
    [('{"query": "a", "response": "b", "response": "c"}\n{"query": "d", "response": "e"}\n', "line 1"),
     ('[{"query": "a", "query": "b", "response": "c"}]', "a row")],
)  # fmt: skip
def test_a_key_given_twice_in_a_row_is_refused(tmp_path, text, where):
    path = tmp_path / "data.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DatasetError, match=f"{where} gives the key '(response|query)' twice"):
        load_dataset(str(path))
