"""The training data: read, validate row by row, fill the identity placeholders, measure lengths.

swift fills {{NAME}}/{{AUTHOR}} only in its own hub dataset, so a local file is filled here,
per row in the row's language, before it is handed to swift.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from qwen_tune.errors import DatasetError
from qwen_tune.planning.config import PACKAGE_DIR
from qwen_tune.planning.recipes import BUILTIN_PREFIX, MAX_LENGTH_LIMIT, Bilingual

PLACEHOLDERS = ("{{NAME}}", "{{AUTHOR}}")
ROLES = ("system", "user", "assistant")
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
# What a placeholder looks like: {{NAME}}, {{AUTHOR}}, or a misspelt {{AUTHOUR}}. Other lower-case or
# spaced braces ({{ user.name }}) are left alone: that is template text a dataset may teach.
_PLACEHOLDER = re.compile(r"\{\{[A-Z][A-Z0-9_]*\}\}")
# ...but name and author in any case, spaced, or in single braces ({{name}}, {{ NAME }}, {AUTHOR}) are
# the two placeholders mistyped: trained as they are, the model would learn the braces.
_MISCASED = re.compile(r"\{\{\s*(name|author)\s*\}\}|(?<!\{)\{\s*(name|author)\s*\}(?!\})", re.IGNORECASE)


@dataclass(frozen=True)
class Dataset:
    path: Path
    rows: tuple[dict, ...]

    def __len__(self) -> int:
        return len(self.rows)


def dataset_path(spec: str) -> Path:
    """builtin:NAME → the file shipped in qwen_tune/data; anything else is a path."""
    if spec.startswith(BUILTIN_PREFIX):
        name = spec[len(BUILTIN_PREFIX) :]
        path = PACKAGE_DIR / "data" / f"{name}.jsonl"
        if not path.is_file():
            raise DatasetError(f"no built-in dataset {name!r}; shipped: {', '.join(builtin_datasets())}")
        return path
    return Path(spec).expanduser()


def builtin_datasets() -> list[str]:
    return sorted(p.stem for p in (PACKAGE_DIR / "data").glob("*.jsonl"))


def load_dataset(spec: str) -> Dataset:
    """Read a JSON array or JSON Lines file of query/response or messages rows."""
    path = dataset_path(spec)
    if path.is_dir():
        raise DatasetError(f"dataset {path} is a directory: --dataset takes a .json or .jsonl file")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"dataset {path} does not exist: check the path (README 'Your own data' shows the format)") from None
    except OSError as exc:
        raise DatasetError(f"cannot read dataset {path}: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8-sig")  # a byte-order mark, as some editors write, is fine
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DatasetError(f"dataset {path}: line {line} is not UTF-8 text; save the file as UTF-8") from None
    if not text.strip():
        raise DatasetError(f"dataset {path} is empty: it needs query/response or messages rows")
    rows = _parse_rows(path, text)
    if not rows:
        raise DatasetError(f"dataset {path} has no rows: it needs query/response or messages rows")
    for number, row in enumerate(rows, start=1):
        _check_row(path, number, row)
    return Dataset(path=path, rows=tuple(rows))


def _parse_rows(path: Path, text: str) -> list:
    """A JSON array (or one object) as a whole, else JSON Lines."""
    try:
        whole = json.loads(text)
    except json.JSONDecodeError as exc:
        if text.lstrip().startswith("["):
            raise DatasetError(f"dataset {path}: malformed JSON at line {exc.lineno}: {exc.msg}") from None
    else:
        if isinstance(whole, list):
            return whole
        lists = [key for key, value in whole.items() if _holds_rows(value)] if isinstance(whole, dict) else []
        if lists and not {"query", "response", "messages"} & set(whole):
            raise DatasetError(
                f"dataset {path} is one JSON object with a list under {lists[0]!r}, not rows: "
                "give the list itself (a JSON array of rows), or JSON Lines with one row a line"
            )
        return [whole]
    rows = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise DatasetError(f"dataset {path}: line {line_number} is not valid JSON: {exc.msg}") from None
    return rows


def _holds_rows(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(item, dict) for item in value)


def _check_row(path: Path, number: int, row: object) -> None:
    def fail(problem: str) -> DatasetError:
        return DatasetError(f"dataset {path}: row {number} {problem}")

    if not isinstance(row, dict):
        raise fail("is not a JSON object")
    if "messages" in row:
        messages = row["messages"]
        if not isinstance(messages, list) or not messages:
            raise fail("has 'messages' that is not a non-empty list")
        for message in messages:
            if not isinstance(message, dict) or message.get("role") not in ROLES or not isinstance(message.get("content"), str):
                raise fail("has a message without role (system/user/assistant) and text content")
        if messages[-1]["role"] != "assistant" or not messages[-1]["content"].strip():
            raise fail("must end with a non-empty assistant message")
        return
    if "query" in row or "response" in row:
        for key in ("query", "response"):
            value = row.get(key)
            if value is not None and not isinstance(value, str):
                raise fail(f"has {key!r} that is {_json_kind(value)}, not text; put it in quotes")
            if not value or not value.strip():
                raise fail(f"has an empty or missing {key!r}")
        if row.get("system") is not None and not isinstance(row["system"], str):
            raise fail(f"has 'system' that is {_json_kind(row['system'])}, not text")
        return
    raise fail("has neither query/response nor messages; see README 'Your own data'")


def _json_kind(value: object) -> str:
    kinds = {bool: "true/false", int: "a number", float: "a number", list: "a list", dict: "an object"}
    return kinds.get(type(value), type(value).__name__)


def row_texts(row: dict) -> list[str]:
    """Every text of a row (system, query, response, or each message)."""
    if "messages" in row:
        return [m["content"] for m in row["messages"]]
    return [row[k] for k in ("system", "query", "response") if isinstance(row.get(k), str)]


def is_chinese(row: dict) -> bool:
    return any(_CJK.search(text) for text in row_texts(row))


def fill_identity(dataset: Dataset, name: Bilingual, author: Bilingual) -> list[dict]:
    """Replace {{NAME}}/{{AUTHOR}} in every text of every row, in the row's language.

    A placeholder left after that (a typo, or one qwen-tune does not know) would be learned
    word for word, so it is refused, naming the row.
    """

    def fill(text: str, zh: bool) -> str:
        pick = (lambda b: b.zh) if zh else (lambda b: b.en)
        return text.replace("{{NAME}}", pick(name)).replace("{{AUTHOR}}", pick(author))

    filled = []
    for row in dataset.rows:
        zh = is_chinese(row)
        if "messages" in row:
            messages = [{**m, "content": fill(m["content"], zh)} for m in row["messages"]]
            filled.append({**row, "messages": messages})
        else:
            filled.append({k: fill(v, zh) if isinstance(v, str) else v for k, v in row.items()})
        texts = row_texts(filled[-1])
        miscased = [m.group() for text in texts for m in _MISCASED.finditer(text)]
        if miscased:
            right = "{{" + (miscased[0].strip("{} ").upper()) + "}}"
            raise DatasetError(
                f"dataset {dataset.path}: row {len(filled)} has {miscased[0]}, which qwen-tune does not fill; "
                f"write {right} (upper case, two braces, no spaces)"
            )
        left = [m.group() for text in texts for m in _PLACEHOLDER.finditer(text)]
        if left:
            raise DatasetError(
                f"dataset {dataset.path}: row {len(filled)} has the placeholder {left[0]}, which qwen-tune does not fill "
                f"(only {' and '.join(PLACEHOLDERS)}); write out the text it stands for"
            )
    return filled


def shipped_general_prompts() -> list[str]:
    """General questions, zh and en, for the base model to answer before training (qwen_tune/data/general_prompts.txt)."""
    text = (PACKAGE_DIR / "data" / "general_prompts.txt").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip()]


def write_jsonl(rows: list[dict], path: Path) -> None:
    with path.open("x", encoding="utf-8") as f:
        for row in rows:
            f.write(_jsonl_line(row))


def jsonl_bytes(rows: list[dict]) -> int:
    """The size write_jsonl gives the rows on disk."""
    return sum(len(_jsonl_line(row).encode("utf-8")) for row in rows)


def _jsonl_line(row: dict) -> str:
    return json.dumps(row, ensure_ascii=False) + "\n"


def chat_text(row: dict, system: str) -> str:
    """The row as the Qwen chat template renders it (what swift tokenizes)."""
    if "messages" in row:
        messages = list(row["messages"])
    else:
        messages = [{"role": "user", "content": row["query"]}, {"role": "assistant", "content": row["response"]}]
        if row.get("system"):
            messages.insert(0, {"role": "system", "content": row["system"]})
    if messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": system})
    return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)


def length_measure(system: str, tokenizer_file: Path | None) -> tuple[Callable[[dict], int], str]:
    """A row's tokens after the chat template, and how they are counted (tokenized | estimated)."""
    if tokenizer_file is not None:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(tokenizer_file))
        return lambda row: len(tokenizer.encode(chat_text(row, system), add_special_tokens=False).ids), "tokenized"
    return lambda row: estimate_tokens(chat_text(row, system)), "estimated"


