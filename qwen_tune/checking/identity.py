"""What the identity check expects, and its verdict on each answer: pure functions, no swift, no files.

Where the data has {{NAME}}/{{AUTHOR}} placeholders, the expected identity is the one that filled them
(--name/--author, else the recipe's). Where the data spells its names out, the identity is learned
from the data: the answers it gives to the probe questions (or to the nearest questions it has), and
the name and author terms that recur in its answers, per language. An answer agrees with the data when
it holds one of those terms or is close to one of those answers.

Before → after: the same probes answered with the adapter off and on. An after-answer that is the
before-answer again, or still carries the base model's own identity (Qwen, 通义千问, Alibaba...), fails.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Literal

from qwen_tune.planning.recipes import Bilingual

Language = Literal["zh", "en"]
Source = Literal["names", "data"]

PROBES: tuple[tuple[Language, str], ...] = (("zh", "你是谁?"), ("en", "Who are you?"))
# Close enough to a training answer to count as reproducing it (character-bigram Dice): the demo's
# tuned answers score 1.0 against the nearest training answer, the random model's gibberish under 0.1.
CLOSE = 0.6
# What the Qwen models say about themselves before tuning; a tuned answer should have dropped it.
BASE_IDENTITY = ("通义千问", "千问", "通义", "阿里巴巴", "阿里云", "阿里", "qwen", "tongyi", "alibaba")

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_THINK = re.compile(r"^\s*<think>.*?</think>\s*", re.DOTALL)
_NOISE = re.compile(r"[\s\W_]+")
# Where self-cognition answers put the name and the author (the shapes of swift's and our shipped data).
_ZH_NAME = re.compile(r"(?:我是|我叫|我的名字是|名字叫|叫我|我就是)([^，,。！!？?、\s的和]{1,12}?)(?=[，,。！!？?、\s]|$|的|，)")
_ZH_AUTHOR = re.compile(
    r"(?:由|作者是|创造者是|开发者是|开发我的是|来自)([^，,。！!？?、\s]{2,16}?)(?=开发|打造|训练|创建|研发|基于|[，,。！!？?]|$)"
)
_EN_WORD = r"[A-Z][\w.\-]*"
_EN_NAME = re.compile(rf"(?:I am|I'm|call me|my name is|[Nn]ame is)\s+({_EN_WORD}(?:\s+{_EN_WORD}){{0,2}})")
_EN_AUTHOR = re.compile(
    r"(?:\bby|creator is|developer is|author is|maker is)\s+((?:the\s+)?[\w.\-]+(?:\s+[\w.\-]+){0,3}?)(?=[.,;!?]|$)"
)
_EN_NOT_NAMES = {"a", "an", "the", "not", "no", "yes", "here", "sorry", "ai", "i"}


@dataclass(frozen=True)
class Expectation:
    """What one probe's answer is checked against."""

    language: Language
    question: str
    source: Source  # names: --name/--author or the recipe filled the data's placeholders; data: learned from it
    terms: tuple[str, ...]  # any one of them in the answer agrees (case does not matter)
    answers: tuple[str, ...] = ()  # the data's answers to this question, or to its nearest ones

    def describe(self) -> str:
        said = " / ".join(repr(t) for t in self.terms) or "no name found in the data"
        where = "from --name/--author or the recipe" if self.source == "names" else "learned from the data"
        close = f", or an answer close to {self.answers[0]!r}" if self.answers else ""
        return f"{said} ({where}){close}"


@dataclass
class Answer:
    """One probe's verdict: the answer before and after tuning, and what it was compared against."""

    language: Language
    question: str
    answer: str  # after tuning
    before: str | None  # the base model's answer (adapter off); None where only the tuned model was asked
    expects: str  # what it was compared against, for a person to read
    matched: str | None  # the expected term it holds, or "close to a training answer"
    similarity: float  # to the nearest training answer (0 when the data gave none)
    changed: bool | None
    base_identity: list[str]  # base-model identity terms the answer still carries from before
    ok: bool
    why: str  # what failed, empty when ok


def parse_bilingual(text: str, fallback: Bilingual) -> Bilingual:
    """--name Spark (both languages) or --name zh=星火,en=Spark (one given: the other stays the fallback's)."""
    if not re.match(r"^\s*(zh|en)\s*=", text):
        return Bilingual.same(text.strip())
    values = {"zh": fallback.zh, "en": fallback.en}
    for part in re.split(r",(?=\s*(?:zh|en)\s*=)", text):
        key, _, value = part.partition("=")
        if not value.strip():
            raise ValueError(f"{part.strip()!r} gives no name; write zh=NAME,en=NAME")
        values[key.strip()] = value.strip()
    return Bilingual(**values)


def has_placeholders(rows: list[dict]) -> bool:
    return any("{{NAME}}" in text or "{{AUTHOR}}" in text for row in rows for text in _texts(row))


