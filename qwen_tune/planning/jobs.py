"""From flags and files to a Plan: the reading side of `plan` and `run`.

This is the edge where files, NVML and the clock are read; plan.make_plan stays pure.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from qwen_tune.checking.identity import Expectation, expectations, find_term, given_languages, parse_bilingual
from qwen_tune.errors import DatasetError, GpuSelectionError, ModelError, UsageError
from qwen_tune.machine.cards import find_card, parse_gpu_spec
from qwen_tune.machine.gpus import Inventory, cpu_inventory, parse_indices, read_inventory
from qwen_tune.machine.readiness import TorchFacts
from qwen_tune.planning.dataset import (
    Dataset,
    fill_identity,
    fit_to_max_length,
    length_measure,
    load_dataset,
    pair_row,
    shipped_general_prompts,
)
from qwen_tune.planning.memory import Tuner
from qwen_tune.planning.models import (
    ModelRef,
    check_reachable,
    check_tokenizer,
    hub_fetcher,
    hub_offline,
    remote_code,
    resolve_model,
    use_hf,
)
from qwen_tune.planning.plan import DataSummary, Job, MachineFacts, Nodes
from qwen_tune.planning.planner import make_plan
from qwen_tune.planning.profiles import shipped_profiles
from qwen_tune.planning.recipes import KNOBS, Bilingual, Recipe, load_recipe, with_tuner
from qwen_tune.running.rundir import next_run_dir, run_name
from qwen_tune.swift.command import DISTILL_MAX_NEW_TOKENS

DEFAULT_RECIPE = "self-cognition-qwen2.5-7b"
# --gpus 5090 names a card, --gpus 3 a GPU: no box has a hundred GPUs.
CARD_NUMBER_MIN = 100


@dataclass(frozen=True)
class JobOptions:
    """The flags `plan` and `run` share."""

    recipe: str = DEFAULT_RECIPE
    model: str | None = None
    dataset: str | None = None
    profile: str | None = None
    tuner: Tuner | None = None  # None: the recipe's
    gpus: str | None = None
    name: str | None = None
    author: str | None = None
    output_dir: str = "runs"
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str | None = None
    master_port: int | None = None
    # The recipe's knobs (recipes.KNOBS): each overrides the recipe's value; None: the recipe's.
    epochs: float | None = None
    learning_rate: float | None = None
    max_length: int | None = None
    lora_rank: int | None = None
    lora_alpha: int | None = None
    cut_long_rows: bool = False  # shorten answers to max_length instead of refusing the rows
    hub: str | None = None  # modelscope or hf (swift's --use_hf); None: swift's default, ModelScope unless USE_HF is set
    general_rows: int | None = None
    general_data: str | None = None
    packing: bool | None = None  # --packing / --no-packing; None: packed wherever it runs (planner.packing_decision)
    trust_remote_code: bool = False  # a model whose configs name code of its own (auto_map) may run it


def inventory_for(spec: str | None, *, for_run: bool) -> Inventory:
    """--gpus: nothing (this box's GPUs), 'cpu' or 'cpu:N' (N processes), indices like '0,1', or a card spec (plan only)."""
    if spec is not None and not spec.strip():
        raise UsageError("--gpus '': give GPU indices like 0,1 or 'cpu', or leave --gpus out to use every GPU")
    if spec and (m := re.fullmatch(r"cpu(?::(\d+))?", spec.strip().lower())):
        processes = int(m.group(1) or 1)
        if not 1 <= processes <= 64:
            raise UsageError(f"--gpus {spec}: give 1 to 64 CPU processes, e.g. cpu:2")
        return cpu_inventory(processes)
    if spec and spec.strip().isdigit() and int(spec) >= CARD_NUMBER_MIN and find_card(spec):
        if for_run:  # 4090, 5090: a card's number, not a GPU index
            raise UsageError(f"--gpus {spec}: run trains on this box's GPUs; give indices like 0,1 (card names are for plan)")
        return parse_gpu_spec(spec)
    if spec and (re.fullmatch(r"[\d\s+-]+", spec) or "," in spec):
        wanted = parse_indices(spec)  # a mistyped list is a usage error even on a box without a driver
        return select_gpus(read_inventory(), wanted)
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


def select_gpus(local: Inventory, wanted: tuple[int, ...]) -> Inventory:
    """The GPUs that --gpus 0,1 names, in that order, out of this box's inventory."""
    by_index = {g.index: g for g in local.gpus}
    missing = [i for i in wanted if i not in by_index]
    if missing:
        raise GpuSelectionError(f"--gpus {','.join(map(str, wanted))}: no GPU {missing[0]} here; `qwen-tune gpus` lists them")
    return replace(local, gpus=tuple(by_index[i] for i in wanted))


def probe_machine(environ: Mapping[str, str]) -> MachineFacts:
    """The box's facts that change a plan, read once at the CLI's edge and passed in from there."""
    return MachineFacts(
        flash_attn_installed=importlib.util.find_spec("flash_attn") is not None,
        varlen_attention=torch_file("nn/attention/varlen.py") is not None,
        liger_installed=importlib.util.find_spec("liger_kernel") is not None,
        fla_installed=importlib.util.find_spec("fla") is not None,
        bytecode_cache=bytecode_cache(environ),
        hub_offline=hub_offline(environ),
        use_hf=use_hf(environ),
    )


def installed_versions(names: list[str]) -> dict[str, str | None]:
    """Each package's installed version where it is also importable by this Python, else None."""
    found: dict[str, str | None] = {}
    for name in names:
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            version = None
        found[name] = version if version and importlib.util.find_spec(name.replace("-", "_")) is not None else None
    return found


def torch_file(name: str) -> Path | None:
    """A file inside this Python's torch package, found without importing torch (`plan` never does)."""
    try:
        spec = importlib.util.find_spec("torch")
    except (ImportError, ValueError):
        spec = None
    folders = list(spec.submodule_search_locations or []) if spec else []
    return next((Path(f) / name for f in folders if (Path(f) / name).is_file()), None)


def read_torch() -> TorchFacts:
    """torch's version and CUDA build, read from its torch/version.py without importing it: importing torch
    and starting CUDA in a child took ~2 s before every run's launch, and swift starts CUDA itself moments later."""
    version_file = torch_file("version.py")
    if version_file is None:
        return TorchFacts(version=None)
    values: dict[str, object] = {}
    try:
        for node in ast.parse(version_file.read_text(encoding="utf-8")).body:
            target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
            if isinstance(target, ast.Name) and isinstance(getattr(node, "value", None), ast.Constant):
                values[target.id] = node.value.value
    except (OSError, SyntaxError, UnicodeDecodeError):
        return TorchFacts(version=None)
    version, cuda = values.get("__version__"), values.get("cuda")
    return TorchFacts(version=str(version) if version else None, cuda=str(cuda) if cuda else None)


def prepare(options: JobOptions, machine: MachineFacts, *, for_run: bool, now: datetime | None = None) -> Job:
    """Read the recipe, model, data and devices that the options name, and plan for them on this machine."""
    recipe = load_recipe(options.recipe)
    original_model = recipe.model
    recipe = recipe.with_overrides(
        model=options.model,
        dataset=options.dataset,
        identity_name=_names("--name", options.name, recipe.identity_name),
        identity_author=_names("--author", options.author, recipe.identity_author),
        general_rows=options.general_rows,
    )
    recipe = with_tuner(recipe, options.tuner)
    recipe = recipe.with_knobs({knob.attribute: getattr(options, knob.attribute) for knob in KNOBS})
    use_hf = options.hub == "hf" if options.hub else machine.use_hf
    model = resolve_model(recipe.model, fetch=hub_fetcher(offline=machine.hub_offline, use_hf=use_hf))
    code = require_trust(model, options.trust_remote_code)
    inventory = inventory_for(options.gpus, for_run=for_run)
    if for_run:
        check_reachable(model, offline=machine.hub_offline)
        check_tokenizer(model)
    overridden = options.model is not None and not _same_model(options.model, original_model)
    name = run_name(recipe.name, model.source if overridden else None, options.node_rank)
    run_dir = next_run_dir(Path(options.output_dir), name, now or datetime.now())

    rows = None
    prompts: list[str] = []
    if recipe.dataset:
        dataset = load_dataset(recipe.dataset, hub_offline=machine.hub_offline)
        expected = expectations(
            list(dataset.rows), recipe.identity_name, recipe.identity_author,
            name_given=_given("--name", options.name), author_given=_given("--author", options.author),
        )  # fmt: skip
        general, prompts = general_mix(recipe.general_rows, options.general_rows, options.general_data, machine.hub_offline)
        measure, how = length_measure(recipe.system, model.tokenizer_file)
        rows, lengths, cut = _filled_and_measured(dataset, recipe, measure, how, options.cut_long_rows)
        if general is not None:
            more, more_lengths, more_cut = _filled_and_measured(general, recipe, measure, how, options.cut_long_rows)
            rows, lengths, cut = rows + more, lengths + more_lengths, cut + more_cut
        # The base model's answers are not known yet: each counts as its prompt and DISTILL_MAX_NEW_TOKENS.
        lengths += [measure(pair_row(p, "")) + DISTILL_MAX_NEW_TOKENS for p in prompts]
        data = DataSummary(
            n_rows=len(lengths), max_tokens=max(lengths), how=how, cut_rows=cut, total_tokens=sum(lengths),
            general_rows=len(general) if general is not None else 0, general_answers=len(prompts), lengths=tuple(lengths),
        )  # fmt: skip
        dataset_path = str(run_dir / "dataset.jsonl")
    elif for_run:
        raise DatasetError(f"recipe {recipe.name} names no dataset: pass --dataset FILE")
    else:
        data = DataSummary(n_rows=None, max_tokens=recipe.max_length, how="max_length")
        expected = expectations([], recipe.identity_name, recipe.identity_author)
        dataset_path = "DATASET.jsonl"
        if options.general_data:  # read all the same: a file named is a file checked
            general_mix(recipe.general_rows, options.general_rows, options.general_data, machine.hub_offline)

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
        packing=options.packing,
    )
    if options.hub:
        plan = replace(plan, hub=options.hub)
    if code:
        plan = replace(plan, warnings=(*plan.warnings, f"--trust-remote-code: this model's own code runs ({', '.join(code)})"))
    if untrained := flags_that_train_nothing(expected):
        plan = replace(plan, warnings=(*plan.warnings, untrained))
    return Job(plan=plan, rows=rows, run_dir=run_dir, expectations=tuple(expected), general_prompts=tuple(prompts))


