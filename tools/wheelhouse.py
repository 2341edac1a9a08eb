#!/usr/bin/env python3
"""Build an offline wheelhouse for an air-gapped GPU box that already has Python and torch.

    python tools/wheelhouse.py --freeze BOX_FREEZE.txt [--python 3.12] [--out wheelhouse]
        [--extras gpu] [--platform manylinux_2_34_x86_64 ...]
    python tools/wheelhouse.py --freeze BOX_FREEZE.txt --peer unsloth --out wheelhouse-unsloth

The box's torch and CUDA stack must stay as they are, so pip resolves ms-swift and qwen-tune for
the box's Python and platform with the box's `pip freeze` as constraints and an empty stub torch
wheel standing in for the real one. Only wheels that the box lacks, or has at another version,
are shipped, plus qwen-tune's own wheel and MANIFEST.txt. On the box:

    pip install --no-index --no-deps --upgrade --target SITE wheelhouse/*.whl
    PYTHONPATH=SITE PATH=SITE/bin:$PATH qwen-tune run ...

`--peer unsloth` builds the wheels of the fastest peer instead (Unsloth, for `make bench`'s side-by-side job):
resolved on their own, since Unsloth needs trl>=1 and ms-swift trl<1, and installed on the box into a folder
of their own that only the bench's peer process puts on its path, never the user's.

--upgrade matters: rouge ships a top-level package named `bin`; without --upgrade, pip --target keeps
it and drops the console scripts (`swift` among them). Building needs PyPI, and torch here for deepspeed.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import importlib.util
import json
import operator
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from urllib.parse import unquote, urlparse

REPO = Path(__file__).resolve().parents[1]
SWIFT = "ms-swift==4.6.0"
# Known extras, pinned so that a wheelhouse can be rebuilt identically; `name==version` overrides.
EXTRAS = {"deepspeed": "deepspeed==0.19.8", "bitsandbytes": "bitsandbytes==0.50.2", "fla-core": "fla-core==0.6.0",
          "liger-kernel": "liger-kernel==0.8.5"}  # fmt: skip
# Pure-Python packages that PyPI has only as sdists: built here. crcmod's C extension is optional,
# and CC=false makes its setup.py fall back to a pure wheel that any CPython can use.
SDIST_ONLY = {"oss2": "2.19.1", "transformers-stream-generator": "0.0.5", "crcmod": "1.7"}
# Box pins that clash with ms-swift 4.6 (peft<0.21, datasets' fsspec<=2026.2.0), plus torch, which
# is re-pinned to the stub's version. nvidia-*/cuda-* are dropped too, except the NVML binding.
UNPINNED = {"peft", "fsspec", "torch"}
UNPINNED_PREFIXES = ("nvidia-", "cuda-")
KEPT_PINNED = {"nvidia-ml-py"}  # qwen-tune and deepspeed need it; the box's version satisfies both


# The peers `make bench` can run beside qwen-tune, pinned as measured (shared/measurements/2026-12-05-h100-peer).
PEERS = {"unsloth": ["unsloth==2026.10.9", "unsloth-zoo==2026.10.9"]}
# Requirements of a peer that the box must not get from us: stubs satisfy the resolver and are never shipped.
# xformers: Unsloth uses it only where installed (SDPA otherwise, as measured); its wheel is ~100 MiB.
PEER_STUBS = {"unsloth": {"xformers": "0.0.33"}}
# Box pins a peer cannot live with (Unsloth asks certifi>=2026.10.19; its datasets fsspec<=2026.2.0); the box's peft 0.21 stays.
PEER_UNPINNED = {"unsloth": frozenset({"torch", "certifi", "fsspec"})}
# Parts of a peer's wheel that training never imports: Unsloth's wheel carries its web UI (studio/, 60 of its 88 MiB).
PEER_UNUSED_FOLDERS = {"unsloth": ("studio/",)}


class WheelhouseError(Exception):
    """A one-line reason the wheelhouse could not be built."""


def normalize(name: str) -> str:
    """PEP 503 name, so that the freeze's `PyYAML`/`typing_extensions` match pip's `pyyaml`/`typing-extensions`."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_freeze(text: str) -> dict[str, str]:
    """`pip freeze` text -> {normalized name: version}; editable and URL lines can't be pinned, so skip."""
    pins = {}
    for line in text.splitlines():
        m = re.match(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^\s;#]+)", line)
        if m:
            pins[normalize(m.group(1))] = m.group(2)
    return pins


def constraint_lines(freeze: dict[str, str], unpinned_names: frozenset[str] = frozenset(UNPINNED)) -> list[str]:
    """The box's pins minus those that would block ms-swift (or a peer), with torch pinned to the stub's version."""

    def unpinned(name: str) -> bool:
        return name not in KEPT_PINNED and (name in unpinned_names or name.startswith(UNPINNED_PREFIXES))

    lines = [f"{name}=={version}" for name, version in sorted(freeze.items()) if not unpinned(name)]
    return lines + [f"torch=={freeze['torch'].split('+')[0]}"]  # 2.11.0+cu130 -> the stub's 2.11.0


def requirement_name(spec: str) -> str:
    """`ms-swift>=4.6,<4.7` -> `ms-swift`: which package a requirement is about."""
    return normalize(re.split(r"[\s<>=!~;\[(@]", spec, maxsplit=1)[0])


def project_requirements(pyproject: Path) -> list[str]:
    """qwen-tune's runtime deps from pyproject.toml, without torch (the box has its own)."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        raise WheelhouseError("run this with Python 3.11 or newer (it reads pyproject.toml with tomllib)") from None
    deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    return [d for d in deps if requirement_name(d) != "torch"]


def gpu_extra(pyproject: Path) -> list[str]:
    """The names in pyproject's `gpu` extra: what `make run` installs on a GPU box (deepspeed, bitsandbytes)."""
    import tomllib

    extra = tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]["gpu"]
    return [requirement_name(r.split(";")[0]) for r in extra]


