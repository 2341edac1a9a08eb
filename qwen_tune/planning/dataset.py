"""The training data: read, check row by row, rewrite as swift's messages, fill the identity placeholders, measure.

People bring rows in several shapes: query/response (ms-swift's self-cognition), messages, alpaca
(instruction/input/output, LLaMA-Factory's identity.json) and ShareGPT (conversations of from/value). swift
picks one preprocessor for a whole file from its columns: a file that mixes shapes loses every row of the other
shape without a word (a messages column makes the query/response rows empty). So every row is checked here and
rewritten as messages, the one shape all of them become, and dataset.jsonl holds nothing else.

swift fills {{NAME}}/{{AUTHOR}} only in its own hub dataset, so a local file is filled here,
per row in the row's language, before it is handed to swift.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from qwen_tune.errors import DatasetError, ModelError
from qwen_tune.planning.config import PACKAGE_DIR
from qwen_tune.planning.recipes import BUILTIN_PREFIX, MAX_LENGTH_LIMIT, Bilingual

PLACEHOLDERS = ("{{NAME}}", "{{AUTHOR}}")
ROLES = ("system", "user", "assistant")
# The roles people's files use, as swift's MessagesPreprocessor maps them (ShareGPT: human/gpt).
ROLE_NAMES = {
    "system": "system",
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "bot": "assistant",
}
# Fields swift reads beside the text (swift RowPreprocessor and its column aliases): images, audio, video and
# grounding objects go to multimodal models only; a Qwen text model's template fails on them and swift drops the row.
MEDIA_FIELDS = ("images", "image", "videos", "video", "audios", "audio", "objects")
Shape = Literal["query/response", "messages", "alpaca", "sharegpt"]
SHAPES_TEXT = "query/response, messages, alpaca (instruction/output) or ShareGPT (conversations)"
# A dataset is read whole into memory; past this it is refused (a device or an endless file would never end).
MAX_DATASET_BYTES = 256 * 1024 * 1024
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
# What a placeholder looks like: {{NAME}}, {{AUTHOR}}, or a misspelt {{AUTHOUR}}. Other lower-case or
# spaced braces ({{ user.name }}) are left alone: that is template text a dataset may teach.
_PLACEHOLDER = re.compile(r"\{\{[A-Z][A-Z0-9_]*\}\}")
# LLaMA-Factory's identity.json writes them in lower case: {{name}}, {{author}}; read as ours.
_LOWER_PLACEHOLDERS = {"{{name}}": "{{NAME}}", "{{author}}": "{{AUTHOR}}"}
# ...but name and author otherwise cased, spaced, or in single braces ({{Name}}, {{ NAME }}, {AUTHOR}) are
# the two placeholders mistyped: trained as they are, the model would learn the braces.
_MISCASED = re.compile(r"\{\{\s*(name|author)\s*\}\}|(?<!\{)\{\s*(name|author)\s*\}(?!\})", re.IGNORECASE)
# swift's --dataset also takes hub ids (AI-ModelScope/alpaca-gpt4-data-zh, with #N for a sample): owner/name.
_HUB_DATASET = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+(?:#\d+)?(?::[\w.-]+)?")


@dataclass(frozen=True)
class Dataset:
    """A file's rows, each as swift's messages ({"messages": [{"role", "content"}, ...]}), placeholders as {{NAME}}."""

    path: Path
    rows: tuple[dict, ...]
    shapes: tuple[Shape, ...] = ()  # the shapes the file's rows came in, in order of first appearance
    what: str = "dataset"  # how errors name the file: dataset, or --general-data

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


def load_dataset(spec: str, *, hub_offline: bool = False, what: str = "dataset") -> Dataset:
    """Read a JSON array or JSON Lines file of rows in any shape of SHAPES_TEXT; every row checked and made messages.

    `what` names the file in errors (dataset, or --general-data)."""
    path = dataset_path(spec)
    data = _read_file(spec, path, hub_offline, what)
    try:
        text = data.decode("utf-8-sig")  # a byte-order mark, as some editors write, is fine
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DatasetError(f"{what} {path}: line {line} is not UTF-8 text; save the file as UTF-8") from None
    if not text.strip():
        raise DatasetError(f"{what} {path} is empty: it needs rows, each one of {SHAPES_TEXT}")
    rows = _parse_rows(path, text, what)
    if not rows:
        raise DatasetError(f"{what} {path} has no rows: it needs rows, each one of {SHAPES_TEXT}")
    messages, shapes = [], []
    for number, row in enumerate(rows, start=1):
        shape, normal = as_messages(row, lambda problem, n=number: DatasetError(f"{what} {path}: row {n} {problem}"))
        messages.append(normal)
        if shape not in shapes:
            shapes.append(shape)
    return Dataset(path=path, rows=tuple(messages), shapes=tuple(shapes), what=what)


def _read_file(spec: str, path: Path, hub_offline: bool, what: str) -> bytes:
    """The file's bytes: a regular file of at most MAX_DATASET_BYTES (a FIFO would block, /dev/zero never ends)."""
    try:
        # O_NONBLOCK: opening a FIFO without a writer returns at once instead of waiting for one.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise DatasetError(_not_found(spec, path, hub_offline, what)) from None
    except OSError as exc:
        raise DatasetError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    try:
        mode, size = (info := os.fstat(fd)).st_mode, info.st_size
        if stat.S_ISDIR(mode):
            raise DatasetError(f"{what} {path} is a directory: give a .json or .jsonl file")
        if not stat.S_ISREG(mode):
            kind = (
                "a named pipe (FIFO)"
                if stat.S_ISFIFO(mode)
                else "a device"
                if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                else "a special file"
            )
            raise DatasetError(f"{what} {path} is {kind}, not a file: give a .json or .jsonl file (qwen-tune reads it whole)")
        if size > MAX_DATASET_BYTES:
            raise DatasetError(_too_big(path, size, what))
        chunks, read = [], 0
        while read <= MAX_DATASET_BYTES and (chunk := os.read(fd, 1 << 20)):  # capped: a file may grow while read
            chunks.append(chunk)
            read += len(chunk)
        data = b"".join(chunks)
    except OSError as exc:
        raise DatasetError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_DATASET_BYTES:  # a file that grew while read, or one that says it is empty (/proc)
        raise DatasetError(_too_big(path, len(data), what))
    return data


