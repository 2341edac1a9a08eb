"""The bad-input table: each case runs the real `qwen-tune` and must fail with one line, its own exit code,
and nothing written.

tests/test_bad_inputs.py checks every case; tools/error_table.py renders them as the README's
"When things go wrong" table. NVML and swift are stand-ins (tests/fakes), so a case gives the same
answer on any box, with GPUs or without, and can never train.
"""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FAKES = REPO / "tests" / "fakes"
TINY_CONFIG = (REPO / "tests" / "data" / "tiny-config" / "config.json").read_text(encoding="utf-8")
DEMO_RECIPE = (REPO / "configs" / "recipes" / "demo-tiny-cpu.yaml").read_text(encoding="utf-8")
# {tmp}/model: all that planning reads of a model (its config.json), and the tokenizer files `run` checks are there.
MODEL_FILES = {"config.json": TINY_CONFIG, "vocab.json": "{}\n", "merges.txt": "#version: 0.2\n"}
MODEL = {f"model/{name}": text for name, text in MODEL_FILES.items()}
# Each case starts on a box without a driver (FAKE_NVML unset), with a swift that only leaves a mark,
# and with none of the caller's settings for GPUs or the hub: a case sets its own.
CLEARED = ("FAKE_NVML", "CUDA_VISIBLE_DEVICES", "HF_HUB_OFFLINE", "PYTHONPATH", "XDG_RUNTIME_DIR", "QWEN_TUNE_API_KEY")


@dataclass(frozen=True)
class Case:
    what: str  # what went wrong, as the README's table says it
    code: int
    args: tuple[str, ...] = ()  # qwen-tune's arguments; {tmp} is the case's own directory
    files: dict[str, str | bytes] = field(default_factory=dict)  # written under {tmp} before it runs (text as UTF-8)
    env: dict[str, str] = field(default_factory=dict)
    # For what no run on a CPU box can show (a nearly full disk): raises the error in-process.
    raises: Callable[[Path], None] | None = None
    # A Python without ms-swift: a link to this one in a folder of its own (no `swift` beside it), with a stub
    # `swift` package first on its path (tests/fakes/no_swift: swift.command.swift_cli_dir finds no swift/cli).
    bare_python: bool = False
    # Another qwen-tune run (a process of its own, its pid shown as <pid>) holds the CPU's lock, in a TMPDIR beside {tmp}.
    cpu_held: bool = False
    fifos: tuple[str, ...] = ()  # named pipes made under {tmp} before it runs (no writer: reading one would block)
    # Makes what files alone cannot (a lock directory with other modes, a symlink) under {tmp} and the case's TMPDIR.
    prepare: Callable[[Path, Path], None] | None = None


@dataclass(frozen=True)
class Outcome:
    code: int
    stderr: str
    written: tuple[str, ...]  # what the run left under {tmp}, beyond the case's own files
    swift_ran: bool


def model_with(**fields: object) -> dict[str, str]:
    """MODEL with its config.json's fields changed (a field set to None is left out)."""
    config = {k: v for k, v in {**json.loads(TINY_CONFIG), **fields}.items() if v is not None}
    return {**MODEL, "model/config.json": json.dumps(config)}


def rows_jsonl(*rows: dict) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def run_tiny(*flags: str, recipe: str = "demo-tiny-cpu", model: str = "{tmp}/model", gpus: str | None = "cpu",
             output_dir: str = "{tmp}/runs") -> tuple[str, ...]:  # fmt: skip
    """`qwen-tune run` of the demo recipe on the tiny model's config (only config.json: nothing gets to load it)."""
    chosen = ("--gpus", gpus) if gpus else ()
    return ("run", "--recipe", recipe, "--model", model, *chosen, "--output-dir", output_dir, *flags)


def one_rtx4090(free_mib: int) -> dict[str, str]:
    """The environment for tests/fakes/pynvml.py to report one RTX 4090 with that much memory free."""
    gpu = {"name": "NVIDIA GeForce RTX 4090", "total_mib": 24564, "free_mib": free_mib, "cc": [8, 9]}
    return {"FAKE_NVML": json.dumps([gpu])}