def extra_requirements(extras: str, pyproject: Path | None = None) -> list[str]:
    """`gpu` (pyproject's extra, what `make run` installs on a GPU box) or names like `deepspeed,liger-kernel`
    -> pinned specs; an unknown name or a `name==version` passes through."""
    names = []
    for e in (e.strip() for e in extras.split(",") if e.strip()):
        names += gpu_extra(pyproject or REPO / "pyproject.toml") if e == "gpu" else [e]
    return [EXTRAS.get(normalize(e), e) for e in dict.fromkeys(names)]


def expand_platforms(platforms: list[str]) -> list[str]:
    """A glibc 2.34 box also takes manylinux_2_33 ... 2_5 and the legacy aliases; pip won't infer that."""
    legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
    out: list[str] = []
    for platform in platforms:
        m = re.fullmatch(r"manylinux_2_(\d+)_(\w+)", platform)
        tags = [platform]
        if m:
            arch = m.group(2)
            tags = []
            for minor in range(int(m.group(1)), 4, -1):
                tags.append(f"manylinux_2_{minor}_{arch}")
                if minor in legacy:
                    tags.append(f"{legacy[minor]}_{arch}")
        out += [t for t in tags if t not in out]
    return out


def target_flags(python: str, platforms: list[str]) -> list[str]:
    """pip flags that make it choose wheels for the box, not for this machine."""
    flags = ["--python-version", python, "--implementation", "cp", "--only-binary=:all:"]
    for platform in platforms:
        flags += ["--platform", platform]
    return flags


