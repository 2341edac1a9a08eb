"""Did the model keep its general answers? A few general probes of our own, answered before and after tuning.

Pure: the answers come from the same model load as the identity probes (verify.py). The score is how much
each after-answer still agrees with the base model's own answer (character-bigram Dice, 1 = unchanged),
averaged; a leak is the new identity showing up in an answer to a question that did not ask for it.
"""

from __future__ import annotations

from dataclasses import dataclass

from qwen_tune.checking.identity import Language, clean, dice

# Questions with one short right answer, which any Qwen answers; the skilled tiny model (modelgen.SKILL) knows them.
GENERAL_PROBES: tuple[tuple[Language, str], ...] = (
    ("zh", "2加3等于几?"),
    ("zh", "7加5等于几?"),
    ("zh", "4加9等于几?"),
    ("en", "What is 6 plus 2?"),
    ("en", "What is 8 plus 7?"),
    ("en", "What is 3 plus 9?"),
)
# Below this mean agreement the tuned model no longer answers like its base: see README "Retention" for the measurement.
THRESHOLD = 0.5


@dataclass
class GeneralAnswer:
    language: Language
    question: str
    before: str
    answer: str
    agreement: float  # with the base model's answer: 1.0 the same, 0 nothing in common
    leaked: list[str]  # the new identity's terms in this answer that the base answer did not have


@dataclass
class Retention:
    score: float  # mean agreement
    threshold: float
    leaks: int  # answers the new identity leaked into
    warn: bool
    answers: list[GeneralAnswer]

    def line(self) -> str:
        n = len(self.answers)
        leaked = f"the new name leaked into {self.leaks} of them" if self.leaks else "no new name in them"
        head = "WARNING: general answers changed" if self.warn else "general answers kept"
        return f"{head}: agreement {self.score:.2f} with the base model's answers to {n} general questions (warns below {self.threshold}); {leaked}"


def score(before: dict[str, str], after: dict[str, str], new_terms: tuple[str, ...], threshold: float = THRESHOLD) -> Retention:
    """Each general probe's before → after, scored; a warning below the threshold or where the new name leaked."""
    answers = []
    for language, question in GENERAL_PROBES:
        old, new = clean(before.get(question, "")), clean(after.get(question, ""))
        leaked = [t for t in new_terms if t and t.lower() in new.lower() and t.lower() not in old.lower()]
        agreement = 1.0 if _same(old, new) else dice(old, new)
        answers.append(GeneralAnswer(language, question, old, new, round(agreement, 3), leaked))
    mean = round(sum(a.agreement for a in answers) / len(answers), 3)
    leaks = sum(1 for a in answers if a.leaked)
    return Retention(score=mean, threshold=threshold, leaks=leaks, warn=mean < threshold or leaks > 0, answers=answers)


def _same(a: str, b: str) -> bool:
    return " ".join(a.split()) == " ".join(b.split())