def _too_big(path: Path, size: int, what: str) -> str:
    return (
        f"{what} {path} is {size / 2**20:.0f} MiB or more; qwen-tune reads at most {MAX_DATASET_BYTES // 2**20} MiB "
        "(it checks and fills every row in memory): take the rows you mean to train into a smaller file"
    )


def _not_found(spec: str, path: Path, hub_offline: bool, what: str) -> str:
    """A missing file; where it is written like a hub dataset id (swift's --dataset takes those), say so."""
    looks_local = spec.startswith((".", "~")) or path.suffix in (".json", ".jsonl") or Path(spec.split("/")[0]).is_dir()
    if not _HUB_DATASET.fullmatch(spec) or looks_local:
        return f"{what} {path} does not exist: check the path (README 'Your own data' shows the format)"
    if spec.split("#")[0].lower() in ("swift/self-cognition", "modelscope/self-cognition"):
        return f"{what} {spec} is swift's hub self-cognition dataset; qwen-tune ships the same rows: --dataset builtin:self_cognition"
    repo = spec.split("#")[0].split(":")[0]
    offline = ", and HF_HUB_OFFLINE is set" if hub_offline else ""
    return (
        f"{what} {spec} is a hub dataset id, not a file{offline}: qwen-tune trains local JSON/JSONL files (it checks "
        f"and fills every row); download it where there is network (modelscope download --dataset {repo} --local_dir DIR) "
        "and pass its .jsonl or .json file"
    )


