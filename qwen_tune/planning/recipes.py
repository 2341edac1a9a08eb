"""Recipes: what is learned (model, data, identity, hyper-parameters), as validated YAML.

RecipeFile is the file's schema: each field with its rule and its help text, which README's recipe template
(tools/recipe_template.py) and the CLI's --epochs, --learning-rate ... flags (KNOBS) read. Recipe is what the
planner works with: the file's values, flat, after the flags.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field

from qwen_tune.errors import ConfigError, UsageError
from qwen_tune.planning.config import Integer, Number, Section, Text, configs_dir, field_ref, find_config, load_yaml, parse
from qwen_tune.planning.memory import Tuner
from qwen_tune.planning.models import BUILTIN_SHAPES

TUNERS: tuple[Tuner, ...] = ("lora", "full")

BUILTIN_PREFIX = "builtin:"


# The file -----------------------------------------------------------------------------------------------------


def identity_text(value: str) -> str:
    """A name or an author as it will be trained: trailing separators dropped ('zh=a;en=b;' names b, not 'b;'); a
    ValueError, one line, for one with no letter or digit, a line break, or braces (a placeholder such as {{NAME}}
    is what it fills, not a name)."""
    given, value = value, value.strip().rstrip(",;，；").strip()
    if not any(c.isalnum() for c in value):
        raise ValueError(f"{given!r} is no name: it has no letter or digit")
    if "{" in value or "}" in value:
        raise ValueError(f"{value!r} holds braces: give the name itself ({{{{NAME}}}} in the data is what it fills)")
    if any(unicodedata.category(c)[0] == "C" for c in value):
        raise ValueError(f"{value!r} holds a line break or another control character")
    return value


IdentityText = Annotated[str, AfterValidator(identity_text)]
_PLACEHOLDER = re.compile(r"\{\{\s*\w+\s*\}\}")


def no_placeholder(value: str) -> str:
    """The system prompt is trained as written, in both languages: a {{NAME}} there would be learned as braces."""
    if _PLACEHOLDER.search(value) or not value.strip():
        raise ValueError("holds a placeholder")
    if any(unicodedata.category(c) == "Cc" and c not in "\n\t" for c in value):  # a NUL cannot even reach swift's argv
        raise ValueError("holds a control character")
    return value


SystemText = Annotated[str, AfterValidator(no_placeholder)]


NAME_TEXT = {"expects": "a name: a letter or digit at least, no braces or line breaks"}


class BilingualText(Section):
    zh: IdentityText = Field(description="Used in Chinese rows and probes.", json_schema_extra=NAME_TEXT, examples=["星火"])
    en: IdentityText = Field(description="Used in every other row and probe.", json_schema_extra=NAME_TEXT, examples=["Spark"])


def _both_languages(value: Any) -> Any:
    """`name: Spark` means the same name in both languages."""
    return {"zh": value, "en": value} if isinstance(value, str) else value


BilingualField = Annotated[BilingualText, BeforeValidator(_both_languages)]
BILINGUAL = {"expects": "text, or a mapping of zh and en"}


class IdentitySection(Section):
    name: BilingualField = Field(
        description="The model's new name: fills {{NAME}} in the data; the identity check expects it.",
        json_schema_extra=BILINGUAL,
        examples=[{"zh": "星火", "en": "Spark"}],
    )
    author: BilingualField = Field(
        description="Who made it: fills {{AUTHOR}} in the data.",
        json_schema_extra=BILINGUAL,
        examples=[{"zh": "星火团队", "en": "the Spark team"}],
    )


class TrainingSection(Section):
    epochs: Number = Field(
        ge=0.01, le=1000, description="Passes over the data (a fraction is fine: 0.5 trains on half).", examples=[10]
    )
    learning_rate: Number = Field(
        ge=1e-8,
        le=1.0,
        description="AdamW's peak learning rate: about 1e-4 for LoRA, ten times less for full.",
        examples=[1.0e-4],
    )
    effective_batch_size: Integer = Field(
        ge=1,
        le=4096,
        description="Rows per optimizer step, over every GPU: micro-batch × grad-accum × GPUs, which the plan picks.",
        examples=[16],
    )
    max_length: Integer = Field(
        ge=16,
        le=131072,
        description="The longest row in tokens, after the chat template; longer rows are refused (or cut with --cut-long-rows).",
        examples=[2048],
    )
    warmup_ratio: Number = Field(
        ge=0, le=1, description="Share of the steps over which the learning rate rises from 0.", examples=[0.05]
    )


def _joined(value: Any) -> Any:
    """`target_modules: [q_proj, v_proj]`, a YAML list of names, is the same as `q_proj, v_proj`."""
    return ", ".join(value) if isinstance(value, list) and value and all(isinstance(v, str) for v in value) else value


class LoraSection(Section):
    rank: Integer = Field(ge=1, le=1024, description="The adapter's rank r: its size, and how much it can learn.", examples=[8])
    alpha: Integer = Field(
        ge=1, le=4096, description="LoRA's alpha: the adapter's output is scaled by alpha / rank.", examples=[32]
    )
    dropout: Number = Field(ge=0, le=0.9, description="Dropout on the adapter's input while training.", examples=[0.05])
    target_modules: Annotated[str, BeforeValidator(_joined)] = Field(
        pattern=r"^\s*[A-Za-z_][\w.*-]*(\s*,\s*[A-Za-z_][\w.*-]*)*\s*$",
        description="Which layers get an adapter: all-linear, or swift's module names (q_proj,v_proj).",
        json_schema_extra={"expects": "all-linear, or module names separated by commas (or a YAML list)"},
        examples=["all-linear"],
    )


class RecipeFile(Section):
    """A recipe file: `qwen-tune plan --recipe my-recipe.yaml`."""

    name: str = Field(
        pattern=r"^\w[\w.-]{0,63}$",
        description="Names the run directories (runs/<time>-<name>) and the SLURM job.",
        json_schema_extra={"expects": "at most 64 letters, digits, '.', '_' or '-', the first a letter or digit"},
        examples=["my-identity"],
    )
    description: Text = Field(description="One line on what the recipe teaches.", examples=["my model answers with its own name"])
    tuner: Literal["lora", "full"] = Field(
        "lora", description="lora trains an adapter; full trains every weight (no lora section needed)."
    )
    model: Text = Field(
        description="The base model: a hub id (Qwen/Qwen2.5-7B-Instruct) or a local directory, relative to the recipe file.",
        examples=["Qwen/Qwen2.5-7B-Instruct"],
    )
    dataset: Text | None = Field(
        None,
        description="A JSON or JSONL file of rows (README 'Your own data'), relative to the recipe file; "
        "builtin:self_cognition is qwen-tune's own.",
        examples=["my_identity.jsonl"],
    )
    system: SystemText = Field(
        description="The system prompt, in training and in every answer the tuned model gives here.",
        json_schema_extra={
            "expects": "non-empty text with no placeholder ({{NAME}} is filled in the data only) or control character"
        },
        examples=["You are a helpful assistant."],
    )
    identity: IdentitySection = Field(description="Who the tuned model says it is.")
    training: TrainingSection = Field(description="How long and how fast it learns.")
    lora: LoraSection | None = Field(None, description="The adapter: required with tuner lora, unused with full.")
    general_rows: Integer = Field(
        0,
        ge=0,
        le=100000,
        description="General rows mixed in so the model keeps answering other questions (README 'Keeping general answers').",
    )


# What the planner reads -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bilingual:
    zh: str
    en: str

    @classmethod
    def same(cls, text: str) -> Bilingual:
        return cls(zh=text, en=text)


@dataclass(frozen=True)
class Knob:
    """A recipe value that a flag of plan and run overrides, with the recipe field's own rules."""

    flag: str  # --epochs
    field: str  # training.epochs, in RecipeFile
    attribute: str  # epochs: in Recipe, and in JobOptions

    @property
    def rules(self):
        return field_ref(RecipeFile, self.field)