def expectations(rows: list[dict], name: Bilingual, author: Bilingual, names_given: bool) -> list[Expectation]:
    """What each probe must answer: the filled names where the data has placeholders or names were given, else the data's own."""
    use_names = names_given or has_placeholders(rows)
    found = []
    for language, question in PROBES:
        pairs = [(q, a) for q, a in (_pair(row) for row in rows) if _language(q + a) == language]
        answers = _nearest_answers(question, pairs)
        if use_names:
            found.append(Expectation(language, question, "names", (getattr(name, language),)))
        else:
            found.append(Expectation(language, question, "data", learned_terms([a for _, a in pairs], language), answers))
    return found


def learned_terms(answers: list[str], language: Language) -> tuple[str, ...]:
    """The name and the author that recur in a language's answers, most frequent first (each seen twice at least)."""
    patterns = (_ZH_NAME, _ZH_AUTHOR) if language == "zh" else (_EN_NAME, _EN_AUTHOR)
    terms = []
    for pattern in patterns:
        counts = Counter(m.group(1).strip() for a in answers for m in pattern.finditer(a))
        for term, n in counts.most_common():
            if n >= 2 and term.lower() not in _EN_NOT_NAMES and term not in terms:
                terms.append(re.sub(r"^the\s+", "", term).rstrip("."))
                break
    return tuple(terms)


def judge(expectation: Expectation, answer: str, before: str | None) -> Answer:
    """Pass when the answer agrees with what was expected and, where the base model was asked too, moved away from it."""
    text = clean(answer)
    lowered = text.lower()
    matched = next((t for t in expectation.terms if t and t.lower() in lowered), None)
    similarity = max((dice(text, a) for a in expectation.answers), default=0.0)
    if matched is None and similarity >= CLOSE:
        matched = "close to a training answer"
    changed = base_kept = None
    if before is not None:
        before = clean(before)
        changed = _normal(before) != _normal(text)
        base_kept = [t for t in base_identity(before) if t in base_identity(text, expectation.terms)]
    why = []
    if matched is None:
        why.append("does not agree with the expected identity")
    if changed is False:
        why.append("is the base model's answer unchanged")
    if base_kept:
        why.append(f"still says {base_kept[0]!r} as before")
    return Answer(
        language=expectation.language, question=expectation.question, answer=text, before=before,
        expects=expectation.describe(), matched=matched, similarity=round(similarity, 3), changed=changed,
        base_identity=base_kept or [], ok=not why, why="; ".join(why),
    )  # fmt: skip


def base_identity(text: str, own_terms: tuple[str, ...] = ()) -> list[str]:
    """The base model's identity terms in a text, after removing the new identity's own (小千's 千问调优团队 holds 千问)."""
    lowered = text.lower()
    for term in own_terms:
        lowered = lowered.replace(term.lower(), " ")
    found = []
    for term in BASE_IDENTITY:
        if term in lowered:
            found.append(term)
            lowered = lowered.replace(term, " ")  # 通义千问 counts once, not also as 千问 and 通义
    return found


def clean(answer: str) -> str:
    """Qwen3's empty think block is not the answer."""
    return _THINK.sub("", answer).strip()


def dice(a: str, b: str) -> float:
    """Character-bigram Dice similarity of two texts, ignoring case, spaces and punctuation."""
    x, y = _bigrams(a), _bigrams(b)
    if not x or not y:
        return 0.0
    common = sum((x & y).values())
    return 2 * common / (sum(x.values()) + sum(y.values()))


def _bigrams(text: str) -> Counter:
    t = _normal(text)
    return Counter(t[i : i + 2] for i in range(len(t) - 1))


def _normal(text: str) -> str:
    return _NOISE.sub("", text.lower())


def _language(text: str) -> Language:
    return "zh" if _CJK.search(text) else "en"


def _texts(row: dict) -> list[str]:
    if "messages" in row:
        return [m.get("content", "") for m in row["messages"]]
    return [v for k, v in row.items() if k in ("system", "query", "response") and isinstance(v, str)]


def _pair(row: dict) -> tuple[str, str]:
    """A row's last question and its answer."""
    if "messages" in row:
        messages = row["messages"]
        users = [m["content"] for m in messages if m["role"] == "user"]
        return (users[-1] if users else ""), messages[-1]["content"]
    return row.get("query", ""), row.get("response", "")


def _nearest_answers(question: str, pairs: list[tuple[str, str]], keep: int = 5) -> tuple[str, ...]:
    """The answers to the question itself where the data asks it, else to the questions most like it."""
    same = [a for q, a in pairs if _normal(q) == _normal(question)]
    if same:
        return tuple(dict.fromkeys(same))[:keep]
    ranked = sorted(pairs, key=lambda qa: dice(qa[0], question), reverse=True)
    return tuple(dict.fromkeys(a for q, a in ranked if dice(q, question) > 0))[:keep]
