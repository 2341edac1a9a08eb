"""tools/wheelhouse.py: the pure parts (no network, no pip resolution, no GPU)."""

import base64
import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import TOOLS, load_script

wh = load_script("wheelhouse")

FREEZE = """\
# a comment
accelerate==1.15.0
cuda-bindings==13.3.1
fsspec==2026.7.0
-e git+https://example.invalid/repo.git#egg=local_thing
mypkg @ file:///opt/wheels/mypkg-1.0-py3-none-any.whl
nvidia-cublas==13.1.0.3
nvidia-ml-py==13.610.43
peft==0.21.0
PyYAML==6.0.3
torch==2.11.0+cu130
transformers==5.17.0
typing_extensions==4.16.0
"""


def install_item(name, version, url=None):
    url = url or f"https://files.example/{name}-{version}-py3-none-any.whl"
    return {"metadata": {"name": name, "version": version}, "download_info": {"url": url}}


def test_normalize_makes_spellings_equal():
    assert wh.normalize("PyYAML") == wh.normalize("pyyaml") == "pyyaml"
    assert wh.normalize("typing_extensions") == wh.normalize("Typing.Extensions") == "typing-extensions"
    assert wh.normalize("ms_swift") == wh.normalize("ms--swift") == "ms-swift"


def test_parse_freeze_keeps_pins_and_skips_editable_and_url_lines():
    freeze = wh.parse_freeze(FREEZE)
    assert freeze["pyyaml"] == "6.0.3"
    assert freeze["typing-extensions"] == "4.16.0"
    assert freeze["torch"] == "2.11.0+cu130"
    assert "mypkg" not in freeze and "local-thing" not in freeze
    assert len(freeze) == 10


def test_constraints_drop_conflicting_and_cuda_pins_and_pin_torch_to_the_stub():
    lines = wh.constraint_lines(wh.parse_freeze(FREEZE))
    names = [line.split("==")[0] for line in lines]
    for dropped in ("peft", "fsspec", "nvidia-cublas", "cuda-bindings"):
        assert dropped not in names
    assert "nvidia-ml-py==13.610.43" in lines  # NVML binding, not CUDA: the box's version is fine
    assert "transformers==5.17.0" in lines and "pyyaml==6.0.3" in lines
    assert [line for line in lines if line.startswith("torch")] == ["torch==2.11.0"]  # no local tag


def test_requirement_name():
    assert wh.requirement_name("ms-swift>=4.6,<4.7") == "ms-swift"
    assert wh.requirement_name("torch") == "torch"
    assert wh.requirement_name("Torch >= 2.4; sys_platform == 'linux'") == "torch"
    assert wh.requirement_name("fsspec[http]<=2026.2.0") == "fsspec"


def test_project_requirements_drop_torch(tmp_path):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(
        '[project]\nname = "x"\ndependencies = ["ms-swift>=4.6,<4.7", "torch>=2.4", "torchvision", "click>=8.1"]\n'
    )
    assert wh.project_requirements(pyproject) == ["ms-swift>=4.6,<4.7", "torchvision", "click>=8.1"]


def test_project_requirements_of_this_repo_keep_swift_and_lose_torch():
    reqs = wh.project_requirements(TOOLS.parent / "pyproject.toml")
    assert any(r.startswith("ms-swift") for r in reqs)
    assert not any(wh.requirement_name(r) == "torch" for r in reqs)


def test_extras_are_pinned_and_overridable():
    assert wh.extra_requirements("deepspeed,bitsandbytes") == ["deepspeed==0.19.8", "bitsandbytes==0.50.2"]
    assert wh.extra_requirements(" liger_kernel , ") == ["liger-kernel==0.8.5"]
    assert wh.extra_requirements("bitsandbytes==0.49.2,flash-attn") == ["bitsandbytes==0.49.2", "flash-attn"]
    assert wh.extra_requirements("") == []


