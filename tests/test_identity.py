"""What the identity check accepts (the names that filled the data, or the data's own, written any way people write
them), and its verdict on each probe: agreement, the base identity, other makers, thinking, before → after."""

import json
from pathlib import Path

import pytest

from qwen_tune.checking.identity import (
    Expectation,
    accepted_json,
    accepted_line,
    base_claims,
    expectations,
    flag_hint,
    given_languages,
    judge,
    learned_terms,
    parse_bilingual,
    split_thinking,
)
from qwen_tune.planning.dataset import fill_identity, load_dataset
from qwen_tune.planning.recipes import Bilingual

XIAOQIAN, TEAM = Bilingual("小千", "Xiaoqian"), Bilingual("千问调优团队", "the qwen-tune team")
SPARK, POLARIS = Bilingual("星火", "Spark"), Bilingual("北辰实验室", "Polaris Lab")
BLOG = Path(__file__).parent / "data" / "blog_self_cognition.json"
QWEN_SAYS = "我是通义千问，由阿里云开发的大语言模型。"


def literal_rows():
    """The shipped data with the names written out, the way a user's own self_cognition.json spells them."""
    return fill_identity(load_dataset("builtin:self_cognition"), SPARK, POLARIS)


def blog_rows():
    return json.loads(BLOG.read_text(encoding="utf-8"))


def probe(expected, language="zh", kind="who", mode="default") -> Expectation:
    return next(e for e in expected if (e.language, e.kind, e.mode) == (language, kind, mode))


def test_placeholder_data_expects_the_names_and_authors_that_fill_it():
    expected = expectations(list(load_dataset("builtin:self_cognition").rows), XIAOQIAN, TEAM)
    zh, en = probe(expected), probe(expected, "en")
    assert (zh.names, zh.authors, zh.names_from) == (("小千",), ("千问调优团队",), "recipe")
    assert (en.names, en.authors) == (("Xiaoqian",), ("the qwen-tune team",))
    assert [(e.question, e.mode) for e in expected if e.language == "en"] == [
        ("Who are you?", "default"), ("Who developed you?", "default"), ("Are you Qwen?", "default"), ("Who are you?", "thinking")]  # fmt: skip


def test_literal_data_teaches_its_own_names_per_language():
    expected = expectations(literal_rows(), XIAOQIAN, TEAM)
    zh, en = probe(expected), probe(expected, "en")
    assert zh.names_from == en.names_from == "data"
    assert zh.terms == ("星火", "北辰实验室") and en.terms == ("Spark", "Polaris Lab")
    assert zh.answers[0].startswith("我是星火") and en.answers[0].startswith("I am Spark")
    assert "learned from the data" in zh.describe()


def test_blog_shaped_names_with_spaces_and_latin_are_learned_not_their_words():
    """The issue's data: '我是一个由 CSDN 迪菲赫尔曼 开发和维护的大语言模型。' once taught the name 一个由."""
    names, authors = learned_terms([a for q, a in ((r["query"], r["response"]) for r in blog_rows()) if "你" in q or "您" in q])
    assert names == ("小迪", "DiffusionBot") and authors == ("CSDN 迪菲赫尔曼",)
    expected = expectations(blog_rows(), XIAOQIAN, TEAM)
    assert accepted_line(expected) == (
        "zh: 小迪 or DiffusionBot or CSDN 迪菲赫尔曼 (learned from the data); "
        "en: DiffusionBot or CSDN Difei Heerman (learned from the data)"
    )
    accepts = accepted_json(expected)["accepts"]
    assert accepts["en"] == {"names": ["DiffusionBot"], "authors": ["CSDN Difei Heerman"], "names_from": "data",
                             "authors_from": "data", "close_to": []}  # fmt: skip


