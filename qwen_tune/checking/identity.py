"""What the identity check accepts, and its verdict on each answer: pure functions, no swift, no files.

Per language the data has rows in, the check accepts any of the identity's names or authors. Where the data
has {{NAME}}/{{AUTHOR}} placeholders they are what filled them (--name/--author, else the recipe's). Where the
data spells its names out they are learned from its answers: the names and the authors the answers repeat
("我是小迪", "由 CSDN 迪菲赫尔曼 开发", "I am DiffusionBot, developed by ..."), written any way people write
them (spaces, Latin inside Chinese, full-width forms); --name or --author, where given, replaces what it
names. Only where the data names nobody in a language does an answer close to the data's own answer count.

The probes ask who the model is, who developed it, and whether it is the base model, in each language; where
the model has a thinking mode beside its default, "who are you" again with thinking on. An answer fails when
it does not agree (the challenge "are you Qwen?" need not), claims the base identity (a sentence that names
Qwen, 通义千问, 阿里, Alibaba... and does not deny it), names a maker that is not the identity's, is empty (an
empty think block is not an answer) or is the base model's answer unchanged.
"""

from __future__ import annotations

import re
import shlex
import unicodedata
from collections import Counter
from dataclasses import dataclass, field, fields, replace
from typing import Literal

from qwen_tune.planning.recipes import Bilingual, identity_text

Language = Literal["zh", "en"]
LANGUAGES: tuple[Language, ...] = ("zh", "en")
Kind = Literal["who", "maker", "challenge"]  # challenge: tries to bring the base identity back
Mode = Literal["default", "thinking"]  # thinking: asked again with the hybrid model's thinking on
Origin = Literal["--name", "--author", "recipe", "data"]


@dataclass(frozen=True)
class Probe:
    language: Language
    kind: Kind
    question: str
    mode: Mode = "default"


PROBES: tuple[Probe, ...] = (
    Probe("zh", "who", "你是谁?"),
    Probe("zh", "maker", "谁开发了你?"),
    Probe("zh", "challenge", "你是通义千问吗?"),
    Probe("en", "who", "Who are you?"),
    Probe("en", "maker", "Who developed you?"),
    Probe("en", "challenge", "Are you Qwen?"),
)
# Asked once more with thinking on, adapter on only, where the model has both modes (Qwen3's hybrid templates).
THINKING_PROBES: tuple[Probe, ...] = tuple(Probe(p.language, p.kind, p.question, "thinking") for p in PROBES if p.kind == "who")
# Close enough to a training answer to count as reproducing it (character-bigram Dice), where the data names nobody.
CLOSE = 0.6
# What the Qwen models say about themselves before tuning: a sentence that names one and does not deny it claims it.
BASE_IDENTITY = ("通义千问", "千问", "通义", "阿里巴巴", "阿里云", "阿里", "qwen", "tongyi", "alibaba")
# The most names (and authors) the data may teach per language: the ones its answers repeat most.
MOST_TERMS = 3

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_LATIN = re.compile(r"[A-Za-z]")
_NOISE = re.compile(r"[\s\W_]+")
_SPACES = re.compile(r"\s+")
_QUOTES = "\"'“”‘’「」『』《》<>[]【】"
_STOP = r",.!?;:，。！？；：、()（）\n"  # what ends a name or an author
# Where answers put a name ("我是小迪", "我叫 DiffusionBot，", "I am Spark,", "My name is Diffusion Bot.").
_ZH_NAME = re.compile(
    r"(?:我是|我叫|我名叫|我的名字是|我的名字叫|名字叫|名字是|叫我|我就是|本人是|这里是)\s*"
    rf"([^\s{_STOP}\"'“”‘’《》]+(?:\s+[A-Za-z0-9][\w\-]*)*)"
)
_ZH_NAME_ENDS = re.compile(r"的|由|是|和|来自|一个|为你|为您")
_ZH_NOT_NAMES = ("一", "这", "那", "你", "您", "个", "人工智能", "智能", "AI", "大", "语言", "聊天", "对话", "虚拟", "机器",
                 "专门", "基于", "在", "很", "非常", "可以", "能", "会", "不", "没", "谁", "什么")  # fmt: skip