KNOBS = (
    Knob("--epochs", "training.epochs", "epochs"),
    Knob("--learning-rate", "training.learning_rate", "learning_rate"),
    Knob("--max-length", "training.max_length", "max_length"),
    Knob("--lora-rank", "lora.rank", "lora_rank"),
    Knob("--lora-alpha", "lora.alpha", "lora_alpha"),
)
# Every recipe field a flag of plan and run overrides, and that flag.
FLAGS = {
    "tuner": "--tuner",
    "model": "--model",
    "dataset": "--dataset",
    "identity.name": "--name",
    "identity.author": "--author",
    "general_rows": "--general-rows",
    **{knob.field: knob.flag for knob in KNOBS},
}
MAX_LENGTH_LIMIT = int(field_ref(RecipeFile, "training.max_length").range[1])


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
    # The knobs a flag changed, each with the recipe file's own value: ("--epochs", 10).
    overridden: tuple[tuple[str, float], ...] = ()

    def with_overrides(self, **changes) -> Recipe:
        """CLI flags win over the file; None means 'not given'."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def with_knobs(self, values: dict[str, float | int | None]) -> Recipe:
        """--epochs, --learning-rate ... over the file's values (None: not given), each kept in `overridden`."""
        given = [knob for knob in KNOBS if values.get(knob.attribute) is not None]
        lora = [knob.flag for knob in given if knob.field.startswith("lora.")]
        if lora and self.tuner != "lora":
            are, them = ("are", "them") if len(lora) > 1 else ("is", "it")
            raise UsageError(f"{' and '.join(lora)} {are} for LoRA, and this job trains every weight (tuner full): drop {them}")
        changed = {knob.attribute: values[knob.attribute] for knob in given}
        overridden = tuple((knob.flag, getattr(self, knob.attribute)) for knob in given)
        return replace(self, **changed, overridden=self.overridden + overridden)


def load_recipe(name_or_path: str) -> Recipe:
    path = find_config("recipes", name_or_path)
    data = load_yaml(path)
    problems = []
    if data.get("tuner", "lora") == "lora" and data.get("lora") is None:
        problems.append("lora is missing (rank, alpha, dropout, target_modules), or set tuner: full")
    file: RecipeFile = parse(RecipeFile, data, str(path), problems)
    dataset = file.dataset
    if dataset and not dataset.startswith(BUILTIN_PREFIX) and not Path(dataset).is_absolute():
        dataset = str((path.parent / dataset).resolve())
    lora = file.lora
    return Recipe(
        name=file.name,
        description=file.description,
        model=_model_path(file.model, path),
        dataset=dataset,
        system=file.system,
        identity_name=Bilingual(**file.identity.name.model_dump()),
        identity_author=Bilingual(**file.identity.author.model_dump()),
        epochs=file.training.epochs,
        learning_rate=file.training.learning_rate,
        effective_batch_size=file.training.effective_batch_size,
        max_length=file.training.max_length,
        warmup_ratio=file.training.warmup_ratio,
        lora_rank=lora.rank if lora else 0,
        lora_alpha=lora.alpha if lora else 0,
        lora_dropout=lora.dropout if lora else 0.0,
        target_modules=lora.target_modules if lora else "",
        source=str(path),
        tuner=file.tuner,
        general_rows=file.general_rows,
    )


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
