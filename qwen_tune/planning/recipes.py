"""Recipes: what is learned (model, data, identity, hyper-parameters), as validated YAML."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from qwen_tune.errors import ConfigError
from qwen_tune.planning.config import Fields, configs_dir, find_config, load_yaml
from qwen_tune.planning.memory import Tuner
from qwen_tune.planning.models import BUILTIN_SHAPES

TUNERS: tuple[Tuner, ...] = ("lora", "full")

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
    tuner: Tuner = "lora"  # full: every weight trains, and the lora fields are not used
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
    tuner = top.choice("tuner", TUNERS) if top.raw("tuner") is not None else "lora"
    # A full fine-tuning recipe may leave the lora section out; --tuner lora then asks for one.
    lora = top.section("lora") if tuner == "lora" or top.raw("lora") is not None else None
    dataset = top.optional_text("dataset")
    if dataset and not dataset.startswith(BUILTIN_PREFIX) and not Path(dataset).is_absolute():
        dataset = str((path.parent / dataset).resolve())
    recipe = Recipe(
        name=top.text("name"),
        description=top.text("description"),
        model=_model_path(top.text("model"), path),
        dataset=dataset,
        system=top.text("system"),
        identity_name=_bilingual(identity, "name"),
        identity_author=_bilingual(identity, "author"),
        epochs=training.number("epochs", 0.01, 1000),
        learning_rate=training.number("learning_rate", 1e-8, 1.0),
        effective_batch_size=training.number("effective_batch_size", 1, 4096, integer=True),
        max_length=training.number("max_length", 16, 131072, integer=True),
        warmup_ratio=training.number("warmup_ratio", 0, 1),
        lora_rank=lora.number("rank", 1, 1024, integer=True) if lora else 0,
        lora_alpha=lora.number("alpha", 1, 4096, integer=True) if lora else 0,
        lora_dropout=lora.number("dropout", 0, 0.9) if lora else 0.0,
        target_modules=lora.text("target_modules") if lora else "",
        source=str(path),
        tuner=tuner,
        general_rows=top.number("general_rows", 0, 100000, integer=True, default=0),
    )
    for section in (identity, training, lora, top):
        if section:
            section.done()
    return recipe


def _model_path(model: str, recipe_path: Path) -> str:
    """A relative model directory in a recipe means the one beside the recipe (or, for a shipped
    recipe, in the checkout), wherever qwen-tune is started from; a hub id stays as it is."""
    if Path(model).is_absolute() or model.startswith("~"):
        return model
    shipped = recipe_path.resolve().parent == (configs_dir() / "recipes").resolve()
    base = configs_dir().parent if shipped else recipe_path.parent
    candidate = base / model
    if candidate.is_dir() or model.startswith(".") or (shipped and model.lower() not in BUILTIN_SHAPES):
        return str(candidate.resolve())
    return model


def with_tuner(recipe: Recipe, tuner: Tuner | None) -> Recipe:
    """--tuner over the recipe's own; LoRA needs the recipe's lora section."""
    if tuner is None or tuner == recipe.tuner:
        return recipe
    if tuner == "lora" and not recipe.lora_rank:
        raise ConfigError(f"{recipe.source}: --tuner lora needs a lora section (rank, alpha, dropout, target_modules)")
    return replace(recipe, tuner=tuner)


def _bilingual(fields: Fields, key: str) -> Bilingual:
    value = fields.data.get(key)
    if isinstance(value, str):
        fields.text(key)
        return Bilingual.same(value)
    section = fields.section(key)
    result = Bilingual(zh=section.text("zh"), en=section.text("en"))
    section.done()
    return result