class _KeyTwice(ValueError):
    """A JSON object that gives a key twice: json keeps the last value without a word."""


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    row = dict(pairs)
    if len(row) < len(pairs):
        seen: set[str] = set()
        raise _KeyTwice(next(k for k, _ in pairs if k in seen or seen.add(k)))
    return row


def _key_twice(what: str, path: Path, where: str, key: str) -> DatasetError:
    return DatasetError(f"{what} {path}: {where} gives the key {key!r} twice (JSON would keep the last silently); keep one")


def _parse_rows(path: Path, text: str, what: str) -> list:
    """A JSON array (or one object) as a whole, else JSON Lines: one row a line, lines ending in \\n only
    (U+2028 or U+0085 inside a string are text, not line ends). A key given twice in a row is refused."""
    whole = None
    try:
        whole = json.loads(text, object_pairs_hook=_unique_keys)
    except _KeyTwice as exc:
        if text.lstrip().startswith("["):
            raise _key_twice(what, path, "a row", str(exc)) from None  # JSON Lines: the line is named below
    except (json.JSONDecodeError, RecursionError) as exc:
        if text.lstrip().startswith("["):
            if isinstance(exc, RecursionError):
                raise DatasetError(f"{what} {path}: JSON nested too deep to read; rows are flat objects") from None
            raise DatasetError(f"{what} {path}: malformed JSON at line {exc.lineno}: {exc.msg}") from None
    if whole is not None:
        if isinstance(whole, list):
            return whole
        lists = [key for key, value in whole.items() if _holds_rows(value)] if isinstance(whole, dict) else []
        if lists and not _ROW_KEYS & set(whole):
            raise DatasetError(
                f"{what} {path} is one JSON object with a list under {lists[0]!r}, not rows: "
                "give the list itself (a JSON array of rows), or JSON Lines with one row a line"
            )
        return [whole]
    rows = []
    for line_number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line, object_pairs_hook=_unique_keys))
        except _KeyTwice as exc:
            raise _key_twice(what, path, f"line {line_number}", str(exc)) from None
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{what} {path}: line {line_number} is not valid JSON: {exc.msg}") from None
        except RecursionError:
            raise DatasetError(f"{what} {path}: line {line_number} nests JSON too deep to read; rows are flat objects") from None
    return rows


def _holds_rows(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(item, dict) for item in value)


# The keys that say which shape a row is in.
_MESSAGE_KEYS = ("messages", "conversations", "conversation")
_PAIR_KEYS = ("query", "response")
_ALPACA_KEYS = ("instruction", "input", "output")
_ROW_KEYS = {*_MESSAGE_KEYS, *_PAIR_KEYS, *_ALPACA_KEYS}


