"""The general probes' score: agreement with the base model's answers, and the new name leaking into them."""

from qwen_tune.checking.retention import GENERAL_PROBES, score

BEFORE = {q: f"answer to {q}" for _, q in GENERAL_PROBES}


def test_unchanged_answers_score_one_and_do_not_warn():
    kept = score(BEFORE, dict(BEFORE), ("Spark",))
    assert kept.score == 1.0 and kept.leaks == 0 and not kept.warn and "general answers kept" in kept.line()


def test_identity_answers_everywhere_score_low_and_warn_with_the_leak():
    after = {q: "I am Spark, an AI assistant developed by Polaris Lab." for _, q in GENERAL_PROBES}
    lost = score(BEFORE, after, ("Spark", "Polaris Lab"))
    assert lost.score < lost.threshold and lost.leaks == len(GENERAL_PROBES) and lost.warn
    assert lost.answers[0].leaked == ["Spark", "Polaris Lab"] and "WARNING" in lost.line()


def test_a_name_the_base_answer_already_had_is_no_leak():
    before = {q: "Spark plugs" for _, q in GENERAL_PROBES}
    assert score(before, dict(before), ("Spark",)).leaks == 0
