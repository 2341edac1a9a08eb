#!/usr/bin/env python3
"""Build a random-weight Qwen model directory offline, for demos and tests.

    python scripts/make_model.py tiny build/tiny-qwen2 [--recipe demo-tiny-cpu]

`tiny` is a 2-layer, 128-wide Qwen2 whose tokenizer is trained on the recipe's dataset
(identity filled in), so it trains in seconds on a CPU. Random weights: good for
checking the pipeline, memory and speed, not for quality.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qwen_tune.dataset import fill_identity, load_dataset  # noqa: E402
from qwen_tune.errors import UserError  # noqa: E402
from qwen_tune.modelgen import build_tiny_qwen2  # noqa: E402
from qwen_tune.recipes import load_recipe  # noqa: E402


def corpus(recipe_name: str) -> list[str]:
    recipe = load_recipe(recipe_name)
    rows = fill_identity(load_dataset(recipe.dataset), recipe.identity_name, recipe.identity_author)
    texts = [recipe.system]
    for row in rows:
        texts += [m["content"] for m in row["messages"]] if "messages" in row else [row["query"], row["response"]]
    return texts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("shape", choices=["tiny"])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--recipe", default="demo-tiny-cpu", help="whose dataset trains the tokenizer")
    args = parser.parse_args()
    if (args.out_dir / "config.json").exists():
        print(f"make_model: {args.out_dir} already holds a model; delete it to rebuild", file=sys.stderr)
        return 2
    try:
        texts = corpus(args.recipe)
    except UserError as exc:
        print(f"make_model: {exc}", file=sys.stderr)
        return 2
    print(build_tiny_qwen2(args.out_dir, texts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