def as_messages(row: object, fail: Callable[[str], DatasetError]) -> tuple[Shape, dict]:
    """One row of any shape, checked, as {"messages": [...]}: an optional system message first, then user and
    assistant turns alternating, ending with a non-empty answer (what swift's template accepts; it drops the rest).
    `fail(problem)` makes the error that names the row."""
    if not isinstance(row, dict):
        raise fail("is not a JSON object")
    media = [key for key in MEDIA_FIELDS if row.get(key) not in (None, [], "")]
    if media:
        raise fail(
            f"has {media[0]!r}, but qwen-tune trains Qwen text models, whose template takes no {media[0]} "
            "(swift would drop the row): remove the field"
        )
    if row.get("tools") not in (None, [], ""):
        raise fail("has 'tools' (function calling), which qwen-tune does not train: remove the field or the row")
    families = [keys for keys in (_MESSAGE_KEYS, _PAIR_KEYS, _ALPACA_KEYS) if any(k in row for k in keys)]
    if len(families) > 1 or sum(k in row for k in _MESSAGE_KEYS) > 1:
        found = " and ".join(repr(k) for k in row if k in _ROW_KEYS)
        raise fail(f"mixes shapes: it has {found}; give each row one shape, one of {SHAPES_TEXT}")
    if not families:
        raise fail(f"has none of the shapes qwen-tune reads: {SHAPES_TEXT}; see README 'Your own data'")
    system = _optional_text(row, "system", fail)
    if families[0] is _MESSAGE_KEYS:
        key = next(k for k in _MESSAGE_KEYS if k in row)
        shape, messages = _from_messages(row[key], key, fail)
        if system is not None:
            if messages and messages[0]["role"] == "system":
                raise fail("has both 'system' and a system message: keep one")
            messages.insert(0, {"role": "system", "content": system})
    else:
        if families[0] is _PAIR_KEYS:
            shape, query, response = "query/response", _text(row, "query", fail), _text(row, "response", fail)
        else:
            shape, response = "alpaca", _text(row, "output", fail)
            parts = [_optional_text(row, k, fail) for k in ("instruction", "input")]
            query = "\n".join(p for p in parts if p)  # swift's and LLaMA-Factory's instruction + "\n" + input
            if not query.strip():
                raise fail("has an empty or missing 'instruction' (and 'input')")
        messages = [{"role": "system", "content": system}] if system is not None else []
        for user, assistant in _history(row, fail):
            messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
        messages += [{"role": "user", "content": query}, {"role": "assistant", "content": response}]
    _check_turns(messages, fail)
    for number, message in enumerate(messages, start=1):
        try:
            message["content"].encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate escape (\\ud800): valid JSON, but no text UTF-8 can hold
            raise fail(f"has text that is not valid Unicode in its message {number} (a lone \\ud8xx-\\udfxx escape)") from None
    for message in messages:
        for lower, upper in _LOWER_PLACEHOLDERS.items():
            message["content"] = message["content"].replace(lower, upper)
    return shape, {"messages": messages}


def _from_messages(value: object, key: str, fail: Callable[[str], DatasetError]) -> tuple[Shape, list[dict]]:
    """messages/conversations: role/content (OpenAI, swift) or from/value (ShareGPT) items."""
    if not isinstance(value, list) or not value:
        raise fail(f"has {key!r} that is not a non-empty list")
    messages, sharegpt = [], False
    for number, message in enumerate(value, start=1):
        where = f"message {number} of {key!r}"
        if not isinstance(message, dict):
            raise fail(f"has {where} that is {_json_kind(message)}, not an object with role and content")
        role = message.get("role", message.get("from"))
        content = message.get("content", message.get("value"))
        sharegpt = sharegpt or "from" in message or "value" in message
        if role not in ROLE_NAMES:
            shown = f"the role {role!r}" if isinstance(role, str) else "no role (role or from)"
            raise fail(f"has {where} with {shown}; qwen-tune trains system, user and assistant turns (human/gpt in ShareGPT)")
        if not isinstance(content, str):
            shown = "no content (content or value)" if content is None else f"content that is {_json_kind(content)}, not text"
            raise fail(f"has {where} with {shown}")
        messages.append({"role": ROLE_NAMES[role], "content": content})
    return ("sharegpt" if sharegpt or key != "messages" else "messages"), messages


def _history(row: dict, fail: Callable[[str], DatasetError]) -> list[tuple[str, str]]:
    """Earlier turns of a query/response or alpaca row: [[question, answer], ...] (ms-swift's and LLaMA-Factory's)."""
    history = row.get("history")
    if history is None:
        return []
    pairs = []
    if isinstance(history, list):
        for turn in history:
            if not (isinstance(turn, list) and len(turn) == 2 and all(isinstance(t, str) for t in turn)):
                break
            pairs.append((turn[0], turn[1]))
        else:
            return pairs
    raise fail("has a 'history' that is not a list of [question, answer] pairs of text")