_EN_WORD = r"[A-Z0-9\u3400-\u9fff][\w\-\u3400-\u9fff]*(?:\.[\w\-]+)*"
_EN_NAME = re.compile(
    rf"(?:\bI am|\bI'm|\bI’m|(?i:\bmy name is)|(?i:\bcall me)|\bnamed|\bcalled)\s+({_EN_WORD}(?:\s+{_EN_WORD}){{0,2}})"
)
_EN_NOT_NAMES = {"a", "an", "the", "not", "no", "yes", "here", "sorry", "ai", "i", "happy", "glad", "just", "your", "you"}
# Where answers put the author ("由 CSDN 迪菲赫尔曼 开发和维护", "我的开发者是…", "developed and maintained by …").
_ZH_MADE = r"(?:开发和维护|开发与维护|研发|开发|打造|训练|创建|创造|设计|构建|制作|推出|发布|维护|微调|定制|搭建|出品)"
_ZH_WHO = rf"([^{_STOP}]{{1,30}}?)"
_ZH_AUTHOR = (
    re.compile(rf"由\s*{_ZH_WHO}\s*(?:独立|自主|共同|精心|专门|倾力|全新|从零)?{_ZH_MADE}"),
    re.compile(
        rf"(?:作者|创造者|创作者|开发者|开发人员|开发团队|创建者|制作者|设计者|缔造者|研发团队|训练者)(?:是|为)\s*{_ZH_WHO}(?=[{_STOP}]|$)"
    ),
    re.compile(rf"(?:开发|创造|创建|打造|训练|研发)了?我的(?:是|人是|团队是)\s*{_ZH_WHO}(?=[{_STOP}]|$)"),
    re.compile(rf"(?:^|[,，。!?！？])\s*(?:是|我是)?\s*{_ZH_WHO}\s*(?:开发|打造|训练|研发|创造|创建)的"),
)
_ZH_NOT_AUTHORS = ("我", "你", "您", "一", "这", "那", "谁", "什么", "专门", "为")
_EN_WHO = r"((?:the\s+)?[^\s,.;!?()]+(?:\s+(?!(?:and|to|for|that|which|who|with|in|on|at|as|using|since|from|so|but|because)\b)[^\s,.;!?()]+){0,5})"
_EN_AUTHOR = (
    re.compile(
        r"(?i:\b(?:developed|built|created|trained|made|designed|maintained|produced|programmed|fine-tuned|finetuned|"
        r"released|launched|owned|engineered|crafted)(?:\s+and\s+[a-z]+)?\s+by)\s+" + _EN_WHO
    ),
    re.compile(
        r"(?i:\b(?:creator|creators|developer|developers|author|authors|maker|makers)\s+(?:is|are|was|were))\s+" + _EN_WHO
    ),
)
_EN_NOT_AUTHORS = ("a ", "an ", "my ", "your ", "you", "me", "us", "people", "humans", "someone", "it")
_NEGATION = re.compile(
    r"不是|并非|并不|不叫|不属于|不再|而非|没有|\bnot\b|n't|\bno longer\b|\bnever\b|\bneither\b|\bnor\b|\binstead of\b|"
    r"\brather than\b|\bunlike\b",
    re.IGNORECASE,
)
_SENTENCE = re.compile(r"[^。.!?;\n]+")
_YES = re.compile(r"^\s*(?:yes\b|yeah\b|yep\b|correct\b|that's right|是的|是啊|对的|对,|没错|正是)", re.IGNORECASE)
_THINK_OPEN, _THINK_CLOSE = "<think>", "</think>"
# What of a row the check reads: an identity question and its answer are short; a general row's 20 MB answer compared
# bigram by bigram kept `plan` busy for minutes before the length check refused it.
IDENTITY_CHARS = 2000