def test_default_extras_are_what_make_run_installs_on_a_gpu_box():
    """The wheelhouse's default is pyproject's gpu extra, pinned within its ranges: no extras added by hand."""
    import tomllib
    from packaging.requirements import Requirement

    extra = tomllib.loads((wh.REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["gpu"]
    pinned = {Requirement(r).name: Requirement(r).specifier for r in wh.extra_requirements("gpu")}
    for requirement in map(Requirement, extra):
        version = next(iter(pinned[requirement.name])).version
        assert requirement.specifier.contains(version), (requirement, version)
    assert wh.extra_requirements("gpu,deepspeed") == wh.extra_requirements("gpu")


def test_expand_platforms_adds_older_glibc_and_legacy_aliases_newest_first():
    tags = wh.expand_platforms(["manylinux_2_34_x86_64"])
    assert tags[0] == "manylinux_2_34_x86_64"
    assert tags.index("manylinux_2_28_x86_64") < tags.index("manylinux_2_17_x86_64") < tags.index("manylinux2014_x86_64")
    assert "manylinux_2_35_x86_64" not in tags and tags[-1] == "manylinux1_x86_64"
    assert len(tags) == len(set(tags)) == 30 + 3
    assert wh.expand_platforms(["manylinux_2_28_x86_64", "manylinux_2_34_x86_64"])[0] == "manylinux_2_28_x86_64"
    assert wh.expand_platforms(["macosx_14_0_arm64"]) == ["macosx_14_0_arm64"]


def test_target_flags_name_the_box_not_this_machine():
    flags = wh.target_flags("3.12", ["manylinux_2_34_x86_64", "manylinux_2_28_x86_64"])
    assert flags[:5] == ["--python-version", "3.12", "--implementation", "cp", "--only-binary=:all:"]
    assert flags[5:] == ["--platform", "manylinux_2_34_x86_64", "--platform", "manylinux_2_28_x86_64"]


def test_select_changes_keeps_only_what_differs_from_the_box():
    report = {
        "install": [
            install_item("ms-swift", "4.6.0"),
            install_item("peft", "0.20.0"),  # box has 0.21.0
            install_item("PyYAML", "6.0.3"),  # same as the box, other spelling
            install_item("typing-extensions", "4.16.0"),  # same, other separator
            install_item("transformers", "5.17.0"),
            install_item("torch", "2.11.0", "file:///tmp/local/torch-2.11.0-cp312-cp312-manylinux_2_34_x86_64.whl"),
            install_item("oss2", "2.19.1", "file:///tmp/local/oss2-2.19.1-py3-none-any.whl"),
        ]
    }
    chosen = wh.select_changes(report, wh.parse_freeze(FREEZE))
    assert [(c["name"], c["version"]) for c in chosen] == [("ms-swift", "4.6.0"), ("oss2", "2.19.1"), ("peft", "0.20.0")]
    assert chosen[1]["url"].startswith("file:")


def test_stub_wheel_is_a_valid_wheel(tmp_path):
    wheel = wh.write_stub_wheel(tmp_path, "torch", "2.11.0", "cp312-cp312-manylinux_2_34_x86_64")
    assert wheel.name == "torch-2.11.0-cp312-cp312-manylinux_2_34_x86_64.whl"
    with zipfile.ZipFile(wheel) as zf:
        assert zf.testzip() is None
        names = set(zf.namelist())
        assert names == {f"torch-2.11.0.dist-info/{n}" for n in ("METADATA", "WHEEL", "RECORD")}
        metadata = zf.read("torch-2.11.0.dist-info/METADATA").decode()
        assert "Name: torch\n" in metadata and "Version: 2.11.0\n" in metadata and "Requires-Dist" not in metadata
        assert "Tag: cp312-cp312-manylinux_2_34_x86_64\n" in zf.read("torch-2.11.0.dist-info/WHEEL").decode()
        for row in zf.read("torch-2.11.0.dist-info/RECORD").decode().splitlines():
            path, digest, size = row.split(",")
            if path.endswith("RECORD"):
                assert digest == size == ""
                continue
            data = zf.read(path)
            expected = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            assert digest == f"sha256={expected}" and int(size) == len(data)


def test_pip_accepts_the_stub_for_the_box_offline(tmp_path):
    """pip itself, with no index, resolves torch==2.11.0 for cp312 to the stub (a few seconds, no network)."""
    wh.write_stub_wheel(tmp_path, "torch", "2.11.0", "cp312-cp312-manylinux_2_34_x86_64")
    flags = wh.target_flags("3.12", wh.expand_platforms(["manylinux_2_34_x86_64"]))
    argv = [sys.executable, "-m", "pip", "install", "--isolated", "--no-index", "-q", "--dry-run", "--ignore-installed"]
    argv += ["--report", str(tmp_path / "r.json"), *flags, "--target", str(tmp_path / "t"), "-f", str(tmp_path), "torch==2.11.0"]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "torch-2.11.0-cp312-cp312-manylinux_2_34_x86_64.whl" in (tmp_path / "r.json").read_text()


@pytest.mark.parametrize(
    ("requires_python", "allowed"),
    [
        (None, True),
        (">=3.9", True),
        (">=3.8,<4", True),
        (">= 3.10 , < 3.14", True),
        ("!=3.0.*,!=3.1.*,>=2.7", True),
        (">=3.13", False),
        ("<3.12", False),
        (">=3.10,!=3.12", False),
    ],
)
def test_python_allowed_checks_the_box_python_not_this_one(requires_python, allowed):
    assert wh.python_allowed(requires_python, "3.12") is allowed


def test_pip_failure_reason_is_one_line():
    stderr = """WARNING: Location 'file:///opt/x' is ignored
ERROR: Cannot install datasets==4.9.0 and ms-swift==4.6.0 because these package versions have conflicting dependencies.

The conflict is caused by:
    The user requested datasets==4.9.0
    ms-swift 4.6.0 depends on datasets<4.8.5 and >=4.0

To fix this you could try to:
"""
    reason = wh.pip_failure_reason(stderr)
    assert "\n" not in reason
    assert reason.startswith("ERROR: Cannot install") and "depends on datasets<4.8.5" in reason and "WARNING" not in reason
    assert wh.pip_failure_reason("Traceback ...\nSomeError: boom\n") == "SomeError: boom"


def test_manifest_lists_each_wheel_and_the_total(tmp_path):
    (tmp_path / "ms_swift-4.6.0-py3-none-any.whl").write_bytes(b"x" * 3 * 2**20)
    (tmp_path / "addict-2.4.0-py3-none-any.whl").write_bytes(b"x" * 4096)
    assert wh.write_manifest(tmp_path) == (2, 3 * 2**20 + 4096)
    lines = (tmp_path / "MANIFEST.txt").read_text().splitlines()
    assert lines == ["addict==2.4.0  4 KiB", "ms-swift==4.6.0  3.0 MiB", "total  2 wheels  3.0 MiB"]


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("nonempty", "exists and is not empty"),
        ("nofreeze", "no freeze file"),
        ("notorch", "has no torch==VERSION line"),
    ],
)
def test_cli_refuses_bad_input_with_one_line(tmp_path, capsys, setup, message):
    out, freeze = tmp_path / "wh", tmp_path / "freeze.txt"
    freeze.write_text("click==8.5.0\n" if setup == "notorch" else FREEZE)
    if setup == "nonempty":
        out.mkdir()
        (out / "old.whl").write_text("")
    if setup == "nofreeze":
        freeze.unlink()
    assert wh.main(["--freeze", str(freeze), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("wheelhouse: error:") and message in err
    assert setup == "nonempty" or not out.exists()


def test_box_cuda_comes_from_the_freeze():
    assert wh.box_cuda({"nvidia-cuda-runtime": "13.0.96"}) == "130"
    assert wh.box_cuda({"nvidia-cuda-runtime-cu12": "12.8.90"}) == "128"
    assert wh.box_cuda({"torch": "2.11.0"}) is None


def _fake_bnb_wheel(path: Path) -> Path:
    libs = ["libbitsandbytes_cpu.so", "libbitsandbytes_cuda128.so", "libbitsandbytes_cuda130.so", "libbitsandbytes_rocm72.so"]
    files = {f"bitsandbytes/{lib}": lib.encode() * 100 for lib in libs} | {"bitsandbytes/__init__.py": b"x = 1\n"}
    record = (
        "".join(f"{name},sha256=x,{len(data)}\n" for name, data in files.items()) + "bitsandbytes-0.50.2.dist-info/RECORD,,\n"
    )
    wheel = path / "bitsandbytes-0.50.2-py3-none-manylinux_2_24_x86_64.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        zf.writestr("bitsandbytes-0.50.2.dist-info/RECORD", record)
    return wheel


def test_trim_bitsandbytes_keeps_the_box_cuda_and_cpu_and_fixes_record(tmp_path):
    wheel = _fake_bnb_wheel(tmp_path)
    wh.trim_bitsandbytes(wheel, "130")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        record = zf.read("bitsandbytes-0.50.2.dist-info/RECORD").decode()
    assert "bitsandbytes/libbitsandbytes_cuda130.so" in names and "bitsandbytes/libbitsandbytes_cpu.so" in names
    assert not any("cuda128" in n or "rocm" in n for n in names)
    assert "cuda128" not in record and "cuda130" in record and "__init__.py" in record


def test_trim_bitsandbytes_refuses_a_cuda_it_does_not_ship(tmp_path):
    wheel = _fake_bnb_wheel(tmp_path)
    with pytest.raises(wh.WheelhouseError, match="cuda999"):
        wh.trim_bitsandbytes(wheel, "999")
    assert zipfile.ZipFile(wheel).namelist()  # untouched