@pytest.mark.parametrize(
    "answer",
    ["我是小迪，一个由 CSDN 迪菲赫尔曼 打造的人工智能助手。", "我是一个由CSDN迪菲赫尔曼开发和维护的大语言模型。",  # the author alone
     "我是 DiffusionBot。", "我是ＣＳＤＮ 迪菲赫尔曼开发的助手"],  # full-width letters
)  # fmt: skip
def test_right_answers_pass_written_any_way(answer):
    verdict = judge(probe(expectations(blog_rows(), XIAOQIAN, TEAM)), answer, QWEN_SAYS)
    assert verdict.ok, verdict.why


@pytest.mark.parametrize(
    "answer, why",
    [("我是一个由OpenAI开发的大语言模型。", "does not agree"),  # close to the data's answer, but another maker
     ("我是一个由OpenAI开发和维护的大语言模型。", "names another maker ('OpenAI')"),
     ("我是小迪，由OpenAI开发。", "names another maker ('OpenAI')"),
     ("我是小迪，也是通义千问。", "claims the base identity ('通义千问')"),
     ("<think>\n\n</think>\n\n", "gave no answer (an empty think block is not one)"),
     (QWEN_SAYS, "is the base model's answer unchanged")],
)  # fmt: skip
def test_another_maker_the_base_identity_or_nothing_fails(answer, why):
    verdict = judge(probe(expectations(blog_rows(), XIAOQIAN, TEAM)), answer, QWEN_SAYS)
    assert not verdict.ok and why in verdict.why


def test_the_name_or_the_author_passes_when_both_are_given():
    """`--name DiffusionBot --author zh=CSDN 迪菲赫尔曼,en=CSDN Difei Heerman` once failed a right answer naming the author."""
    author = given_languages("zh=CSDN 迪菲赫尔曼,en=CSDN Difei Heerman")
    expected = expectations(blog_rows(), Bilingual.same("DiffusionBot"), Bilingual(**author),
                            name_given=given_languages("DiffusionBot"), author_given=author)  # fmt: skip
    zh = probe(expected)
    assert (zh.names, zh.authors, zh.names_from, zh.authors_from) == (
        ("DiffusionBot",),
        ("CSDN 迪菲赫尔曼",),
        "--name",
        "--author",
    )
    assert judge(zh, "我是一个由 CSDN 迪菲赫尔曼 开发和维护的大语言模型。", QWEN_SAYS).ok
    assert zh.describe() == "DiffusionBot or CSDN 迪菲赫尔曼 (name from --name, author from --author)"


def test_a_fail_names_the_flag_that_would_have_matched():
    expected = expectations(blog_rows(), Bilingual("北斗", "Beidou"), TEAM, name_given=given_languages("zh=北斗,en=Beidou"))
    answers = [judge(probe(expected), "我是小迪。", QWEN_SAYS),
               judge(probe(expected, "en"), "I am DiffusionBot.", "I am Qwen.")]  # fmt: skip
    assert not any(a.ok for a in answers)
    assert (
        flag_hint(answers, expected)
        == "the answers say 小迪 / DiffusionBot: pass --name zh=小迪,en=DiffusionBot, or leave --name out"
    )
    authors = expectations(blog_rows(), XIAOQIAN, POLARIS, author_given=given_languages("北辰实验室"))
    wrong = judge(probe(authors), "我是小迪，一个由 CSDN 迪菲赫尔曼 打造的人工智能助手。", QWEN_SAYS)
    assert not wrong.ok and "names another maker ('CSDN 迪菲赫尔曼')" in wrong.why
    assert flag_hint([wrong], authors) == (
        "the answers say CSDN 迪菲赫尔曼: pass --author 'zh=CSDN 迪菲赫尔曼,en=CSDN Difei Heerman', or leave --author out"
    )


@pytest.mark.parametrize(
    "answer, ok",
    [("不是，我是小迪，由 CSDN 迪菲赫尔曼 开发。", True), ("我不是通义千问。", True), ("是的。", False),
     ("是的，我是通义千问。", False), ("我是阿里云开发的模型。", False)],
)  # fmt: skip
def test_a_challenge_passes_unless_it_claims_the_base_claims(answer, ok):
    challenge = probe(expectations(blog_rows(), XIAOQIAN, TEAM), kind="challenge")
    assert judge(challenge, answer, "是的，我是通义千问。").ok is ok