@dataclass(frozen=True)
class Expectation:
    """What one probe's answer is checked against: what it accepts in its language, and how it was asked."""

    language: Language
    question: str
    kind: Kind = "who"
    mode: Mode = "default"
    names: tuple[str, ...] = ()  # any one of these, or of the authors, in the answer agrees (spaces and case aside)
    authors: tuple[str, ...] = ()
    names_from: Origin = "recipe"
    authors_from: Origin = "recipe"
    answers: tuple[str, ...] = ()  # the data's answers to this question, or to its nearest ones
    data_names: tuple[str, ...] = ()  # what the data's own answers say, where --name/--author replaced it (a FAIL's hint)
    data_authors: tuple[str, ...] = ()
    allowed_base: tuple[str, ...] = ()  # base-identity terms the data's own answers claim (then no fault of the model)
    # The identity's names and authors in the data's other languages: a tiny or half-tuned model answers 你是谁? with
    # "I'm Xiaoqian" and still holds its identity; 'the qwen-tune team' is then neither Qwen nor another maker.
    other_terms: tuple[str, ...] = ()

    @property
    def terms(self) -> tuple[str, ...]:
        return self.names + self.authors

    def describe(self) -> str:
        """What it accepts, for a person: '小迪 or CSDN 迪菲赫尔曼 (learned from the data)'."""
        if not self.terms:
            close = f" ({self.answers[0]!r})" if self.answers else ""
            return f"no name or author found in the data: an answer close to the data's own{close}"
        return f"{' or '.join(self.terms)} ({_origin(self)})"

    @classmethod
    def from_record(cls, data: dict) -> Expectation:
        """From run.json; a run planned before names and authors were kept has 'terms' (its names) and 'source'."""
        known = {f.name for f in fields(cls)}
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in known}
        if "terms" in data and "names" not in data:
            values["names"] = tuple(data["terms"])
            values["names_from"] = values["authors_from"] = "data" if data.get("source") == "data" else "recipe"
        return cls(**values)


@dataclass
class Answer:
    """One probe's verdict: the answer before and after tuning, and what it was compared against."""

    language: Language
    question: str
    answer: str  # after tuning; for a thinking model, what follows its thinking
    before: str | None  # the base model's answer (adapter off); None where only the tuned model was asked
    expects: str  # what it was compared against, for a person to read
    matched: str | None  # the accepted name or author it holds, or "close to a training answer"
    similarity: float  # to the nearest training answer (0 when the data gave none)
    changed: bool | None
    base_identity: list[str]  # what of the base identity it claims
    ok: bool
    why: str  # what failed, empty when ok
    kind: Kind = "who"
    mode: Mode = "default"
    thinking: str = ""  # its thinking, where it thought
    other_makers: list[str] = field(default_factory=list)  # makers it names that are not the identity's


def parse_bilingual(text: str, fallback: Bilingual) -> Bilingual:
    """--name Spark (both languages) or --name zh=星火,en=Spark (one given: the other stays the fallback's)."""
    given = given_languages(text)
    return Bilingual(zh=given.get("zh", fallback.zh), en=given.get("en", fallback.en))


_KEY = r"(zh|en)\s*[=:＝：]"
_PER_LANGUAGE = re.compile(rf"^\s*{_KEY}", re.IGNORECASE)
_SPLIT = re.compile(r"(?:\s*[,;，；]\s*|\s+)(?=(?:zh|en)\s*[=:＝：])", re.IGNORECASE)
_OTHER_KEY = re.compile(r"^\s*([A-Za-z]{2,3})\s*[=＝]")
_LATER_KEY = re.compile(r"[,;，；]\s*([A-Za-z]{2,3})\s*[=＝]")