def gpus(*cards: tuple[str, int], fakes: tuple[str, ...] = ("hide_gpu_extra", "cpu_torch")) -> dict[str, str]:
    """tests/fakes/pynvml.py reporting these cards (name, MiB), all free; and the import-edge fakes on PYTHONPATH:
    hide_gpu_extra (no deepspeed, no bitsandbytes), gpu_extra (both, as qwen-tune[gpu] installs them), cpu_torch."""
    nvml = [{"name": name, "total_mib": mib, "free_mib": mib - 300, "cc": [8, 6]} for name, mib in cards]
    path = os.pathsep.join([str(FAKES), *(str(FAKES / f) for f in fakes)])
    return {"FAKE_NVML": json.dumps(nvml), "PYTHONPATH": path}


# A YAML "billion laughs": nine aliases of nine aliases ..., 9**9 values once expanded.
ANCHOR_BOMB = "".join(
    [f"l0: &l0 [{', '.join(['lol'] * 9)}]\n"] + [f"l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * 9)}]\n" for n in range(1, 9)]
)
TWO_28GB = (("NVIDIA Test GPU 28GB", 28672),) * 2  # Qwen3-14B in bf16 fits two only sharded: ZeRO-3
RTX3080TI = (("NVIDIA GeForce RTX 3080 Ti", 12288),)


def _disk_too_small(tmp: Path) -> None:
    """The 7B recipe's run against 100 MiB free: only shutil.disk_usage's answer is made up."""
    from qwen_tune.machine.gpus import MIB
    from qwen_tune.planning.dataset import jsonl_bytes
    from qwen_tune.planning.jobs import JobOptions, prepare
    from qwen_tune.planning.plan import MachineFacts
    from qwen_tune.planning.planner import disk_bytes_needed
    from qwen_tune.running.rundir import check_disk_space

    job = prepare(JobOptions(gpus="h100", output_dir=str(tmp / "runs")), MachineFacts(), for_run=False)
    check_disk_space(disk_bytes_needed(job.plan, jsonl_bytes(job.rows)), tmp / "runs", free_bytes=lambda path: 100 * MIB)


REMOTE_CODE_CONFIG = json.dumps(
    {**json.loads(TINY_CONFIG), "auto_map": {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}}
)


def _lock_dir_shared(tmp: Path, tmpdir: Path) -> None:
    """The lock directory as qwen-tune made it before: world-writable, where another user could plant a lock file."""
    locks = tmpdir / f"qwen-tune-locks-{os.getuid()}"
    locks.mkdir()
    locks.chmod(0o777)


def _lock_dir_linked(tmp: Path, tmpdir: Path) -> None:
    """Another user made the lock directory first, as a link to a directory of theirs."""
    (tmp / "theirs").mkdir()
    (tmpdir / f"qwen-tune-locks-{os.getuid()}").symlink_to(tmp / "theirs")


def _lock_file_linked(tmp: Path, tmpdir: Path) -> None:
    """The CPU's lock file is a link to a file of the user's, which a lock must never truncate or write."""
    (tmp / "notes.txt").write_text("mine\n")
    locks = tmpdir / f"qwen-tune-locks-{os.getuid()}"
    locks.mkdir(mode=0o700)
    (locks / "cpu.lock").symlink_to(tmp / "notes.txt")


