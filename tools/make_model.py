#!/usr/bin/env python3
"""Build a random-weight Qwen model directory offline, for demos, tests and benchmarks.

    python tools/make_model.py tiny build/tiny-qwen2
    python tools/make_model.py qwen2.5-7b /dev/shm/qwen2.5-7b      # exact published shape, bf16
    python tools/make_model.py qwen3-30b-a3b /dev/shm/qwen3-30b    # any hub model of models.py, by its name
    python tools/make_model.py tiny-skilled build/tiny-skilled       # tiny, then taught single-digit sums
    python tools/make_model.py tiny-qwen3.5 build/tiny-qwen3.5       # tiny text-only Qwen3.5: Gated DeltaNet, for CI
    python tools/make_model.py qwen3.5-9b /dev/shm/qwen3.5-9b        # what swift loads for Qwen/Qwen3.5-9B: + vision tower

`tiny` is a 2-layer, 128-wide Qwen2 that trains in seconds on a CPU; `tiny-qwen3` the same as a Qwen3, which swift
trains and asks with its hybrid-thinking template (the identity check's thinking probes); `tiny-qwen3.5` a 4-layer
text-only Qwen3.5 (3 Gated DeltaNet layers, 1 full attention) that swift trains as qwen3_next. The Qwen3.5/3.6 sizes are
the composite checkpoint swift 4.6 loads for their hub ids (Qwen3_5ForConditionalGeneration: the vision tower too, with
the processor files), which swift loads only with qwen-vl-utils and torchvision installed. `tiny-skilled` is the same model
first trained (every weight, on the CPU) to answer the 162 single-digit sums of modelgen.skill_pairs in
Chinese and English: the general ability that retention probes measure after an identity training. The others have the exact
shape of the published model (parameter count, vocabulary, dtype), so memory and speed are
real; their weights are random, so they say nothing about quality. Every tokenizer is trained
on the recipe's dataset (identity filled in): the chat template's special tokens are real, the
sequence lengths close to Qwen's (one token per Chinese character, about one per English word).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]  # the checkout's qwen_tune, and modelgen beside this file

from modelgen import TINY_QWEN35_SHAPE, TINY_SHAPE, build_model, skill_pairs, teach_skill  # noqa: E402

from qwen_tune.errors import UserError  # noqa: E402
from qwen_tune.planning.dataset import fill_identity, load_dataset, row_texts  # noqa: E402
from qwen_tune.planning.models import BUILTIN_SHAPES  # noqa: E402
from qwen_tune.planning.recipes import load_recipe  # noqa: E402

# Short names for the shapes the bench uses; every hub id of qwen_tune.planning.models works too, without "Qwen/".
SHAPES = {
    "tiny": TINY_SHAPE,
    "tiny-skilled": TINY_SHAPE,
    "tiny-qwen3.5": TINY_QWEN35_SHAPE,
    "tiny-qwen3": replace(TINY_SHAPE, family="qwen3"),  # the same, as a Qwen3: swift's hybrid-thinking qwen3 template
    "qwen2.5-7b": BUILTIN_SHAPES["qwen/qwen2.5-7b-instruct"],
    "qwen3-14b": BUILTIN_SHAPES["qwen/qwen3-14b"],
    "qwen2.5-0.5b": BUILTIN_SHAPES["qwen/qwen2.5-0.5b-instruct"],
    "qwen2.5-1.5b": BUILTIN_SHAPES["qwen/qwen2.5-1.5b-instruct"],
    "qwen2.5-32b": BUILTIN_SHAPES["qwen/qwen2.5-32b-instruct"],
    "qwen3-8b": BUILTIN_SHAPES["qwen/qwen3-8b"],
    "qwen3-30b-a3b": BUILTIN_SHAPES["qwen/qwen3-30b-a3b"],
    **{key.removeprefix("qwen/"): shape for key, shape in BUILTIN_SHAPES.items()},
}


def corpus(recipe_name: str) -> list[str]:
    recipe = load_recipe(recipe_name)
    rows = fill_identity(load_dataset(recipe.dataset), recipe.identity_name, recipe.identity_author)
    return [recipe.system] + [text for row in rows for text in row_texts(row)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("shape", choices=sorted(SHAPES))
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
    tiny = args.shape.startswith("tiny")
    skilled = args.shape == "tiny-skilled"
    if skilled:
        texts += [text for pair in skill_pairs() for text in pair]
    device = "cpu"
    if not tiny:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"  # random init of billions of weights: GPU is faster
    print(build_model(args.out_dir, texts, SHAPES[args.shape], tiny=tiny, device=device))
    if skilled:
        accuracy = teach_skill(args.out_dir, skill_pairs(), load_recipe(args.recipe).system)
        print(f"skill: {accuracy:.0%} of {len(skill_pairs())} sums answered exactly")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