def flags_that_train_nothing(expected: list[Expectation]) -> str | None:
    """--name/--author on data that writes its names out (no {{NAME}}/{{AUTHOR}} to fill): they change only what the
    check accepts; the model still learns the data's own names, and the check may pass on the other term alone."""
    replaced = [(flag, data) for e in expected for flag, given, data in (("--name", e.names, e.data_names),
                ("--author", e.authors, e.data_authors)) if data and not find_term(" ".join(data), given)]  # fmt: skip
    if not replaced:
        return None
    flags = " and ".join(dict.fromkeys(flag for flag, _ in replaced))
    taught = " / ".join(dict.fromkeys(terms[0] for _, terms in replaced))
    return (
        f"{flags} only {'change' if ' and ' in flags else 'changes'} what the identity check accepts: the data writes its names out (no {{{{NAME}}}} or "
        f"{{{{AUTHOR}}}} to fill), so the model learns {taught}; to teach another name write {{{{NAME}}}} in the "
        f"data, or drop {flags}"
    )


def _same_model(given: str, recipes: str) -> bool:
    """--model names the recipe's own model (its directory, or its hub id in any case, with or without Qwen/)."""
    paths = [Path(m).expanduser() for m in (given, recipes)]
    if all(p.exists() for p in paths):
        return paths[0].resolve() == paths[1].resolve()
    return given.lower().removeprefix("qwen/") == recipes.lower().removeprefix("qwen/")