CASES = (
    Case("`--gpus` names no card qwen-tune knows", 2, ("plan", "--gpus", "3xfoo")),
    Case("`--profile` names no profile", 2, ("plan", "--gpus", "h100", "--profile", "huge")),
    Case("a flag qwen-tune does not have", 2, ("plan", "--gpu", "h100")),
    Case("`--gpus` has a negative index", 2, ("plan", "--gpus", "-1")),
    Case("`--gpus` has an empty item", 2, ("plan", "--gpus", "0,")),
    Case("`--gpus` is empty", 2, ("plan", "--gpus", "")),
    Case("`--output-dir` is empty", 2, ("plan", "--gpus", "h100", "--output-dir", "")),
    Case("`--gpus` names a GPU twice", 2, ("plan", "--gpus", "0,0")),
    Case("`--name`, `--author`, `--dataset`, `--model`, `--recipe` ... is empty", 2, ("plan", "--gpus", "h100", "--name", "")),
    Case("`--name` or `--author` names a language other than zh/en", 2, ("plan", "--gpus", "h100", "--name", "fr=Étincelle")),
    Case("`--name` or `--author` names a language twice", 2, ("plan", "--gpus", "h100", "--author", "zh=北辰,ZH=北辰实验室")),
    Case("`--name` or `--author` holds a placeholder, not a name", 2, ("plan", "--gpus", "h100", "--name", "{{NAME}}")),
    Case("`plan --slurm` with a flag it would drop", 2, ("plan", "--slurm", "--gpus", "h100", "--nnodes", "2", "--json")),
    Case("`plan --slurm` without `--gpus` (a login node's cards are not the job's)", 2, ("plan", "--slurm", "--nnodes", "2")),
    Case(
        "`--learning-rate` (or `--epochs`, `--lora-rank` ...) out of range", 2, ("plan", "--gpus", "h100", "--learning-rate", "3")
    ),
    Case(
        "`--lora-rank` on a full fine-tuning job",
        2,
        ("plan", "--gpus", "h100", "--recipe", "self-cognition-qwen3-8b-full", "--lora-rank", "16"),
    ),
    Case(
        "`--resume` with flags that would change the run",
        2,
        ("run", "--resume", "{tmp}/runs/x", "--epochs", "3", "--name", "Spark"),
    ),
    Case("`--resume` names no run directory", 2, ("run", "--resume", "{tmp}/runs/20261123-120000-demo")),
    Case("`export` names no finished run", 2, ("export", "{tmp}/runs/20261123-120000-demo")),
    Case(
        "`--resume` of a run whose run.json was edited",
        2,
        ("run", "--resume", "{tmp}/runs/20261123-120000-demo"),
        {"runs/20261123-120000-demo/run.json": '{"plan": {"recipe": "x"}, "verify": true}\n'},
    ),
    Case(
        "`--resume` of a run whose run.json was cut short",
        2,
        ("run", "--resume", "{tmp}/runs/20261123-120000-demo"),
        {"runs/20261123-120000-demo/run.json": '{"plan": {"recipe": {"name": "demo'},
    ),
    Case(
        "`--resume` of a run whose result.json was cut short",
        2,
        ("run", "--resume", "{tmp}/runs/20261123-120000-demo"),
        {"runs/20261123-120000-demo/run.json": "{}\n", "runs/20261123-120000-demo/result.json": '{"status": "do'},
    ),
    Case(
        "`export` of a checkpoint (or the runs folder), not its run directory",
        2,
        ("export", "{tmp}/runs/20261123-120000-demo/swift/checkpoint-10"),
        {"runs/20261123-120000-demo/run.json": "{}\n", "runs/20261123-120000-demo/swift/checkpoint-10/adapter_config.json": "{}"},
    ),
    Case("`serve` beyond loopback without `--api-key`", 2, ("serve", "{tmp}/runs/20261123-120000-demo", "--host", "0.0.0.0")),
    Case(
        "`serve` with a blank or short `--api-key`",
        2,
        ("serve", "{tmp}/runs/20261123-120000-demo", "--host", "0.0.0.0", "--api-key", " "),
    ),
    Case(
        "the dataset is not valid JSON",
        10,
        run_tiny("--dataset", "{tmp}/data.jsonl"),
        {**MODEL, "data.jsonl": '{"query": "Who are you?", "response": "I am {{NAME}}."}\n{"query": "Who made you?",\n'},
    ),
    Case("the dataset is empty", 10, run_tiny("--dataset", "{tmp}/data.jsonl"), {**MODEL, "data.jsonl": "\n"}),
    Case(
        "a row is in none of the shapes qwen-tune reads",
        10,
        run_tiny("--dataset", "{tmp}/data.jsonl"),
        {**MODEL, "data.jsonl": '{"prompt": "Who are you?", "completion": "I am {{NAME}}."}\n'},
    ),
    Case(
        "a row mixes two shapes",
        10,
        run_tiny("--dataset", "{tmp}/data.jsonl"),
        {**MODEL, "data.jsonl": rows_jsonl({"instruction": "Who are you?", "output": "I am {{name}}.", "response": "Hi."})},
    ),
    Case(
        "a system message mid-conversation",
        10,
        run_tiny("--dataset", "{tmp}/data.jsonl"),
        {
            **MODEL,
            "data.jsonl": rows_jsonl(
                {"query": "Who are you?", "response": "I am {{NAME}}."},
                {
                    "messages": [
                        {"role": "user", "content": "Hi"},
                        {"role": "system", "content": "Be {{NAME}}."},
                        {"role": "assistant", "content": "Hello."},
                    ]
                },  # fmt: skip
            ),
        },
    ),
    Case(
        "a row has images, for a text model",
        10,
        run_tiny("--dataset", "{tmp}/data.jsonl"),
        {**MODEL, "data.jsonl": rows_jsonl({"query": "<image>Who is this?", "response": "{{NAME}}.", "images": ["me.png"]})},
    ),
    Case(
        "the dataset nests JSON 100,000 deep",
        10,
        run_tiny("--dataset", "{tmp}/data.jsonl"),
        {**MODEL, "data.jsonl": '{"query": "Hi", "response": "Hi."}\n' + "[" * 100_000 + "]" * 100_000 + "\n"},
    ),
    Case("the dataset is a named pipe (FIFO)", 10, run_tiny("--dataset", "{tmp}/data.jsonl"), MODEL, fifos=("data.jsonl",)),
    Case("the dataset is a device (`/dev/zero`)", 10, run_tiny("--dataset", "/dev/zero"), MODEL),
    Case(
        "a hub dataset id while offline",
        10,
        run_tiny("--dataset", "AI-ModelScope/alpaca-gpt4-data-zh"),
        MODEL,
        {"HF_HUB_OFFLINE": "1"},
    ),
    Case("`--general-data` does not exist", 10, run_tiny("--general-data", "{tmp}/general.jsonl"), MODEL),
    Case(
        "`--general-rows 0` with `--general-data`",
        2,
        run_tiny("--general-rows", "0", "--general-data", "{tmp}/general.jsonl"),
        {**MODEL, "general.jsonl": rows_jsonl({"query": "2+2?", "response": "4"})},
    ),
    Case(
        "a placeholder is left unfilled",
        10,
        run_tiny("--dataset", "{tmp}/data.jsonl"),
        {**MODEL, "data.jsonl": '{"query": "Who made you?", "response": "{{AUTHOUR}} made me."}\n'},
    ),
    Case(
        "a placeholder in the wrong case or braces",
        10,
        run_tiny("--dataset", "{tmp}/data.jsonl"),
        {**MODEL, "data.jsonl": '{"query": "Who are you?", "response": "I am {{ name }}."}\n'},
    ),
    Case(
        "a row is longer than `max_length`",
        10,
        run_tiny("--dataset", "{tmp}/data.jsonl"),
        {
            **MODEL,
            "data.jsonl": '{"query": "Hi", "response": "Hi."}\n' + json.dumps({"query": "la " * 900, "response": "ok"}) + "\n",
        },
    ),
    Case(
        "a row is longer than any `--max-length`",
        10,
        run_tiny("--dataset", "{tmp}/data.jsonl"),
        {**MODEL, "data.jsonl": json.dumps({"query": "la " * 160_000, "response": "ok"}) + "\n"},
    ),
    Case(
        "the dataset is not UTF-8",
        10,
        run_tiny("--dataset", "{tmp}/data.jsonl"),
        {**MODEL, "data.jsonl": b'{"query": "Hi", "response": "Hi."}\n{"query": "Caf\xe9?", "response": "Oui."}\n'},
    ),
    Case(
        "the dataset is one JSON object, not rows",
        10,
        run_tiny("--dataset", "{tmp}/data.json"),
        {**MODEL, "data.json": '{"data": [{"query": "Who are you?", "response": "I am {{NAME}}."}]}\n'},
    ),
    Case(
        "a row's query or response is not text",
        10,
        run_tiny("--dataset", "{tmp}/data.jsonl"),
        {**MODEL, "data.jsonl": '{"query": 42, "response": "The answer."}\n'},
    ),
    Case("`--dataset` is a directory", 10, run_tiny("--dataset", "{tmp}/model"), MODEL),
    Case("the model directory does not exist", 11, run_tiny()),
    Case("the model directory has no tokenizer", 11, run_tiny(), {"model/config.json": TINY_CONFIG}),
    Case("`config.json` says `num_attention_heads: 0`", 11, run_tiny(), model_with(num_attention_heads=0)),
    Case("`config.json` is not a JSON object", 11, run_tiny(), {**MODEL, "model/config.json": "[1, 2]\n"}),
    Case("the model's `tokenizer.json` is broken", 11, run_tiny(), {**MODEL, "model/tokenizer.json": '{"model": 1}\n'}),
    Case(
        "the model's config names code of its own (`auto_map`)",
        11,
        run_tiny(),
        {"model/config.json": REMOTE_CODE_CONFIG, "model/modeling_evil.py": "open('/tmp/pwned', 'w')\n"},
    ),
    Case(
        "a hub id while offline (`HF_HUB_OFFLINE=1`)",
        11,
        run_tiny(model="Qwen/Qwen2.5-0.5B-Instruct"),
        env={"HF_HUB_OFFLINE": "1"},
    ),
    Case(
        "an unknown hub id, the hub unreachable",
        11,
        ("plan", "--model", "someone/qwen-finetune", "--gpus", "rtx4090"),
        env={"USE_HF": "1", "HF_ENDPOINT": "http://127.0.0.1:9"},
    ),
    Case(
        "the recipe has an unknown field",
        12,
        run_tiny(recipe="{tmp}/recipe.yaml"),
        {**MODEL, "recipe.yaml": DEMO_RECIPE.replace("  epochs: 40\n", "  epochs: 40\n  epoch: 3\n")},
    ),
    Case(
        "a recipe value is out of range",
        12,
        run_tiny(recipe="{tmp}/recipe.yaml"),
        {**MODEL, "recipe.yaml": DEMO_RECIPE.replace("learning_rate: 3.0e-3", "learning_rate: 3")},
    ),
    Case(
        "several recipe mistakes (all said at once)",
        12,
        run_tiny(recipe="{tmp}/recipe.yaml"),
        {
            **MODEL,
            "recipe.yaml": DEMO_RECIPE.replace("epochs: 40", "epoch: 40")
            .replace("rank: 64", "rank: 0")
            .replace("system:", "sytem:"),
        },
    ),
    Case(
        "the recipe's `target_modules` is no module name",
        12,
        run_tiny(recipe="{tmp}/recipe.yaml"),
        {
            **MODEL,
            "recipe.yaml": DEMO_RECIPE.replace("target_modules: all-linear", "target_modules: --custom_register_path=x.py"),
        },
    ),
    Case(
        "the recipe's system prompt holds a placeholder",
        12,
        run_tiny(recipe="{tmp}/recipe.yaml"),
        {
            **MODEL,
            "recipe.yaml": DEMO_RECIPE.replace("system: You are a helpful assistant.", "system: '{{NAME}}, by {{AUTHOR}}'"),
        },
    ),
    Case(
        "the recipe gives a field twice",
        12,
        run_tiny(recipe="{tmp}/recipe.yaml"),
        {**MODEL, "recipe.yaml": DEMO_RECIPE.replace("  epochs: 40\n", "  epochs: 1\n  epochs: 400\n")},
    ),
    Case(
        "a YAML anchor bomb in the recipe",
        12,
        run_tiny(recipe="{tmp}/recipe.yaml"),
        {**MODEL, "recipe.yaml": ANCHOR_BOMB + DEMO_RECIPE.replace("description: a tiny", "description: *l8\nnote: a tiny")},
    ),
    Case(
        "a YAML alias inside the value it names",
        12,
        run_tiny(recipe="{tmp}/recipe.yaml"),
        {**MODEL, "recipe.yaml": DEMO_RECIPE.replace("description: a tiny", "description: &d [*d]\nnote: a tiny")},
    ),
    Case(
        "the recipe's name is no safe name for a directory",
        12,
        run_tiny(recipe="{tmp}/recipe.yaml"),
        {**MODEL, "recipe.yaml": DEMO_RECIPE.replace("name: demo-tiny-cpu", "name: x/../../../ESCAPED")},
    ),
    Case("no recipe of that name", 12, run_tiny(recipe="self-cognition")),
    Case(
        "the recipe is not UTF-8",
        12,
        run_tiny(recipe="{tmp}/recipe.yaml"),
        {**MODEL, "recipe.yaml": DEMO_RECIPE.encode().replace(b"description: a tiny random", b"description: a tiny r\xe9ndom")},
    ),
    Case("a shipped recipe named as a file", 12, run_tiny(recipe="demo-tiny-cpu.yaml"), MODEL),
    Case("`--recipe` is a directory", 12, run_tiny(recipe="{tmp}/model"), MODEL),
    Case("`--gpus` names a GPU this box lacks", 13, run_tiny(gpus="0,1"), MODEL, one_rtx4090(free_mib=24000)),
    Case(
        "`CUDA_VISIBLE_DEVICES` names no GPU",
        13,
        run_tiny(gpus=None),
        MODEL,
        {**one_rtx4090(free_mib=24000), "CUDA_VISIBLE_DEVICES": "2"},
    ),
    Case("no NVIDIA driver (NVML)", 14, ("gpus",)),
    Case(
        "NVML cannot say how much memory a GPU has",
        14,
        ("gpus",),
        env={**one_rtx4090(free_mib=24000), "FAKE_NVML_UNSUPPORTED": "nvmlDeviceGetMemoryInfo"},
    ),
    Case("`--output-dir` cannot be written", 15, run_tiny(output_dir="{tmp}/notes.txt/runs"), {**MODEL, "notes.txt": "mine\n"}),
    Case("`--output-dir` is a virtual filesystem", 15, run_tiny(output_dir="/proc/qwen-tune-runs"), MODEL),
    Case("the disk is too small for the checkpoints", 16, raises=_disk_too_small),
    Case("another program fills the GPU", 17, run_tiny(gpus="0"), MODEL, one_rtx4090(free_mib=100)),
    Case("another qwen-tune run trains on the CPU", 17, run_tiny(), MODEL, cpu_held=True),
    Case("the lock directory can be written by other users", 22, run_tiny(), MODEL, prepare=_lock_dir_shared),
    Case("the lock directory is a symbolic link", 22, run_tiny(), MODEL, prepare=_lock_dir_linked),
    Case("a lock file is a symbolic link (to a file of yours)", 22, run_tiny(), MODEL, prepare=_lock_file_linked),
    Case("the model fits no profile on these GPUs", 18, ("plan", "--gpus", "4GiB")),
    Case("ms-swift is not installed", 19, run_tiny(), MODEL, {"PATH": "/usr/bin:/bin"}, bare_python=True),
    Case(
        "ZeRO-3 on two GPUs without deepspeed",
        20,
        ("run", "--recipe", "self-cognition-qwen3-14b", "--profile", "multi-gpu", "--output-dir", "{tmp}/runs"),
        env=gpus(*TWO_28GB),
    ),
    Case("QLoRA on a 12 GB card without bitsandbytes", 20, ("run", "--output-dir", "{tmp}/runs"), env=gpus(*RTX3080TI)),
    Case(
        "NVML sees GPUs, torch is a CPU-only build",
        21,
        ("run", "--recipe", "self-cognition-qwen3-14b", "--profile", "multi-gpu", "--output-dir", "{tmp}/runs"),
        env=gpus(*TWO_28GB, fakes=("gpu_extra", "cpu_torch")),
    ),
)