def write_stub_wheel(directory: Path, name: str, version: str, tag: str) -> Path:
    """An empty but valid wheel: it satisfies `torch>=x` without pulling torch's CUDA packages."""
    dist_info = f"{name}-{version}.dist-info"
    files = {
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        "Summary: stub for the GPU box's own install; never install it\n",
        f"{dist_info}/WHEEL": f"Wheel-Version: 1.0\nGenerator: qwen-tune-wheelhouse\nRoot-Is-Purelib: false\nTag: {tag}\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    files[f"{dist_info}/RECORD"] = "\n".join(record + [f"{dist_info}/RECORD,,"]) + "\n"
    wheel = directory / f"{name}-{version}-{tag}.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, text in files.items():
            zf.writestr(path, text)
    return wheel


def box_cuda(freeze: dict[str, str]) -> str | None:
    """The box's CUDA runtime as bitsandbytes names its libraries (13.0.96 → '130'), from the freeze."""
    version = freeze.get("nvidia-cuda-runtime") or freeze.get("nvidia-cuda-runtime-cu12")
    if not version:
        return None
    major, minor = version.split(".")[:2]
    return f"{major}{minor}"


def trim_bitsandbytes(wheel: Path, cuda: str) -> tuple[int, int]:
    """Keep only the box's CUDA build (and the CPU one) in the bitsandbytes wheel: 41 MiB → ~3 MiB.

    bitsandbytes ships a native library per CUDA and ROCm release and loads the one matching torch's
    CUDA, so the others are dead weight on a box whose torch is fixed. RECORD is rewritten to match,
    so pip installs the result as it would the original. Returns (bytes before, bytes after).
    """
    keep = f"libbitsandbytes_cuda{cuda}.so"
    before = wheel.stat().st_size
    with zipfile.ZipFile(wheel) as zin:
        names = zin.namelist()
        if keep not in {Path(n).name for n in names}:
            raise WheelhouseError(f"{wheel.name} has no {keep}: the box's CUDA {cuda} is not one bitsandbytes builds for")
        dropped = {n for n in names if re.fullmatch(r"libbitsandbytes_(cuda|rocm)\d+\.so", Path(n).name) and Path(n).name != keep}
        record = next(n for n in names if n.endswith(".dist-info/RECORD"))
        trimmed = wheel.with_suffix(".trimmed")
        with zipfile.ZipFile(trimmed, "w", zipfile.ZIP_DEFLATED) as zout:
            for info in zin.infolist():
                if info.filename in dropped:
                    continue
                data = zin.read(info.filename)
                if info.filename == record:
                    lines = data.decode().splitlines()
                    data = ("\n".join(line for line in lines if line.split(",")[0] not in dropped) + "\n").encode()
                zout.writestr(info, data)
    trimmed.replace(wheel)
    return before, wheel.stat().st_size


def drop_folders(wheel: Path, folders: tuple[str, ...]) -> tuple[int, int]:
    """Remove whole top-level folders from a wheel (and their RECORD lines). Returns (bytes before, bytes after)."""
    before = wheel.stat().st_size
    trimmed = wheel.with_suffix(".trimmed")
    with zipfile.ZipFile(wheel) as zin, zipfile.ZipFile(trimmed, "w", zipfile.ZIP_DEFLATED) as zout:
        record = next(n for n in zin.namelist() if n.endswith(".dist-info/RECORD"))
        for info in zin.infolist():
            if info.filename.startswith(folders):
                continue
            data = zin.read(info.filename)
            if info.filename == record:
                lines = data.decode().splitlines()
                data = ("\n".join(line for line in lines if not line.startswith(folders)) + "\n").encode()
            zout.writestr(info, data)
    trimmed.replace(wheel)
    return before, wheel.stat().st_size


def select_changes(report: dict, freeze: dict[str, str], stubs: tuple[str, ...] = ("torch",)) -> list[dict]:
    """What pip would install that the box lacks or has at another version; never a stub (torch's, a peer's)."""
    chosen = []
    for item in report["install"]:
        name, version = normalize(item["metadata"]["name"]), item["metadata"]["version"]
        if name not in stubs and freeze.get(name) != version:
            url, requires_python = item["download_info"]["url"], item["metadata"].get("requires_python")
            chosen.append({"name": name, "version": version, "url": url, "requires_python": requires_python})
    return sorted(chosen, key=lambda c: c["name"])


def python_allowed(requires_python: str | None, python: str) -> bool:
    """Requires-Python against the box's Python: pip checks it against this machine's (hence
    --ignore-requires-python), so a release that needs a newer Python than the box's could slip in."""
    ops = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
    box = ([int(p) for p in python.split(".")] + [0, 0])[:3]
    for clause in (requires_python or "").split(","):
        m = re.fullmatch(r"\s*(==|!=|<=|>=|<|>)\s*(\d+(?:\.\d+)*)\s*", clause)  # `!=3.0.*`, `~=3.8`: rare, left to pip
        if m and not ops[m.group(1)](box, ([int(p) for p in m.group(2).split(".")] + [0, 0])[:3]):
            return False
    return True


def pip_failure_reason(output: str) -> str:
    """pip's many-line failure as one line: its first ERROR, and for a conflict, who asked for what."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip() and not ln.startswith("WARNING")]
    errors = [ln for ln in lines if ln.startswith("ERROR")] or lines[-1:]
    conflict = [ln for ln in lines if ln.startswith("The user requested") or " depends on " in ln]
    return "; ".join(errors[:1] + conflict)[:500]


def pip(args: list[str], step: str, env: dict | None = None) -> None:
    """Run pip quietly; on failure, one line with pip's own reason and where the full log is."""
    proc = subprocess.run([sys.executable, "-m", "pip", *args], check=False, capture_output=True, text=True, env=env)
    if proc.returncode == 0:
        return
    log = Path(tempfile.gettempdir()) / f"wheelhouse-{step}.log"
    log.write_text(proc.stdout + proc.stderr)
    reason = pip_failure_reason(proc.stdout + "\n" + proc.stderr) or f"exit {proc.returncode}"
    raise WheelhouseError(f"{step} failed: {reason} (full log: {log})")


def build_sdist_wheels(local: Path, extras: list[str]) -> None:
    """Wheels for what PyPI has only as sdists; deepspeed skips its ops (they JIT-compile on the box)."""
    wheel = ["wheel", "--no-cache-dir", "--no-deps", "-w", str(local)]
    for name, version in SDIST_ONLY.items():  # CC=false: no C extensions, the wheel must be py3-none-any
        pip([*wheel, f"--no-binary={name}", f"{name}=={version}"], f"build-{name}", {**os.environ, "CC": "false"})
    deepspeed = [e for e in extras if requirement_name(e) == "deepspeed"]
    if deepspeed:
        if importlib.util.find_spec("torch") is None:  # deepspeed's setup.py imports it
            raise WheelhouseError("deepspeed is built here without build isolation: it needs torch in this Python")
        pip([*wheel, "--no-build-isolation", deepspeed[0]], "build-deepspeed", {**os.environ, "DS_BUILD_OPS": "0"})
    impure = [w.name for w in local.glob("*.whl") if not w.name.endswith("-none-any.whl")]
    if impure:
        raise WheelhouseError(f"built wheels are not pure Python, so useless on the box: {', '.join(impure)}")


def resolve(work: Path, local: Path, requirements: list[str], flags: list[str]) -> dict:
    """pip's own resolver, for the box, without installing: the closure as a JSON report."""
    report, target, constraints = work / "report.json", work / "target", work / "constraints.txt"
    args = ["install", "--dry-run", "--ignore-installed", "--ignore-requires-python", "--report", str(report)]
    try:
        pip([*args, *flags, "--target", str(target), "-c", str(constraints), "-f", str(local), *requirements], "resolve")
    except WheelhouseError as err:  # most often a box pin that ms-swift can't live with
        raise WheelhouseError(f"{err}; to let pip replace a box pin, add it to UNPINNED in tools/wheelhouse.py") from None
    return json.loads(report.read_text())


def fetch(chosen: list[dict], out: Path, flags: list[str]) -> None:
    """Local wheels (built here) are copied; everything else is downloaded for the box's platform."""
    remote = []
    for c in chosen:
        if c["url"].startswith("file:"):
            shutil.copy2(unquote(urlparse(c["url"]).path), out)
        else:
            remote.append(f"{c['name']}=={c['version']}")
    if remote:
        pip(["download", "--no-deps", *flags, "-d", str(out), *remote], "download")


def write_manifest(out: Path) -> tuple[int, int]:
    """MANIFEST.txt: what to expect on the box, and whether it fits a transfer."""
    wheels = sorted(out.glob("*.whl"), key=lambda w: normalize(w.name))
    total = sum(w.stat().st_size for w in wheels)
    lines = []
    for w in wheels:
        name, version = w.name.split("-")[:2]
        size = w.stat().st_size
        shown = f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size / 1024:.0f} KiB"
        lines.append(f"{normalize(name)}=={version}  {shown}")
    lines.append(f"total  {len(wheels)} wheels  {total / 2**20:.1f} MiB")
    (out / "MANIFEST.txt").write_text("\n".join(lines) + "\n")
    return len(wheels), total