def cut_rows(path: Path, rows: list[dict], max_length: int, measure: Callable[[dict], int]) -> tuple[list[dict], list[int]]:
    """Shorten the answer of each row longer than max_length until it fits (--cut-long-rows).

    Only the answer is cut: a row whose question alone does not fit would teach nothing, so it is refused.
    Returns the rows and the numbers of those that were cut.
    """
    result, cut = [], []
    for number, row in enumerate(rows, start=1):
        if measure(row) <= max_length:
            result.append(row)
            continue
        answer = _answer(row)
        low, high = 0, len(answer)  # the longest prefix that fits: low fits (or is 0), high does not
        while low < high:
            middle = (low + high + 1) // 2
            if measure(_with_answer(row, answer[:middle])) <= max_length:
                low = middle
            else:
                high = middle - 1
        if low == 0:
            raise DatasetError(
                f"dataset {path}: row {number}: its question alone is longer than max_length {max_length}, so cutting its answer "
                "cannot make it fit; raise --max-length or shorten the question"
            )
        result.append(_with_answer(row, answer[:low]))
        cut.append(number)
    return result, cut


def _answer(row: dict) -> str:
    return row["messages"][-1]["content"] if "messages" in row else row["response"]


def _with_answer(row: dict, answer: str) -> dict:
    if "messages" in row:
        return {**row, "messages": [*row["messages"][:-1], {**row["messages"][-1], "content": answer}]}
    return {**row, "response": answer}