def run_case(case: Case, tmp: Path) -> Outcome:
    """Run one case in its own empty directory tmp, with its own TMPDIR beside it (its locks are its own), and see what
    it printed, returned and left."""
    for name, text in case.files.items():
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / name).write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    for name in case.fifos:
        os.mkfifo(tmp / name)
    tmpdir = tmp.parent / f"{tmp.name}.tmpdir"
    tmpdir.mkdir(exist_ok=True)
    if case.prepare is not None:
        case.prepare(tmp, tmpdir)
    before = _tree(tmp)
    swift_mark = tmp.parent / f"{tmp.name}.swift-ran"
    if case.raises is not None:
        code, stderr = _raise_in_process(case.raises, tmp)
    else:
        env = {k: v for k, v in os.environ.items() if k not in CLEARED}
        env.update(PYTHONPATH=str(FAKES), PATH=f"{FAKES / 'bin'}{os.pathsep}{env.get('PATH', '')}", TMPDIR=str(tmpdir))
        env.update(FAKE_SWIFT_RAN=str(swift_mark), **case.env)
        python = sys.executable
        if case.bare_python:
            python = str(tmp.parent / f"{tmp.name}.bin" / "python")
            Path(python).parent.mkdir()
            os.symlink(sys.executable, python)
            # A link outside a virtualenv starts its base Python: hand it this one's packages.
            env["PYTHONPATH"] = os.pathsep.join([str(FAKES / "no_swift"), env["PYTHONPATH"], *site.getsitepackages()])
        argv = [python, "-m", "qwen_tune", *(arg.replace("{tmp}", str(tmp)) for arg in case.args)]
        with _cpu_held(env, tmp) if case.cpu_held else nullcontext() as holder:
            done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
        code, stderr = done.returncode, done.stderr
        if holder is not None:
            stderr = stderr.replace(f"pid {holder}", "pid <pid>")
    written = tuple(sorted(str(p.relative_to(tmp)) for p in _tree(tmp) - before))
    return Outcome(code=code, stderr=_stable(stderr, tmp), written=written, swift_ran=swift_mark.exists())


