"""Shared YAML loading for recipes and profiles: typed reads with one-line errors."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml

from qwen_tune.errors import ConfigError

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # qwen_tune/


def configs_dir() -> Path:
    """configs/ ships inside the wheel as qwen_tune/configs, and sits beside it in a checkout."""
    for candidate in (PACKAGE_DIR / "configs", PACKAGE_DIR.parent / "configs"):
        if candidate.is_dir():
            return candidate
    raise ConfigError("qwen-tune's configs/ folder is missing: reinstall qwen-tune")  # pragma: no cover


def find_config(kind: str, name_or_path: str) -> Path:
    """A shipped config by name (configs/KIND/NAME.yaml), or a path to the user's own file."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        raise ConfigError(f"{kind[:-1]} {name_or_path} is a directory: give a shipped name or a .yaml file")
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            hint = f"; the shipped one is --{kind[:-1]} {path.stem}" if path.stem in shipped_names(kind) else ""
            raise ConfigError(f"{kind[:-1]} file {name_or_path} does not exist{hint}")
        return path
    shipped = configs_dir() / kind / f"{name_or_path}.yaml"
    if not shipped.is_file():
        raise ConfigError(
            f"unknown {kind[:-1]} {name_or_path!r}; shipped: {', '.join(shipped_names(kind))}, or give a .yaml path"
        )
    return shipped


def shipped_names(kind: str) -> list[str]:
    return sorted(p.stem for p in (configs_dir() / kind).glob("*.yaml"))


def load_yaml(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
        data = yaml.safe_load(raw.decode("utf-8-sig"))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}: line {line} is not UTF-8 text; save the file as UTF-8") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of fields at the top level")
    return data


class Fields:
    """Reads one mapping of a config file; every error names the file and the field."""

    def __init__(self, data: dict[str, Any], where: str, prefix: str = ""):
        self.data, self.where, self.prefix = data, where, prefix
        self.used: set[str] = set()

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.where}: {self.prefix}{key} {problem}")

    def raw(self, key: str) -> Any:
        """The value as written (or None), for fields whose type depends on the value."""
        return self._get(key, None)

    def _get(self, key: str, default: Any) -> Any:
        self.used.add(key)
        if key in self.data and self.data[key] is not None:
            return self.data[key]
        if default is _REQUIRED:
            raise self.fail(key, "is missing")
        return default

    def section(self, key: str) -> Fields:
        value = self._get(key, _REQUIRED)
        if not isinstance(value, dict):
            raise self.fail(key, "must be a mapping")
        return Fields(value, self.where, f"{self.prefix}{key}.")

    def text(self, key: str, default: Any = None) -> str:
        value = self._get(key, _REQUIRED if default is None else default)
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, "must be non-empty text")
        return value

    def optional_text(self, key: str) -> str | None:
        value = self._get(key, "")
        return self.text(key) if value else None

    def number(self, key: str, low: float, high: float, *, integer: bool = False, default: Any = None) -> float:
        value = _as_number(self._get(key, _REQUIRED if default is None else default), integer)
        kind = int if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kind) or not low <= value <= high:
            what = "an integer" if integer else "a number"
            raise self.fail(key, f"must be {what} from {low:g} to {high:g} (got {value!r})")
        return value

    def choice(self, key: str, choices: tuple[Any, ...]) -> Any:
        value = self._get(key, _REQUIRED)
        if value not in choices:
            raise self.fail(key, f"must be one of {', '.join(map(str, choices))} (got {value!r})")
        return value

    def done(self) -> None:
        """Unknown fields are typos until proven otherwise."""
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise self.fail(unknown[0], "is not a known field")


_REQUIRED = object()


def _as_number(value: Any, integer: bool) -> Any:
    """YAML 1.1 reads 1e-4 (no dot) and 1_000 as text; people write numbers that way, so they count.

    A whole number written as a float (16.0, 1e3) is accepted where an integer is wanted.
    """
    if isinstance(value, str):
        try:
            number = float(value.strip().replace("_", ""))
        except ValueError:
            return value
        if not math.isfinite(number):
            return value
        value = number
    if integer and isinstance(value, float) and value.is_integer():
        return int(value)
    return value
