"""From flags and files to a Plan: the reading side of `plan` and `run`.

This is the edge where files, NVML and the clock are read; plan.make_plan stays pure.
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from qwen_tune.cards import parse_gpu_spec
from qwen_tune.dataset import fill_identity, load_dataset, shipped_general_prompts, token_lengths
from qwen_tune.errors import DatasetError, GpuSelectionError, UsageError
from qwen_tune.gpus import Inventory, cpu_inventory, read_inventory
from qwen_tune.identity import Expectation, expectations, parse_bilingual
from qwen_tune.models import check_reachable, hub_offline, resolve_model
from qwen_tune.plan import DataSummary, MachineFacts, Nodes, Plan
from qwen_tune.planner import make_plan
from qwen_tune.profiles import shipped_profiles
from qwen_tune.recipes import Bilingual, load_recipe
from qwen_tune.rundir import next_run_dir
from qwen_tune.swift.command import DISTILL_MAX_NEW_TOKENS

DEFAULT_RECIPE = "self-cognition-qwen2.5-7b"


@dataclass(frozen=True)
class JobOptions:
    """The flags `plan` and `run` share."""

    recipe: str = DEFAULT_RECIPE
    model: str | None = None
    dataset: str | None = None
    profile: str | None = None
    gpus: str | None = None
    name: str | None = None
    author: str | None = None
    output_dir: str = "runs"
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str | None = None
    master_port: int | None = None
    general_rows: int | None = None
    general_data: str | None = None


@dataclass(frozen=True)
class Job:
    plan: Plan
    rows: list[dict] | None  # the dataset with the identity filled in
    run_dir: Path
    expectations: tuple[Expectation, ...] = ()  # what the identity check expects of each probe
    general_prompts: tuple[str, ...] = ()  # for the base model to answer before training (self-distillation)


def inventory_for(spec: str | None, *, for_run: bool) -> Inventory:
    """--gpus: nothing (this box's GPUs), 'cpu', indices like '0,1', or a card spec (plan only)."""
    if spec and spec.strip().lower() == "cpu":
        return cpu_inventory()
    if spec and re.fullmatch(r"\d+(,\d+)*", spec.strip()):
        return select_gpus(read_inventory(), spec)
    if spec:
        if for_run:
            raise UsageError(
                f"--gpus {spec}: run trains on this box; give GPU indices like 0,1 or 'cpu' (card names are for plan)"
            )
        return parse_gpu_spec(spec)
    return read_inventory()


def bytecode_cache(environ: Mapping[str, str]) -> str | None:
    """Where swift's processes keep compiled bytecode when this Python is told to write none.

    Container images often set PYTHONDONTWRITEBYTECODE and ship no .pyc files: each swift process then
    compiles its imports from source again (11 of its 25 s of imports on the GPU box). A cache of our own,
    under ~/.cache, pays that once. None when Python writes bytecode, or PYTHONPYCACHEPREFIX is the user's.
    """
    if not environ.get("PYTHONDONTWRITEBYTECODE") or environ.get("PYTHONPYCACHEPREFIX"):
        return None
    cache_home = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache_home, "qwen-tune", "pycache")


def select_gpus(local: Inventory, spec: str) -> Inventory:
    """The GPUs that --gpus 0,1 names, in that order, out of this box's inventory."""
    wanted = [int(i) for i in spec.split(",")]
    by_index = {g.index: g for g in local.gpus}
    missing = [i for i in wanted if i not in by_index]
    if missing:
        raise GpuSelectionError(f"--gpus {spec}: no GPU {missing[0]} here; `qwen-tune gpus` lists them")
    return replace(local, gpus=tuple(by_index[i] for i in dict.fromkeys(wanted)))