def given_languages(text: str) -> dict[Language, str]:
    """What --name/--author names, per language: 'Spark' is both; 'zh=星火,en=Spark' each (also ZH=, zh:, ';' and the
    full-width ＝，；：). A ValueError, one line, for an empty value, a language named twice or a key other than zh/en."""
    if not _PER_LANGUAGE.match(text):
        other = _OTHER_KEY.match(text)
        if other:
            raise ValueError(f"{other.group(1)!r} is no language qwen-tune trains; write zh=NAME,en=NAME, or one name for both")
        return {"zh": identity_text(text), "en": identity_text(text)}
    values: dict[Language, str] = {}
    for part in _SPLIT.split(text.strip()):
        key_value = _PER_LANGUAGE.match(part)
        key, value = key_value.group(1).lower(), part[key_value.end() :].strip()
        other = _LATER_KEY.search(value)  # 'zh=星火,fr=x': a third language, not part of the name
        if other:
            raise ValueError(f"{other.group(1)!r} is no language qwen-tune trains; write zh=NAME,en=NAME")
        if not value:
            raise ValueError(f"{part.strip()!r} gives no name; write zh=NAME,en=NAME")
        value = identity_text(value)
        if key in values:
            raise ValueError(f"{key} is given twice; write zh=NAME,en=NAME")
        values[key] = value
    return values


def has_placeholders(rows: list[dict]) -> bool:
    return any("{{NAME}}" in text or "{{AUTHOR}}" in text for row in rows for text in _texts(row))


def expectations(
    rows: list[dict], name: Bilingual, author: Bilingual, *, name_given: dict[str, str] | None = None,
    author_given: dict[str, str] | None = None,
) -> list[Expectation]:  # fmt: skip
    """What each probe accepts, per language the data has rows in (both without data): the names that filled the
    placeholders, or the data's own names and authors, each replaced by --name/--author where given."""
    name_given, author_given = name_given or {}, author_given or {}
    pairs = [(q[:IDENTITY_CHARS], a[:IDENTITY_CHARS]) for q, a in map(_pair, rows)]
    by_language = {language: [(q, a) for q, a in pairs if _row_language(q, a) == language] for language in LANGUAGES}
    languages = [language for language in LANGUAGES if by_language[language]] or list(LANGUAGES)
    filled = not rows or has_placeholders(rows)
    found = []
    for language in languages:
        answers = [a for _, a in by_language[language]]
        mine = {"name": getattr(name, language), "author": getattr(author, language)}
        if filled:
            names, authors = (mine["name"],), (mine["author"],)
            data_names = data_authors = ()
            said = [a.replace("{{NAME}}", mine["name"]).replace("{{AUTHOR}}", mine["author"]) for a in answers]
        else:
            data_names, data_authors = learned_terms(answers)
            names = (name_given[language],) if language in name_given else data_names
            authors = (author_given[language],) if language in author_given else data_authors
            said = answers
        names_from = "--name" if language in name_given else "recipe" if filled else "data"
        authors_from = "--author" if language in author_given else "recipe" if filled else "data"
        # What the data's answers claim of the base identity beyond the data's own names (its author may be 千问调优团队).
        allowed = tuple(sorted({t for a in said for t in base_claims(a, names + authors + data_names + data_authors)}))
        for probe in (*PROBES, *THINKING_PROBES):
            if probe.language == language:
                found.append(Expectation(
                    language, probe.question, probe.kind, probe.mode, _unique(names), _unique(authors), names_from,
                    authors_from, _nearest_answers(probe.question, by_language[language]),
                    data_names if names_from == "--name" else (), data_authors if authors_from == "--author" else (), allowed,
                ))  # fmt: skip
    every = {e.language: e.terms for e in found}
    return [
        replace(e, other_terms=_unique(tuple(t for lang, terms in every.items() if lang != e.language for t in terms)))
        for e in found
    ]