def fit_to_max_length(
    path: Path, rows: list[dict], max_length: int, measure: Callable[[dict], int], how: str, *, cut: bool
) -> tuple[list[dict], list[int], int]:
    """The rows (answers shortened when cut), their lengths, and how many were cut; rows too long are refused."""
    cut_numbers: list[int] = []
    if cut:
        rows, cut_numbers = cut_rows(path, rows, max_length, measure)
    lengths = [measure(row) for row in rows]
    check_lengths(path, lengths, max_length, how)
    return rows, lengths, len(cut_numbers)


def check_lengths(path: Path, lengths: list[int], max_length: int, how: str) -> None:
    """Rows over max_length are dropped by swift without a word (or, if all are, it crashes late):
    refused here, naming them, so the user raises the limit or shortens them."""
    over = [number for number, length in enumerate(lengths, start=1) if length > max_length]
    if not over:
        return
    rows = ", ".join(map(str, over[:10])) + (f" and {len(over) - 10} more" if len(over) > 10 else "")
    counted = "tokens" if how == "tokenized" else "tokens, estimated without the model's tokenizer"
    raise DatasetError(
        f"dataset {path}: swift would skip rows longer than max_length {max_length}: "
        f"row{'s' if len(over) > 1 else ''} {rows} of {len(lengths)} (the longest has {max(lengths)} {counted}); "
        f"{_raise_to(max(lengths))}--cut-long-rows to shorten their answers, or shorten them yourself"
    )


def _raise_to(tokens: int) -> str:
    """The --max-length that fits the longest row, where the CLI accepts one."""
    if _round_up(tokens) <= MAX_LENGTH_LIMIT:
        return f"pass --max-length {_round_up(tokens)}, or "
    return f"no --max-length fits it (at most {MAX_LENGTH_LIMIT}): pass "


def _round_up(tokens: int) -> int:
    """A limit people would type: the next multiple of 256."""
    return -(-tokens // 256) * 256


def estimate_tokens(text: str) -> int:
    """Qwen's BPE, conservatively: a token per CJK character, about 3.5 other characters a token."""
    cjk = len(_CJK.findall(text))
    specials = text.count("<|im_start|>") + text.count("<|im_end|>")
    rest = len(text) - cjk - specials * len("<|im_start|>")
    return cjk + specials + math.ceil(max(rest, 0) / 3.5)
