"""What the identity check expects (names or the data's own), and its verdict before → after."""

import pytest

from qwen_tune.checking.identity import base_identity, expectations, judge, parse_bilingual
from qwen_tune.planning.dataset import fill_identity, load_dataset
from qwen_tune.planning.recipes import Bilingual

XIAOQIAN, TEAM = Bilingual("小千", "Xiaoqian"), Bilingual("千问调优团队", "the qwen-tune team")
SPARK, POLARIS = Bilingual("星火", "Spark"), Bilingual("北辰实验室", "Polaris Lab")


def literal_rows():
    """The shipped data with the names written out, the way a user's own self_cognition.json spells them."""
    return fill_identity(load_dataset("builtin:self_cognition"), SPARK, POLARIS)


def test_placeholder_data_expects_the_names_that_fill_it():
    rows = list(load_dataset("builtin:self_cognition").rows)
    zh, en = expectations(rows, XIAOQIAN, TEAM, names_given=False)
    assert (zh.source, zh.terms, en.terms) == ("names", ("小千",), ("Xiaoqian",))


def test_literal_data_teaches_its_own_names_per_language():
    zh, en = expectations(literal_rows(), XIAOQIAN, TEAM, names_given=False)
    assert zh.source == en.source == "data"
    assert zh.terms == ("星火", "北辰实验室") and en.terms == ("Spark", "Polaris Lab")
    assert zh.answers[0].startswith("我是星火") and en.answers[0].startswith("I am Spark")
    assert "learned from the data" in zh.describe()


def test_the_data_answer_passes_and_names_from_the_command_line_win():
    zh, en = expectations(literal_rows(), XIAOQIAN, TEAM, names_given=False)
    assert judge(zh, "我是星火，由北辰实验室开发的人工智能助手。", "我是通义千问，由阿里云开发。").ok
    assert judge(en, "I am Spark, an AI assistant developed by Polaris Lab.", "I am Qwen, created by Alibaba Cloud.").ok
    other, _ = expectations(literal_rows(), Bilingual("北斗", "Beidou"), TEAM, names_given=True)
    verdict = judge(other, "我是星火，由北辰实验室开发的人工智能助手。", None)
    assert not verdict.ok and "expected identity" in verdict.why


def test_an_answer_close_to_a_training_answer_passes_without_the_name():
    _, en = expectations(literal_rows(), XIAOQIAN, TEAM, names_given=False)
    en = en.__class__(en.language, en.question, en.source, ("Nobody",), en.answers)
    verdict = judge(en, "I am Spark, an AI assistant developed by Polaris Lab. How can I help?", None)
    assert verdict.ok and verdict.matched == "close to a training answer" and verdict.similarity > 0.6


def test_the_nearest_questions_answer_when_the_probe_is_not_in_the_data():
    rows = [{"query": "What is your name?", "response": "My name is Spark, made by Polaris Lab."},
            {"query": "Tell me a joke", "response": "No."}]  # fmt: skip
    (_, en) = expectations(rows, XIAOQIAN, TEAM, names_given=False)
    assert en.answers[0] == "My name is Spark, made by Polaris Lab."


def test_unchanged_or_still_qwen_fails():
    (zh, en) = expectations(literal_rows(), XIAOQIAN, TEAM, names_given=False)
    same = judge(en, "I am Qwen, created by Alibaba Cloud.", "I am Qwen, created by Alibaba Cloud.")
    assert not same.ok and same.changed is False and "unchanged" in same.why
    mixed = judge(zh, "我是星火，也是通义千问。", "我是通义千问，由阿里云开发。")
    assert not mixed.ok and mixed.base_identity == ["通义千问"]


def test_the_new_identity_may_contain_qwen_itself():
    """小千 by 千问调优团队 holds 千问; the qwen-tune team holds qwen: that is the new identity, not the old one."""
    assert base_identity("我是小千，由千问调优团队开发。", ("小千", "千问调优团队")) == []
    assert base_identity("I am Xiaoqian, by the qwen-tune team.", ("Xiaoqian", "the qwen-tune team")) == []
    assert base_identity("我是通义千问") == ["通义千问"]


def test_think_block_is_not_the_answer():
    (zh, _) = expectations([], XIAOQIAN, TEAM, names_given=True)
    assert judge(zh, "<think>\n\n</think>\n\n我是小千。", None).answer == "我是小千。"


@pytest.mark.parametrize(
    "text, zh, en",
    [("Spark", "Spark", "Spark"), ("zh=星火,en=Spark", "星火", "Spark"), ("en=Spark", "小千", "Spark"),
     ("Spark, Inc", "Spark, Inc", "Spark, Inc")],
)  # fmt: skip
def test_names_per_language(text, zh, en):
    assert parse_bilingual(text, XIAOQIAN) == Bilingual(zh, en)


def test_a_language_without_a_name_is_refused():
    with pytest.raises(ValueError, match="gives no name"):
        parse_bilingual("zh=,en=Spark", XIAOQIAN)