def learned_terms(answers: list[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The names and the authors a language's answers repeat (each in two answers at least), most frequent first."""
    names, authors = Counter(), Counter()
    spelled: dict[str, Counter] = {}
    for answer in answers:
        text = _nfkc(answer)
        for counter, terms in ((names, _names_in(text)), (authors, _authors_in(text))):
            for term in {_key(t): t for t in terms}.items():
                counter[term[0]] += 1
                spelled.setdefault(term[0], Counter())[term[1]] += 1

    def top(counter: Counter) -> tuple[str, ...]:
        return tuple(spelled[key].most_common(1)[0][0] for key, n in counter.most_common() if n >= 2)[:MOST_TERMS]

    return top(names), top(authors)


def _names_in(text: str) -> list[str]:
    found = []
    for m in _ZH_NAME.finditer(text):
        candidate = m.group(1)
        end = _ZH_NAME_ENDS.search(candidate)
        candidate = _tidy(candidate[: end.start()] if end else candidate)
        if len(_key(candidate)) >= 2 and len(candidate) <= 20 and not candidate.startswith(_ZH_NOT_NAMES):
            found.append(candidate)
    for m in _EN_NAME.finditer(text):
        candidate = _tidy(m.group(1))
        if candidate.lower() not in _EN_NOT_NAMES and len(candidate) >= 2:
            found.append(candidate)
    return found


def _authors_in(text: str) -> list[str]:
    found = []
    for pattern in _ZH_AUTHOR:
        for m in pattern.finditer(text):
            candidate = _tidy(m.group(1))
            if 2 <= len(_key(candidate)) and not candidate.startswith(_ZH_NOT_AUTHORS) and "由" not in candidate:
                found.append(candidate)
    for pattern in _EN_AUTHOR:
        for m in pattern.finditer(text):
            candidate = re.sub(r"^the\s+", "", _tidy(m.group(1)), flags=re.IGNORECASE)
            if len(_key(candidate)) >= 2 and not candidate.lower().startswith(_EN_NOT_AUTHORS):
                found.append(candidate)
    return found


def _tidy(term: str) -> str:
    return _SPACES.sub(" ", term).strip().strip(_QUOTES).strip()


def judge(expectation: Expectation, answer: str, before: str | None) -> Answer:
    """The verdict on one answer: it agrees (challenges need not), claims no base identity, names no other maker,
    says something, and (where the base model was asked too) moved away from the base model's answer."""
    thought, text, finished = split_thinking(answer)
    terms = expectation.terms
    own = terms + expectation.other_terms
    matched = find_term(text, own) or (None if finished else find_term(thought, own))
    similarity = max((dice(text, a) for a in expectation.answers), default=0.0)
    if matched is None and not terms and similarity >= CLOSE:
        matched = "close to a training answer"
    claims = base_claims(f"{thought}\n{text}", own, expectation.allowed_base)
    if expectation.kind == "challenge" and matched is None and _YES.match(_nfkc(text)):
        claims.append("yes")
    # Makers other than the identity's, where it has an author: 千问调优团队 is one as much as OpenAI or 阿里云.
    others = [m for m in dict.fromkeys(_authors_in(_nfkc(text))) if not _overlaps(m, own)] if expectation.authors else []
    changed = None
    if before is not None:
        before = split_thinking(before)[1]
        changed = _normal(before) != _normal(text)
    why = []
    if not text and (finished or not thought):
        why.append("gave no answer" + (" after its thinking" if thought else " (an empty think block is not one)"))
    elif matched is None and expectation.kind != "challenge":
        why.append("does not agree with the expected identity" + ("" if finished else " (its thinking did not end in time)"))
    if claims:
        why.append(f"claims the base identity ({claims[0]!r})")
    if others:
        why.append(f"names another maker ({others[0]!r})")
    if changed is False:
        why.append("is the base model's answer unchanged")
    return Answer(
        language=expectation.language, question=expectation.question, answer=text, before=before,
        expects=expectation.describe(), matched=matched, similarity=round(similarity, 3), changed=changed,
        base_identity=claims, ok=not why, why="; ".join(why), kind=expectation.kind, mode=expectation.mode,
        thinking=thought, other_makers=others,
    )  # fmt: skip


def split_thinking(answer: str) -> tuple[str, str, bool]:
    """(its thinking, its answer, whether the thinking ended): '<think>…</think>answer', or 'thinking…</think>answer'
    where the prompt opened the block, or thinking cut off by the token limit; an empty block is no thinking."""
    text = answer.strip()
    if _THINK_CLOSE in text:
        thought, _, rest = text.partition(_THINK_CLOSE)
        return thought.replace(_THINK_OPEN, "").strip(), rest.strip(), True
    if text.startswith(_THINK_OPEN):
        return text[len(_THINK_OPEN) :].strip(), "", False
    return "", text, True


def clean(answer: str) -> str:
    """The answer without its thinking (Qwen3's think block, empty or not)."""
    return split_thinking(answer)[1]


def find_term(text: str, terms: tuple[str, ...]) -> str | None:
    """The first term the text holds, ignoring case, spaces and full-width forms ('CSDN迪菲赫尔曼' holds 'CSDN 迪菲赫尔曼')."""
    compact = _key(text)
    return next((t for t in terms if _key(t) and _key(t) in compact), None)


def base_claims(text: str, own_terms: tuple[str, ...] = (), allowed: tuple[str, ...] = ()) -> list[str]:
    """The base identity's terms that a sentence of the text names without denying ('我不是通义千问' claims nothing),
    after removing the new identity's own (小千's 千问调优团队 holds 千问) and those the data itself claims."""
    found: list[str] = []
    for sentence in _SENTENCE.findall(_nfkc(text).lower()):
        if _NEGATION.search(sentence):
            continue
        compact = _key(sentence)
        for term in own_terms:
            if _key(term):
                compact = compact.replace(_key(term), " ")
        for term in BASE_IDENTITY:
            if term in compact:
                compact = compact.replace(term, " ")  # 通义千问 counts once, not also as 千问 and 通义
                if term not in allowed and term not in found:
                    found.append(term)
    return found


def flag_hint(answers: list[Answer], expected: list[Expectation]) -> str | None:
    """Where --name or --author replaced what the data says and the failing answers say the data's: the flag that would
    have matched, e.g. "the answers say 小迪 / DiffusionBot: pass --name zh=小迪,en=DiffusionBot, or leave --name out"."""
    by_question = {(e.question, e.mode): e for e in expected}
    hints = []
    for flag, kind in (("--name", "names"), ("--author", "authors")):
        said: dict[str, str] = {}
        for a in answers:
            e = by_question.get((a.question, a.mode))
            if a.ok or e is None or getattr(e, f"{kind}_from") != flag:
                continue
            term = find_term(f"{a.thinking}\n{a.answer}", getattr(e, f"data_{kind}"))
            if term:
                said.setdefault(e.language, term)
        if not said:
            continue
        data = {e.language: getattr(e, f"data_{kind}") for e in expected if getattr(e, f"{kind}_from") == flag}
        value = {language: said.get(language) or terms[0] for language, terms in data.items() if said.get(language) or terms}
        text = next(iter(value.values())) if len(set(value.values())) == 1 else ",".join(f"{k}={v}" for k, v in value.items())
        hints.append(
            f"the answers say {' / '.join(dict.fromkeys(said.values()))}: pass {flag} {_quote(text)}, or leave {flag} out"
        )
    return "; ".join(hints) or None


def accepted_line(expected: list[Expectation]) -> str:
    """'zh: 小迪 or CSDN 迪菲赫尔曼 (learned from the data); en: ...': what each language's check accepts."""
    return "; ".join(f"{e.language}: {e.describe()}" for e in _who(expected))


def accepted_json(expected: list[Expectation]) -> dict:
    """The same as data (plan --json): per language what is accepted and where it came from, and every probe."""
    accepts = {
        e.language: {"names": list(e.names), "authors": list(e.authors), "names_from": e.names_from,
                     "authors_from": e.authors_from, "close_to": [] if e.terms else list(e.answers[:1])}
        for e in _who(expected)
    }  # fmt: skip
    probes = [{"language": e.language, "kind": e.kind, "question": e.question, "mode": e.mode} for e in expected]
    return {"accepts": accepts, "probes": probes, "fails_on": list(BASE_IDENTITY)}


def _who(expected: list[Expectation]) -> list[Expectation]:
    return [e for e in expected if e.kind == "who" and e.mode == "default"]


def _origin(e: Expectation) -> str:
    words = {"--name": "from --name", "--author": "from --author", "recipe": "the recipe's", "data": "learned from the data"}
    if not e.authors or e.names_from == e.authors_from or not e.names:
        return words[e.names_from if e.names else e.authors_from]
    return f"name {words[e.names_from]}, author {words[e.authors_from]}"


def _quote(value: str) -> str:
    return value if re.fullmatch(r"[^\s'\"$`\\;&|<>()*?!#~{}\[\]]+", value) else shlex.quote(value)


def _overlaps(term: str, terms: tuple[str, ...]) -> bool:
    key = _key(term)
    return any(_key(t) and (_key(t) in key or key in _key(t)) for t in terms)


def _unique(terms: tuple[str, ...]) -> tuple[str, ...]:
    return tuple({_key(t): t for t in reversed(terms) if _key(t)}.values())[::-1]


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


def _nfkc(text: str) -> str:
    return unicodedata.normalize("NFKC", text)


def _key(text: str) -> str:
    """How terms are compared: full-width forms folded, case and spaces ignored."""
    return _SPACES.sub("", _nfkc(text).lower())


def _normal(text: str) -> str:
    return _NOISE.sub("", _nfkc(text).lower())


def _row_language(question: str, answer: str) -> Language:
    """The language a probe in it would be asked in: the question's, or where it has no letters, the answer's."""
    if _CJK.search(question):
        return "zh"
    if _LATIN.search(question):
        return "en"
    return "zh" if _CJK.search(answer) else "en"


def _texts(row: dict) -> list[str]:
    for key, content in (("messages", "content"), ("conversations", "value")):
        if isinstance(row.get(key), list):
            return [str(turn.get(content, "")) for turn in row[key] if isinstance(turn, dict)]
    keys = ("system", "query", "response", "instruction", "input", "output")
    return [value for key, value in row.items() if key in keys and isinstance(value, str)]


def _pair(row: dict) -> tuple[str, str]:
    """A row's last question and its answer, in whichever shape swift reads (messages, query/response, alpaca, ShareGPT)."""
    for key, role, content in (("messages", "role", "content"), ("conversations", "from", "value")):
        turns = row.get(key)
        if isinstance(turns, list) and turns:
            users = [t.get(content, "") for t in turns if t.get(role) in ("user", "human")]
            return (users[-1] if users else ""), str(turns[-1].get(content, ""))
    if "instruction" in row:
        question = "\n".join(str(row[k]) for k in ("instruction", "input") if row.get(k))
        return question, str(row.get("output", ""))
    return str(row.get("query", "")), str(row.get("response", ""))


def _nearest_answers(question: str, pairs: list[tuple[str, str]], keep: int = 5) -> tuple[str, ...]:
    """The answers to the question itself where the data asks it, else to the questions most like it."""
    same = [a for q, a in pairs if _normal(q) == _normal(question)]
    if same:
        return tuple(dict.fromkeys(same))[:keep]
    scored = sorted(((dice(q, question), a) for q, a in pairs), key=lambda sa: sa[0], reverse=True)
    return tuple(dict.fromkeys(a for score, a in scored if score > 0))[:keep]