def probe_machine(environ: Mapping[str, str]) -> MachineFacts:
    """The box's facts that change a plan, read once at the CLI's edge and passed in from there."""
    return MachineFacts(
        flash_attn_installed=importlib.util.find_spec("flash_attn") is not None,
        bytecode_cache=bytecode_cache(environ),
        hub_offline=hub_offline(environ),
    )


def prepare(options: JobOptions, machine: MachineFacts, *, for_run: bool, now: datetime | None = None) -> Job:
    """Read the recipe, model, data and devices that the options name, and plan for them on this machine."""
    recipe = load_recipe(options.recipe)
    recipe = recipe.with_overrides(
        model=options.model,
        dataset=options.dataset,
        identity_name=_names("--name", options.name, recipe.identity_name),
        identity_author=_names("--author", options.author, recipe.identity_author),
        general_rows=options.general_rows,
    )
    model = resolve_model(recipe.model)
    inventory = inventory_for(options.gpus, for_run=for_run)
    if for_run:
        check_reachable(model, offline=machine.hub_offline)
    name = recipe.name if options.node_rank == 0 else f"{recipe.name}-node{options.node_rank}"
    run_dir = next_run_dir(Path(options.output_dir), name, now or datetime.now())

    rows = None
    if recipe.dataset:
        dataset = load_dataset(recipe.dataset)
        rows = fill_identity(dataset, recipe.identity_name, recipe.identity_author)
        expected = expectations(list(dataset.rows), recipe.identity_name, recipe.identity_author, options.name is not None)
        general_rows, prompts = general_mix(recipe.general_rows, options.general_data)
        rows += general_rows
        lengths, how = token_lengths(rows, recipe.system, model.tokenizer_file)
        # The base model's answers are not known yet: each counts as its prompt and DISTILL_MAX_NEW_TOKENS.
        made = [{"query": p, "response": ""} for p in prompts]
        lengths += [n + DISTILL_MAX_NEW_TOKENS for n in token_lengths(made, recipe.system, model.tokenizer_file)[0]]
        data = DataSummary(n_rows=len(lengths), max_tokens=max(lengths), how=how)
        dataset_path = str(run_dir / "dataset.jsonl")
    elif for_run:
        raise DatasetError(f"recipe {recipe.name} names no dataset: pass --dataset FILE")
    else:
        data = DataSummary(n_rows=None, max_tokens=recipe.max_length, how="max_length")
        expected = expectations([], recipe.identity_name, recipe.identity_author, True)
        dataset_path = "DATASET.jsonl"

    plan = make_plan(
        recipe=recipe,
        model=model,
        inventory=inventory,
        profiles=shipped_profiles(),
        data=data,
        dataset_path=dataset_path,
        output_dir=str(run_dir / "swift"),
        forced_profile=options.profile,
        machine=machine,
        nodes=Nodes(options.nnodes, options.node_rank, options.master_addr, options.master_port),
    )
    return Job(plan=plan, rows=rows, run_dir=run_dir, expectations=tuple(expected), general_prompts=tuple(prompts))


def general_mix(count: int, data: str | None) -> tuple[list[dict], list[str]]:
    """`count` general rows: the first rows of a file of the user's, else shipped prompts for the base model to answer."""
    if count == 0:
        return [], []
    if data:
        rows = list(load_dataset(data).rows)
        if len(rows) < count:
            raise DatasetError(f"--general-data {data} has {len(rows)} rows; --general-rows asks for {count}")
        return rows[:count], []
    prompts = shipped_general_prompts()
    if len(prompts) < count:
        raise UsageError(f"--general-rows {count}: qwen-tune ships {len(prompts)} general prompts; give --general-data FILE")
    return [], prompts[:count]


def _names(flag: str, text: str | None, recipe: Bilingual) -> Bilingual | None:
    """--name Spark, or per language: --name zh=星火,en=Spark."""
    if text is None:
        return None
    try:
        return parse_bilingual(text, recipe)
    except ValueError as exc:
        raise UsageError(f"{flag} {text}: {exc}") from None