@contextmanager
def _cpu_held(env: dict[str, str], tmp: Path) -> Iterator[int]:
    """Another run holding the CPU's lock, as `qwen-tune run --gpus cpu` does while it trains; yields its pid.
    The case and the holder share a TMPDIR of their own, so a real run's lock on this box plays no part."""
    with lock_held([], env=env) as pid:
        yield pid


@contextmanager
def lock_held(indices: list[int], *, env: dict[str, str] | None = None, lock_dir: Path | None = None) -> Iterator[int]:
    """Another qwen-tune run, in a process of its own, holding these GPUs' locks (the CPU's for none); yields its pid.
    Its lock directory is the one its TMPDIR gives, or lock_dir."""
    point = f"locks.LOCK_DIR = Path({str(lock_dir)!r}); " if lock_dir else ""
    hold = (f"import time; from pathlib import Path; from qwen_tune.running import locks; {point}"
            f"ctx = locks.run_locks({indices!r}, 'runs/other'); ctx.__enter__(); print('held', flush=True); time.sleep(60)")  # fmt: skip
    holder = subprocess.Popen([sys.executable, "-c", hold], env=env, cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        yield holder.pid
    finally:
        holder.kill()
        holder.wait()


def _raise_in_process(raises: Callable[[Path], None], tmp: Path) -> tuple[int, str]:
    from qwen_tune.cli import error_line
    from qwen_tune.errors import UserError

    try:
        raises(tmp)
    except UserError as error:
        return error.exit_code, error_line(error) + "\n"
    return 0, ""


def _tree(root: Path) -> set[Path]:
    return set(root.rglob("*"))


def _stable(text: str, tmp: Path) -> str:
    """The same text on every box: the Python, the case's directory and the checkout become <python>, <tmp>, <repo>."""
    bare = tmp.parent / f"{tmp.name}.bin" / "python"
    # The Python first: in a virtualenv under the checkout, it would otherwise read <repo>/.venv/bin/python.
    tmpdir = tmp.parent / f"{tmp.name}.tmpdir"
    for path, name in (
        (bare, "<python>"),
        (sys.executable, "<python>"),
        (tmpdir.resolve(), "<tmpdir>"),
        (tmpdir, "<tmpdir>"),
        (tmp.resolve(), "<tmp>"),
        (tmp, "<tmp>"),
        (REPO, "<repo>"),
    ):
        text = text.replace(str(path), name)
    return text.replace(f"qwen-tune-locks-{os.getuid()}", "qwen-tune-locks-<uid>").replace(f"uid {os.getuid()}", "uid <uid>")
