"""The training data: read, validate row by row, fill the identity placeholders, measure lengths.

swift fills {{NAME}}/{{AUTHOR}} only in its own hub dataset, so a local file is filled here,
per row in the row's language, before it is handed to swift.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from qwen_tune.config import PACKAGE_DIR
from qwen_tune.errors import DatasetError
from qwen_tune.recipes import BUILTIN_PREFIX, Bilingual

PLACEHOLDERS = ("{{NAME}}", "{{AUTHOR}}")
ROLES = ("system", "user", "assistant")
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
# What a placeholder looks like: {{NAME}}, {{AUTHOR}}, or a misspelt {{AUTHOUR}}. Lower case or
# spaced braces ({{ user.name }}) are left alone: that is template text a dataset may teach.
_PLACEHOLDER = re.compile(r"\{\{[A-Z][A-Z0-9_]*\}\}")


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
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(f"dataset {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read dataset {path}: {exc}") from None
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
        return whole if isinstance(whole, list) else [whole]
    rows = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise DatasetError(f"dataset {path}: line {line_number} is not valid JSON: {exc.msg}") from None
    return rows


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
            if not isinstance(row.get(key), str) or not row[key].strip():
                raise fail(f"has an empty or missing {key!r}")
        return
    raise fail("has neither query/response nor messages; see README 'Your own data'")


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
        left = [m.group() for text in row_texts(filled[-1]) for m in _PLACEHOLDER.finditer(text)]
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


def token_lengths(rows: list[dict], system: str, tokenizer_file: Path | None) -> tuple[list[int], str]:
    """Tokens per row after the chat template: exact with the model's tokenizer, else estimated."""
    texts = [chat_text(row, system) for row in rows]
    if tokenizer_file is not None:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(tokenizer_file))
        return [len(e.ids) for e in tokenizer.encode_batch(texts, add_special_tokens=False)], "tokenized"
    return [estimate_tokens(t) for t in texts], "estimated"


def estimate_tokens(text: str) -> int:
    """Qwen's BPE, conservatively: a token per CJK character, about 3.5 other characters a token."""
    cjk = len(_CJK.findall(text))
    specials = text.count("<|im_start|>") + text.count("<|im_end|>")
    rest = len(text) - cjk - specials * len("<|im_start|>")
    return cjk + specials + math.ceil(max(rest, 0) / 3.5)
