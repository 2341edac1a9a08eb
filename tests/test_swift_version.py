"""The supported ms-swift range is written once (qwen_tune.swift.version); what installs swift agrees with it."""

from pathlib import Path

import tomllib
from conftest import load_script
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from qwen_tune.swift.version import INSTALL, REQUIREMENT, SUPPORTED

REPO = Path(__file__).resolve().parents[1]


def test_pyproject_installs_the_supported_range():
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    swift = [Requirement(d) for d in dependencies if Requirement(d).name == "ms-swift"]
    assert [str(r.specifier) for r in swift] == [str(SpecifierSet(SUPPORTED))]


def test_the_wheelhouse_pins_a_supported_release():
    wheelhouse = load_script("wheelhouse")
    pinned = Requirement(wheelhouse.SWIFT)
    assert pinned.name == "ms-swift"
    version = next(iter(pinned.specifier)).version
    assert version in SpecifierSet(SUPPORTED)


def test_the_install_hint_names_the_range():
    assert REQUIREMENT in INSTALL and SUPPORTED in REQUIREMENT
