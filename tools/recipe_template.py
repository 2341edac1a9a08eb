#!/usr/bin/env python3
"""Write README's "Your own recipe" template from the recipe model's own fields (qwen_tune/planning/recipes.py).

    python tools/recipe_template.py           # print the template
    python tools/recipe_template.py --write   # put it in README.md, between the recipe-template markers

Each field comes with its help text, what it takes, its default (or that it is required) and the flag that
overrides it; tests/test_configs.py fails when README.md's template is not what this prints, or does not load.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tools")]

from readme_section import Section  # noqa: E402

from qwen_tune.planning.config import documented_fields, expects  # noqa: E402
from qwen_tune.planning.recipes import FLAGS, RecipeFile  # noqa: E402

SECTION = Section("recipe-template", "recipe_template")

WIDTH = 116


def render() -> str:
    """The template as a YAML block that loads as a recipe: every field, commented."""
    lines = ["```yaml"]
    inline: list[str] = []  # fields written on one line with their example: their parts are not listed again
    for path, info, section in documented_fields(RecipeFile):
        if any(path.startswith(f"{whole}.") for whole in inline):
            continue
        indent = "  " * path.count(".")
        key = path.rsplit(".", 1)[-1]
        notes = [info.description or ""]
        if section is None or info.examples:
            notes.append(f"Takes {expects(info.annotation, info)}.")
        if info.is_required():
            notes.append("Required.")
        elif info.default is not None:
            notes.append(f"Default: {_value(info.default)}.")
        elif section is None:
            notes.append("Optional.")
        if path in FLAGS:
            notes.append(f"{FLAGS[path]} overrides it.")
        lines += textwrap.wrap(
            " ".join(notes), WIDTH - len(indent), initial_indent=f"{indent}# ", subsequent_indent=f"{indent}# ",
            break_on_hyphens=False, break_long_words=False,
        )  # fmt: skip
        if section is not None and not info.examples:
            lines.append(f"{indent}{key}:")
            continue
        if section is not None:
            inline.append(path)
        example = info.examples[0] if info.examples else info.default
        lines.append(f"{indent}{key}: {_value(example)}")
    return "\n".join([*lines, "```"]) + "\n"


def _value(value: object) -> str:
    """A value as YAML writes it on one line: 0.0001, all-linear, {zh: 星火, en: Spark}."""
    return (
        yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=1000, sort_keys=False)
        .removesuffix("...\n")
        .strip()
    )


def template_yaml(block: str) -> str:
    """The YAML inside the rendered block."""
    return block.split("```yaml\n", 1)[1].split("```", 1)[0]


def main() -> int:
    return SECTION.main(__doc__, render)


if __name__ == "__main__":
    sys.exit(main())