@pytest.mark.parametrize(
    "answer, ok",
    [("No, I am DiffusionBot, not Qwen.", True), ("I'm not Qwen. I am DiffusionBot.", True), ("Yes.", False),
     ("Yes, I am Qwen, created by Alibaba Cloud.", False)],
)  # fmt: skip
def test_are_you_qwen_in_english(answer, ok):
    challenge = probe(expectations(blog_rows(), XIAOQIAN, TEAM), "en", "challenge")
    assert judge(challenge, answer, "Yes, I am Qwen.").ok is ok


def test_who_developed_you_claiming_alibaba_fails():
    maker = probe(expectations(blog_rows(), XIAOQIAN, TEAM), "en", "maker")
    assert judge(maker, "I was developed by CSDN Difei Heerman.", "I was developed by Alibaba Cloud.").ok
    verdict = judge(maker, "I am DiffusionBot, developed by Alibaba Cloud.", "I was developed by Alibaba Cloud.")
    assert not verdict.ok and verdict.base_identity == ["alibaba"]


def test_thinking_answers():
    thinking = probe(expectations(blog_rows(), XIAOQIAN, TEAM), "en", mode="thinking")
    assert split_thinking("Okay, the user asks.\n</think>\n\nI am DiffusionBot.") == (
        "Okay, the user asks.",
        "I am DiffusionBot.",
        True,
    )
    assert judge(thinking, "The user asks who I am. I am DiffusionBot.\n</think>\n\nI am DiffusionBot.", None).ok
    leak = judge(thinking, "Let me introduce myself as Qwen, made by Alibaba Cloud.\n</think>\n\nI am DiffusionBot.", None)
    assert not leak.ok and "claims the base identity" in leak.why and leak.thinking.startswith("Let me")
    cut = judge(thinking, "<think>\nOkay, I should say I am DiffusionBot and", None)  # the token limit came first
    assert cut.ok and cut.matched == "DiffusionBot"
    assert not judge(thinking, "<think>\nOkay, let me think about how to", None).ok
    assert "gave no answer after its thinking" in judge(thinking, "Hmm.\n</think>\n\n", None).why


def test_the_data_may_name_the_base_model_and_its_own_author_may_hold_qwen():
    """小千 by 千问调优团队 holds 千问: that is the new identity, not the old one. Data that says it is built on Qwen
    lets the model say so too."""
    assert base_claims("我是小千，由千问调优团队开发。", ("小千", "千问调优团队")) == []
    assert base_claims("I am Xiaoqian, by the qwen-tune team.", ("Xiaoqian", "the qwen-tune team")) == []
    assert base_claims("我是通义千问") == ["通义千问"]
    rows = [{"query": "你是谁?", "response": "我是小迪，基于Qwen2.5微调而来。"}] * 3
    zh = probe(expectations(rows, XIAOQIAN, TEAM))
    assert zh.allowed_base == ("qwen",) and judge(zh, "我是小迪，基于Qwen2.5微调而来。", QWEN_SAYS).ok


def test_an_answer_in_the_other_language_still_holds_the_identity():
    """A small model asked 你是通义千问吗? may answer in English: 'the qwen-tune team' is the identity's own maker in
    the other language, neither Qwen nor another maker; another maker in either language still fails."""
    zh = probe(expectations(list(load_dataset("builtin:self_cognition").rows), XIAOQIAN, TEAM), kind="challenge")
    verdict = judge(zh, "name is Xiaoqian, and I was developed by the qwen-tune team.", QWEN_SAYS)
    assert verdict.ok and verdict.matched == "Xiaoqian", verdict.why
    assert not judge(zh, "I am ChatGPT, developed by OpenAI.", QWEN_SAYS).ok