def _check_turns(messages: list[dict], fail: Callable[[str], DatasetError]) -> None:
    """swift's template takes an optional system message first, then user and assistant in turn; it drops other rows."""
    for number, message in enumerate(messages, start=1):
        if message["role"] == "system" and number > 1:
            raise fail(
                f"has a system message as message {number}; only the first may be one (swift drops the row): "
                "move it to the front or into 'system'"
            )
    turns = messages[1:] if messages[0]["role"] == "system" else messages
    if not turns:
        raise fail("has only a system message; it needs a question and an answer")
    for number, message in enumerate(turns):
        if message["role"] != ("user" if number % 2 == 0 else "assistant"):
            where = (
                "starts with an assistant turn"
                if number == 0
                else f"has two {message['role']} turns in a row (turn {number + 1})"
            )
            raise fail(f"{where}; turns must alternate user, assistant, user, ... (swift drops the row)")
    if turns[-1]["role"] != "assistant" or not turns[-1]["content"].strip():
        raise fail("must end with a non-empty assistant message (the answer to learn)")


def _text(row: dict, key: str, fail: Callable[[str], DatasetError]) -> str:
    value = row.get(key)
    if value is not None and not isinstance(value, str):
        raise fail(f"has {key!r} that is {_json_kind(value)}, not text; put it in quotes")
    if not value or not value.strip():
        raise fail(f"has an empty or missing {key!r}")
    return value


def _optional_text(row: dict, key: str, fail: Callable[[str], DatasetError]) -> str | None:
    value = row.get(key)
    if value is not None and not isinstance(value, str):
        raise fail(f"has {key!r} that is {_json_kind(value)}, not text")
    return value or None


def _json_kind(value: object) -> str:
    kinds = {
        bool: "true/false",
        int: "a number",
        float: "a number",
        str: "text",
        list: "a list",
        dict: "an object",
        type(None): "null",
    }
    return kinds.get(type(value), type(value).__name__)


def pair_row(query: str, response: str) -> dict:
    """A one-turn row, as every row is kept: swift's messages."""
    return {"messages": [{"role": "user", "content": query}, {"role": "assistant", "content": response}]}


def row_texts(row: dict) -> list[str]:
    """Every text of a row: each message's content."""
    return [m["content"] for m in row["messages"]]


def is_chinese(row: dict) -> bool:
    return any(_CJK.search(text) for text in row_texts(row))


def fill_identity(dataset: Dataset, name: Bilingual, author: Bilingual) -> list[dict]:
    """Replace {{NAME}}/{{AUTHOR}} in every text of every row (system, history, question, answer), in the row's language.

    A placeholder left after that (a typo, or one qwen-tune does not know) would be learned
    word for word, so it is refused, naming the row.
    """

    def fill(text: str, zh: bool) -> str:
        pick = (lambda b: b.zh) if zh else (lambda b: b.en)
        return text.replace("{{NAME}}", pick(name)).replace("{{AUTHOR}}", pick(author))

    filled = []
    for row in dataset.rows:
        zh = is_chinese(row)
        filled.append({**row, "messages": [{**m, "content": fill(m["content"], zh)} for m in row["messages"]]})
        texts = row_texts(filled[-1])
        where = f"{dataset.what} {dataset.path}: row {len(filled)}"
        miscased = [m.group() for text in texts for m in _MISCASED.finditer(text)]
        if miscased:
            right = "{{" + (miscased[0].strip("{} ").upper()) + "}}"
            raise DatasetError(
                f"{where} has {miscased[0]}, which qwen-tune does not fill; write {right} (two braces, no spaces; "
                f"{right.lower()} in lower case is read too)"
            )
        left = [m.group() for text in texts for m in _PLACEHOLDER.finditer(text)]
        if left:
            raise DatasetError(
                f"{where} has the placeholder {left[0]}, which qwen-tune does not fill "
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
    """The row as the Qwen chat template renders it (what swift tokenizes): every turn, history included."""
    messages = list(row["messages"])
    if messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": system})
    return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)


