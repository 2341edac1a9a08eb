"""Compile swift's imports into qwen-tune's bytecode cache at install time, not in a fresh box's first run.

Where Python writes no bytecode (container images set PYTHONDONTWRITEBYTECODE and ship no .pyc), swift runs with
PYTHONPYCACHEPREFIX=jobs.bytecode_cache (command.sft_env): the first run filled that cache, compiling ~11 s of
imports on the GPU box. `make install` runs this, so the install pays it instead:

    python -m qwen_tune.swift.bytecode [--packages swift,transformers]

It does nothing where Python writes bytecode (pip compiled the packages) or PYTHONPYCACHEPREFIX is the user's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from qwen_tune.planning.jobs import bytecode_cache
from qwen_tune.swift.command import swift_cli_dir

# What `swift sft` (its launcher swift/cli/main.py, then swift/cli/sft.py) and `swift infer` (swift/cli/infer.py,
# and our preloaded infer_worker) import before they start work.
SWIFT_IMPORTS = "import swift.cli.main, swift.cli.utils, swift.ray_utils; from swift.pipelines import infer_main, sft_main"
# Imported only when a plan turns them on (deps.GPU_EXTRA, the attention): compiled where installed.
LATER = ("deepspeed", "bitsandbytes", "flash_attn")
# The first child imports swift, so its imports land in the cache as a run's would, and lists every module
# that came from a .py file, with the packages above that are installed.
LIST_MODULES = f"""{SWIFT_IMPORTS}
import importlib.util, json, sys
files = {{name: getattr(module, "__file__", None) for name, module in list(sys.modules.items())}}
files.update((name, spec.origin) for name in sys.argv[1:] if (spec := importlib.util.find_spec(name)))
print(json.dumps({{name: f for name, f in files.items() if isinstance(f, str) and f.endswith(".py")}}))
"""
# The second compiles the rest of those packages (the model's modeling file, peft's tuners, the trainer's
# internals come later in a run), leaving out their test suites, which no run imports. compileall writes
# into sys.pycache_prefix, which PYTHONPYCACHEPREFIX sets; TIMESTAMP is what imports write and check.
COMPILE = r"""
import compileall, os, py_compile, re, sys
for root in sys.argv[1:]:
    if root.endswith(".py"):
        compileall.compile_file(root, quiet=2, invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP)
    else:
        tests = re.compile(re.escape(root + os.sep) + r"(.*[/\\])?tests?[/\\]")
        compileall.compile_dir(root, quiet=2, workers=0, rx=tests, invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP)
"""


class NotWarmed(Exception):
    """A one-line reason nothing was compiled; the install goes on, and the first run compiles instead."""


@dataclass(frozen=True)
class Warmed:
    files: int  # .pyc files in the cache afterwards
    mib: float  # their size
    seconds: float  # both children, wall time


def package_root(name: str, file: str) -> str | None:
    """The directory of module NAME's top-level package (the file, for a top-level module), from its __file__;
    None where the file is not where the name says (aliases such as os.path or requests.packages.urllib3)."""
    parts, path = name.split("."), Path(file)
    if not path.is_absolute():
        return None
    if len(parts) == 1 and path.name != "__init__.py":
        return file if path.stem == name else None
    up = len(parts) - 1 if path.name == "__init__.py" else len(parts) - 2
    if (path.name != "__init__.py" and path.stem != parts[-1]) or up >= len(path.parents):
        return None
    root = path.parents[up]
    return str(root) if root.name == parts[0] else None


def package_roots(files: Mapping[str, str], stdlib: Iterable[str], only: Iterable[str] | None = None) -> list[str]:
    """The top-level packages to compile whole: those outside the standard library (site-packages, PYTHONPATH).

    The standard library's modules that swift imports are compiled by the first child's import itself (with a
    prefix, Python ignores the __pycache__ beside the sources); the rest of it (tkinter, idlelib, its tests) no
    run imports. ONLY: these top-level names alone (the test's knob).
    """
    skip = {os.path.normpath(d) for d in stdlib}
    wanted = set(only) if only is not None else None
    roots = set()
    for name, file in files.items():
        root = package_root(name, file)
        if root and os.path.dirname(root) not in skip and (wanted is None or name.split(".")[0] in wanted):
            roots.add(root)
    return sorted(roots)


def run_child(code: str, args: list[str], cache: str) -> str:
    """Run CODE in a child of this Python that writes bytecode into CACHE, as swift's processes do; its stdout."""
    # command.sft_env's two variables; cwd: the cache, where no stray module shadows one of swift's
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "", "PYTHONPYCACHEPREFIX": cache}
    done = subprocess.run([sys.executable, "-c", code, *args], env=env, cwd=cache, capture_output=True, text=True)
    if done.returncode != 0:
        last = next((line for line in reversed(done.stderr.splitlines()) if line.strip()), f"exit {done.returncode}")
        raise NotWarmed(f"could not compile swift's imports ({last.strip()}): the first run compiles them instead")
    return done.stdout


def warm(cache: str, only: Iterable[str] | None = None) -> Warmed:
    """Fill CACHE with the bytecode of everything swift imports, and of the packages it imports from."""
    if swift_cli_dir() is None:
        raise NotWarmed(f"{sys.executable} cannot import swift: nothing to compile into {home_short(cache)}")
    start = time.monotonic()
    try:
        os.makedirs(cache, exist_ok=True)
    except OSError as e:
        why = f"cannot make the bytecode cache {home_short(cache)} ({e.strerror}): the first run compiles instead"
        raise NotWarmed(why) from None
    listed = run_child(LIST_MODULES, list(LATER), cache).strip().splitlines()
    try:
        files = json.loads(listed[-1])
    except (IndexError, ValueError):
        raise NotWarmed("swift's import listed no modules: the first run compiles them instead") from None
    paths = sysconfig.get_paths()
    run_child(COMPILE, package_roots(files, [paths["stdlib"], paths["platstdlib"]], only), cache)
    pyc = [Path(d, f) for d, _, names in os.walk(cache) for f in names if f.endswith(".pyc")]
    return Warmed(files=len(pyc), mib=sum(p.stat().st_size for p in pyc) / 2**20, seconds=time.monotonic() - start)


def home_short(path: str) -> str:
    """PATH with the home directory written as ~, as the README and the plan's readers know it."""
    home = os.path.expanduser("~")
    return "~" + path[len(home) :] if home != "/" and (path == home or path.startswith(home + os.sep)) else path


def main(argv: list[str] | None = None) -> int:
    """One line, and exit 0 whatever happens: the install must not fail because of this."""
    parser = argparse.ArgumentParser(prog="python -m qwen_tune.swift.bytecode", description=__doc__.splitlines()[0])
    parser.add_argument("--packages", help="compile only these top-level packages whole, comma-separated (default: all)")
    args = parser.parse_args(argv)
    cache = bytecode_cache(os.environ)
    if cache is None:
        return 0  # Python writes bytecode: pip compiled the packages
    try:
        warmed = warm(cache, args.packages.split(",") if args.packages else None)
    except NotWarmed as e:
        print(f"qwen-tune: {e}")
        return 0
    except OSError as e:  # the cache's disk, say: still one line
        print(f"qwen-tune: could not compile swift's imports into {home_short(cache)} ({e}): the first run compiles them instead")
        return 0
    print(
        f"qwen-tune: compiled swift's imports into {home_short(cache)} ({warmed.files} files, {warmed.mib:.0f} MiB, "
        f"{warmed.seconds:.1f} s): a fresh box's first run starts as fast as the next"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