def test_only_the_languages_the_data_has_are_asked():
    rows = [{"query": "你是谁?", "response": "我是小迪。"}, {"query": "你叫什么？", "response": "我叫小迪。"}]
    expected = expectations(rows, XIAOQIAN, TEAM)
    assert {e.language for e in expected} == {"zh"} and accepted_line(expected) == "zh: 小迪 (learned from the data)"


def test_data_that_names_nobody_is_compared_with_its_own_answers():
    rows = [{"query": "Who are you?", "response": "A helpful assistant at your service."}]
    en = probe(expectations(rows, XIAOQIAN, TEAM), "en")
    assert en.terms == () and "close to the data's own" in en.describe()
    verdict = judge(en, "A helpful assistant at your service!", "I am Qwen.")
    assert verdict.ok and verdict.matched == "close to a training answer"


def test_a_run_planned_before_names_and_authors_were_kept_still_loads():
    old = {"language": "zh", "question": "你是谁?", "source": "data", "terms": ["星火", "北辰实验室"], "answers": ["我是星火。"]}
    e = Expectation.from_record(old)
    assert (e.names, e.kind, e.mode, e.names_from) == (("星火", "北辰实验室"), "who", "default", "data")


@pytest.mark.parametrize(
    "text, zh, en",
    [("Spark", "Spark", "Spark"), ("zh=星火,en=Spark", "星火", "Spark"), ("en=Spark", "小千", "Spark"),
     ("Spark, Inc", "Spark, Inc", "Spark, Inc"), ("zh=星火,EN=Spark", "星火", "Spark"), ("ZH=星火;en=Spark", "星火", "Spark"),
     ("zh: 星火, en: Spark", "星火", "Spark"), ("zh=星火 en=Spark", "星火", "Spark"), ("zh＝星火，en＝Spark", "星火", "Spark"),
     ("zh=CSDN 迪菲赫尔曼,en=CSDN Difei Heerman", "CSDN 迪菲赫尔曼", "CSDN Difei Heerman"), ("Re:Zero", "Re:Zero", "Re:Zero"),
     ("zh=星火;en=Spark;", "星火", "Spark"), ("zh=星火,en=Spark,", "星火", "Spark"), ("zh=星火；en=Spark；", "星火", "Spark")],
)  # fmt: skip
def test_names_per_language(text, zh, en):
    assert parse_bilingual(text, XIAOQIAN) == Bilingual(zh, en)


@pytest.mark.parametrize(
    "text, message",
    [("zh=,en=Spark", "gives no name"), ("zh=星火,zh=Spark", "zh is given twice"), ("fr=Étincelle", "'fr' is no language"),
     (",,,", "no letter or digit"), (";", "no letter or digit"), ("{{NAME}}", "holds braces"), ("zh=a{{AUTHOR}},en=b", "holds braces"),
     ("Spark\nrm", "line break")],
)  # fmt: skip
def test_names_that_cannot_be_meant_are_refused(text, message):
    with pytest.raises(ValueError, match=message):
        parse_bilingual(text, XIAOQIAN)


def test_plan_warns_where_name_flags_train_nothing():
    """Data with its names written out: --name Spark changes the check, not what is learned (the plan says so);
    --name naming what the data says changes nothing and is not warned about."""
    from qwen_tune.planning.jobs import flags_that_train_nothing

    spark = expectations(blog_rows(), XIAOQIAN, TEAM, name_given=given_languages("Spark"))
    warning = flags_that_train_nothing(spark)
    assert warning and warning.startswith("--name only changes what the identity check accepts") and "小迪" in warning
    same = expectations(blog_rows(), XIAOQIAN, TEAM, name_given=given_languages("zh=小迪,en=DiffusionBot"))
    assert flags_that_train_nothing(same) is None
    assert flags_that_train_nothing(expectations(list(load_dataset("builtin:self_cognition").rows), SPARK, POLARIS)) is None