def length_measure(system: str, tokenizer_file: Path | None) -> tuple[Callable[[dict], int], str]:
    """A row's tokens after the chat template, and how they are counted (tokenized | estimated)."""
    if tokenizer_file is not None:
        from tokenizers import Tokenizer

        try:
            tokenizer = Tokenizer.from_file(str(tokenizer_file))
        except Exception as exc:  # the tokenizers library raises its own kinds for a broken file
            raise ModelError(f"cannot read the model's tokenizer {tokenizer_file}: {str(exc)[:200]}") from None
        return _bounded_count(tokenizer, system), "tokenized"
    return lambda row: estimate_tokens(chat_text(row, system)), "estimated"


# A row this many characters long is counted from its start first: past MAX_LENGTH_LIMIT tokens no limit fits it,
# and tokenizing a 200 MB row whole took minutes (about 3 s a MiB) before its refusal.
PREFIX_CHARS = 1 << 20


def _bounded_count(tokenizer, system: str) -> Callable[[dict], int]:
    """A row's tokens, or, for a row no --max-length can fit, a count above MAX_LENGTH_LIMIT reached without
    tokenizing all of it: a token holds at most the vocabulary's longest entry in bytes (byte-level BPE)."""
    longest_token = max((len(t) for t in tokenizer.get_vocab()), default=1)

    def count(text: str) -> int:
        return len(tokenizer.encode(text, add_special_tokens=False).ids)

    def tokens(row: dict) -> int:
        text = chat_text(row, system)
        if len(text) > PREFIX_CHARS:
            if len(text.encode("utf-8")) > MAX_LENGTH_LIMIT * longest_token:
                return MAX_LENGTH_LIMIT + 1
            if (head := count(text[:PREFIX_CHARS])) > MAX_LENGTH_LIMIT:
                return head
        return count(text)

    return tokens


def cut_rows(source: str, rows: list[dict], max_length: int, measure: Callable[[dict], int]) -> tuple[list[dict], list[int]]:
    """Shorten the answer of each row longer than max_length until it fits (--cut-long-rows).

    Only the answer is cut: a row whose question (with its earlier turns) alone does not fit would teach nothing,
    so it is refused. `source` names the file in errors ("dataset PATH"). Returns the rows and the numbers of those cut.
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
                f"{source}: row {number}: its question alone (with any earlier turns) is longer than max_length {max_length}, "
                "so cutting its answer cannot make it fit; raise --max-length or shorten the question"
            )
        result.append(_with_answer(row, answer[:low]))
        cut.append(number)
    return result, cut


def _answer(row: dict) -> str:
    return row["messages"][-1]["content"]


def _with_answer(row: dict, answer: str) -> dict:
    return {**row, "messages": [*row["messages"][:-1], {**row["messages"][-1], "content": answer}]}


def fit_to_max_length(
    source: str, rows: list[dict], max_length: int, measure: Callable[[dict], int], how: str, *, cut: bool
) -> tuple[list[dict], list[int], int]:
    """The rows (answers shortened when cut), their lengths, and how many were cut; rows too long are refused."""
    cut_numbers: list[int] = []
    if cut:
        rows, cut_numbers = cut_rows(source, rows, max_length, measure)
    lengths = [measure(row) for row in rows]
    check_lengths(source, lengths, max_length, how)
    return rows, lengths, len(cut_numbers)


def check_lengths(source: str, lengths: list[int], max_length: int, how: str) -> None:
    """Rows over max_length are dropped by swift without a word (or, if all are, it crashes late):
    refused here, naming them, so the user raises the limit or shortens them."""
    over = [number for number, length in enumerate(lengths, start=1) if length > max_length]
    if not over:
        return
    rows = ", ".join(map(str, over[:10])) + (f" and {len(over) - 10} more" if len(over) > 10 else "")
    counted = "tokens" if how == "tokenized" else "tokens, estimated without the model's tokenizer"
    longest = max(lengths)
    has = f"more than {MAX_LENGTH_LIMIT}" if longest > MAX_LENGTH_LIMIT else str(longest)  # counted no further
    raise DatasetError(
        f"{source}: swift would skip rows longer than max_length {max_length}: "
        f"row{'s' if len(over) > 1 else ''} {rows} of {len(lengths)} (the longest has {has} {counted}); "
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