def build(
    freeze: dict[str, str], python: str, platforms: list[str], extras: list[str], staging: Path, peer: str | None = None
) -> list[dict]:
    """Every step into `staging`; the caller renames it to --out only when all of them worked. A peer's wheelhouse
    holds the peer's closure alone (no ms-swift, no qwen-tune)."""
    flags = target_flags(python, platforms)
    requirements = PEERS[peer] if peer else [SWIFT, *project_requirements(REPO / "pyproject.toml"), *extras]
    stubs = {"torch": freeze["torch"].split("+")[0], **(PEER_STUBS.get(peer, {}) if peer else {})}
    what = peer or f"{SWIFT} + qwen-tune + {', '.join(extras) or 'no extras'}"
    with tempfile.TemporaryDirectory(prefix="wheelhouse-") as tmp:
        work, local = Path(tmp), Path(tmp) / "local"
        local.mkdir()
        unpinned = PEER_UNPINNED[peer] if peer else frozenset(UNPINNED)
        stub_pins = [f"{name}=={version}" for name, version in stubs.items() if name != "torch"]  # else PyPI's newer wins
        (work / "constraints.txt").write_text("\n".join(constraint_lines(freeze, unpinned) + stub_pins) + "\n")
        if not peer:
            print(f"building wheels from sdists: {', '.join(SDIST_ONLY)} (and deepspeed if asked) ...", flush=True)
            build_sdist_wheels(local, extras)
        py_tag = "cp" + "".join(python.split(".")[:2])
        for name, version in stubs.items():
            write_stub_wheel(local, name, version, f"{py_tag}-{py_tag}-{platforms[0]}")
        print(f"resolving {what} for Python {python} ...", flush=True)
        report = resolve(work, local, requirements, flags)
        stubbed = [i for i in report["install"] if normalize(i["metadata"]["name"]) in stubs]
        if any(not i["download_info"]["url"].startswith("file:") for i in stubbed):
            raise WheelhouseError(
                "pip chose PyPI's torch (or a peer's stubbed package) over the stub: list the stub's platform first in --platform"
            )
        chosen = select_changes(report, freeze, tuple(stubs))
        too_new = [f"{c['name']}=={c['version']}" for c in chosen if not python_allowed(c["requires_python"], python)]
        if too_new:
            raise WheelhouseError(f"these need a newer Python than {python}: {', '.join(too_new)}; pin older releases")
        print(f"fetching {len(chosen)} wheels that the box lacks ...", flush=True)
        fetch(chosen, staging, flags)
    if not peer:
        pip(["wheel", "--no-deps", "-w", str(staging), str(REPO)], "build-qwen-tune")
    cuda = box_cuda(freeze)
    for wheel in staging.glob("bitsandbytes-*.whl"):
        if cuda:
            before, after = trim_bitsandbytes(wheel, cuda)
            print(f"bitsandbytes: kept the CUDA {cuda} library only, {before / 2**20:.1f} → {after / 2**20:.1f} MiB", flush=True)
    for wheel in staging.glob(f"{peer}-*.whl") if peer in PEER_UNUSED_FOLDERS else ():
        before, after = drop_folders(wheel, PEER_UNUSED_FOLDERS[peer])
        print(
            f"{peer}: dropped {', '.join(PEER_UNUSED_FOLDERS[peer])}, {before / 2**20:.1f} → {after / 2**20:.1f} MiB", flush=True
        )
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--freeze", type=Path, required=True, help="the GPU box's `pip freeze` output")
    parser.add_argument("--python", default="3.12", help="the box's Python version (default 3.12)")
    parser.add_argument("--out", type=Path, default=Path("wheelhouse"), help="new or empty directory (default wheelhouse)")
    parser.add_argument(
        "--extras",
        default="gpu",
        help=f"comma list: gpu (pyproject's gpu extra, as `make run` installs it) or {', '.join(EXTRAS)}",
    )
    parser.add_argument("--platform", action="append", help="the box's newest wheel platform (default manylinux_2_34_x86_64)")
    parser.add_argument(
        "--peer", choices=sorted(PEERS), help="instead: the wheels of a peer for `make bench` (own folder on the box)"
    )
    args = parser.parse_args(argv)
    try:
        if not re.fullmatch(r"3\.\d+(\.\d+)?", args.python):
            raise WheelhouseError(f"--python must look like 3.12 or 3.12.8, not {args.python!r}")
        if args.out.exists() and (not args.out.is_dir() or any(args.out.iterdir())):
            raise WheelhouseError(f"{args.out} exists and is not empty; a wheelhouse is never overwritten: pick a new --out")
        if not args.freeze.is_file():
            raise WheelhouseError(f"no freeze file at {args.freeze}: run `pip freeze > box-freeze.txt` on the box")
        freeze = parse_freeze(args.freeze.read_text())
        if "torch" not in freeze:
            raise WheelhouseError(f"{args.freeze} has no torch==VERSION line; the box must have torch installed")
        platforms = expand_platforms(args.platform or ["manylinux_2_34_x86_64"])
        args.out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{args.out.name}-partial-", dir=args.out.parent))
        try:
            chosen = build(freeze, args.python, platforms, extra_requirements(args.extras), staging, args.peer)
            count, total = write_manifest(staging)
            if args.out.exists():
                args.out.rmdir()
            staging.rename(args.out)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    except WheelhouseError as err:
        print(f"wheelhouse: error: {err}", file=sys.stderr)
        return 1
    updated = [c["name"] for c in chosen if c["name"] in freeze]
    print(f"{args.out}: {count} wheels, {total / 2**20:.1f} MiB (list: {args.out / 'MANIFEST.txt'})")
    print(f"  new on the box: {len(chosen) - len(updated)}; other version than the box: {', '.join(updated) or 'none'}")
    print(f"  on the box: pip install --no-index --no-deps --upgrade --target SITE {args.out}/*.whl")
    return 0


if __name__ == "__main__":
    sys.exit(main())