def require_trust(model: ModelRef, trust_remote_code: bool) -> list[str]:
    """A model whose configs name code of its own (auto_map) runs only where this command line says
    --trust-remote-code, never because a file says so; the files that would run (none: [])."""
    folder = model.local_dir or model.files_dir or (Path(model.source) if Path(model.source).is_dir() else None)
    code = remote_code(folder) if folder else []
    if code and not trust_remote_code:
        raise ModelError(untrusted_code(model.source, code))
    return code


def untrusted_code(source: str, code: list[str]) -> str:
    return (
        f"model {source} has Python code of its own, which swift would run: {', '.join(code)}; read it, then pass "
        "--trust-remote-code to run it, or use a model without auto_map"
    )


def general_mix(
    recipe_count: int, flag_count: int | None, data: str | None, hub_offline: bool = False
) -> tuple[Dataset | None, list[str]]:
    """The general rows: --general-data FILE's rows (all of them, or the first --general-rows N), else the first
    N (--general-rows, or the recipe's general_rows) of the shipped prompts, for the base model to answer."""
    if data:
        general = load_dataset(data, hub_offline=hub_offline, what="--general-data")
        if flag_count == 0:
            raise UsageError(f"--general-rows 0 mixes nothing in, so --general-data {data} would not be used: drop one of them")
        if flag_count is not None and len(general) < flag_count:
            raise DatasetError(f"--general-data {data} has {len(general)} rows; --general-rows asks for {flag_count}")
        return replace(general, rows=general.rows[:flag_count]), []
    count = recipe_count if flag_count is None else flag_count
    if count == 0:
        return None, []
    prompts = shipped_general_prompts()
    if len(prompts) < count:
        raise UsageError(f"--general-rows {count}: qwen-tune ships {len(prompts)} general prompts; give --general-data FILE")
    return None, prompts[:count]


def _filled_and_measured(
    dataset: Dataset, recipe: Recipe, measure: Callable[[dict], int], how: str, cut: bool
) -> tuple[list[dict], list[int], int]:
    """A file's rows with the identity filled in (placeholders checked), fitted to max_length: rows, lengths, rows cut."""
    rows = fill_identity(dataset, recipe.identity_name, recipe.identity_author)
    return fit_to_max_length(f"{dataset.what} {dataset.path}", rows, recipe.max_length, measure, how, cut=cut)


def _names(flag: str, text: str | None, recipe: Bilingual) -> Bilingual | None:
    """--name Spark, or per language: --name zh=星火,en=Spark."""
    if text is None:
        return None
    try:
        return parse_bilingual(text, recipe)
    except ValueError as exc:
        raise UsageError(f"{flag} {text}: {exc}") from None


def _given(flag: str, text: str | None) -> dict[str, str]:
    """What the flag names, per language (nothing where it is not given)."""
    if text is None:
        return {}
    try:
        return given_languages(text)
    except ValueError as exc:
        raise UsageError(f"{flag} {text}: {exc}") from None
