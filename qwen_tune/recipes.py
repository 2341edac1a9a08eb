"""Recipes: what is learned (model, data, identity, hyper-parameters), as validated YAML."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from qwen_tune.config import Fields, find_config, load_yaml

BUILTIN_PREFIX = "builtin:"


@dataclass(frozen=True)
class Bilingual:
    zh: str
    en: str

    @classmethod
    def same(cls, text: str) -> Bilingual:
        return cls(zh=text, en=text)


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    model: str
    dataset: str | None  # a path, or builtin:NAME for data shipped in qwen_tune/data
    system: str
    identity_name: Bilingual
    identity_author: Bilingual
    epochs: float
    learning_rate: float
    effective_batch_size: int
    max_length: int
    warmup_ratio: float
    lora_rank: int
    lora_alpha: int
    lora_dropout: float
    target_modules: str
    source: str = ""
    # General rows mixed into training so the model keeps answering other questions (README "Keeping general
    # answers"): the base model's own answers to shipped prompts, made before training, or a file's rows.
    general_rows: int = 0

    def with_overrides(self, **changes) -> Recipe:
        """CLI flags win over the file; None means 'not given'."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def load_recipe(name_or_path: str) -> Recipe:
    path = find_config("recipes", name_or_path)
    top = Fields(load_yaml(path), str(path))
    identity = top.section("identity")
    training = top.section("training")
    lora = top.section("lora")
    dataset = top.optional_text("dataset")
    if dataset and not dataset.startswith(BUILTIN_PREFIX) and not Path(dataset).is_absolute():
        dataset = str((path.parent / dataset).resolve())
    recipe = Recipe(
        name=top.text("name"),
        description=top.text("description"),
        model=top.text("model"),
        dataset=dataset,
        system=top.text("system"),
        identity_name=_bilingual(identity, "name"),
        identity_author=_bilingual(identity, "author"),
        epochs=training.number("epochs", 0.01, 1000),
        learning_rate=training.number("learning_rate", 1e-8, 1.0),
        effective_batch_size=training.number("effective_batch_size", 1, 4096, integer=True),
        max_length=training.number("max_length", 16, 131072, integer=True),
        warmup_ratio=training.number("warmup_ratio", 0, 1),
        lora_rank=lora.number("rank", 1, 1024, integer=True),
        lora_alpha=lora.number("alpha", 1, 4096, integer=True),
        lora_dropout=lora.number("dropout", 0, 0.9),
        target_modules=lora.text("target_modules"),
        source=str(path),
        general_rows=top.number("general_rows", 0, 100000, integer=True, default=0),
    )
    for section in (identity, training, lora, top):
        section.done()
    return recipe


def _bilingual(fields: Fields, key: str) -> Bilingual:
    value = fields.data.get(key)
    if isinstance(value, str):
        fields.text(key)
        return Bilingual.same(value)
    section = fields.section(key)
    result = Bilingual(zh=section.text("zh"), en=section.text("en"))
    section.done()
    return result
