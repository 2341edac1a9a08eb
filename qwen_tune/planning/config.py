"""Config files (recipes, profiles): finding them, reading their YAML safely, and checking them against
their pydantic models, every problem at once in one line.

The models' fields carry their own rules (ranges, choices) and help text: the files, the CLI flags that
override them and README's recipe template all read them from there.
"""

from __future__ import annotations

import difflib
import math
import reprlib
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from qwen_tune.errors import ConfigError

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # qwen_tune/

# A config file is a few hundred bytes; these bound what a hostile or mistaken one can make qwen-tune do.
MAX_FILE_BYTES = 1 << 20
MAX_NESTING = 32  # mappings and lists inside each other
MAX_EXPANDED_NODES = 10_000  # values after YAML aliases (*name) are expanded: an "anchor bomb" makes billions


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


class _YamlRefused(yaml.YAMLError):
    """A file that YAML reads, but that no config should be: said in one line with its line number."""

    def __init__(self, line: int, problem: str):
        super().__init__(problem)
        self.line, self.problem = line, problem


class ConfigLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (YAML keeps the last, silently), and
    aliases that expand into more values than any config has, or nesting deeper than any config needs."""

    def __init__(self, stream):
        super().__init__(stream)
        self._open = 0  # mappings and lists being composed, one inside the other
        self._shape: dict[int, tuple[int, int]] = {}  # id(node) -> (its values, its depth), aliases expanded

    def compose_node(self, parent, index):
        line = self.peek_event().start_mark.line + 1
        if self.check_event(yaml.AliasEvent):
            node = self.anchors.get(self.peek_event().anchor)
            if node is not None and id(node) not in self._shape:
                raise _YamlRefused(
                    line, "an alias (*name) inside the value it names would repeat it forever; write the values out"
                )
            return super().compose_node(parent, index)  # the anchored node, already measured in _shape
        self._open += 1
        if self._open > MAX_NESTING:
            raise _YamlRefused(line, f"nests deeper than {MAX_NESTING} levels")
        node = super().compose_node(parent, index)
        self._open -= 1
        children = node.value if isinstance(node, yaml.SequenceNode) else ()
        if isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        shapes = [self._shape.get(id(child), (1, 1)) for child in children]
        size, depth = 1 + sum(s for s, _ in shapes), 1 + max((d for _, d in shapes), default=0)
        if size > MAX_EXPANDED_NODES:
            raise _YamlRefused(
                line, f"its aliases (*name) expand to more than {MAX_EXPANDED_NODES:,} values; write the values out"
            )
        if depth > MAX_NESTING:
            raise _YamlRefused(line, f"its aliases (*name) nest deeper than {MAX_NESTING} levels; write the values out")
        self._shape[id(node)] = (size, depth)
        return node

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node)
                line = key_node.start_mark.line + 1
                if key in seen:
                    raise _YamlRefused(line, f"{key} is given twice (first at line {seen[key]}); keep one")
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


ConfigLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, ConfigLoader.construct_yaml_map)


def load_yaml(path: Path) -> dict[str, Any]:
    """The file's top-level mapping; an unreadable, oversized, malformed or hostile file is one ConfigError."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ConfigError(
                f"{path} is {size / (1 << 20):.1f} MiB; a config file is a few hundred bytes: is it the right file?"
            )
        raw = path.read_bytes()
        data = yaml.load(raw.decode("utf-8-sig"), Loader=ConfigLoader)  # noqa: S506 (a SafeLoader)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}: line {line} is not UTF-8 text; save the file as UTF-8") from None
    except _YamlRefused as exc:
        raise ConfigError(f"{path}: line {exc.line}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    except RecursionError:
        raise ConfigError(f"{path}: nests deeper than any config does") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of fields at the top level")
    return data


# The models ----------------------------------------------------------------------------------------------------

STRICT = ConfigDict(extra="forbid", frozen=True)


class Section(BaseModel):
    """A mapping of a config file: unknown fields are typos until proven otherwise."""

    model_config = STRICT


def _as_number(value: Any) -> Any:
    """YAML 1.1 reads 1e-4 (no dot) and 1_000 as text; people write numbers that way, so they count.
    true/false are no numbers, though Python counts them as 1 and 0."""
    if isinstance(value, bool):
        raise ValueError("true/false is no number")
    if isinstance(value, str):
        try:
            number = float(value.strip().replace("_", ""))
        except ValueError:
            return value
        return number if math.isfinite(number) else value
    return value


def _as_whole(value: Any) -> Any:
    """A whole number written as a float (16.0, 1e3) is accepted where an integer is wanted."""
    value = _as_number(value)
    return int(value) if isinstance(value, float) and value.is_integer() else value


Number = Annotated[float, BeforeValidator(_as_number)]
Integer = Annotated[int, BeforeValidator(_as_whole)]
Text = Annotated[str, Field(pattern=r"\S")]  # non-empty, not only spaces


def expects(annotation: Any, info: FieldInfo | None = None) -> str:
    """What a field takes, in words, read from its type and constraints: 'a number from 1e-08 to 1'."""
    metadata = list(info.metadata) if info is not None else []
    if get_origin(annotation) is Annotated:
        annotation, *extra = get_args(annotation)
        metadata += [m for e in extra for m in (e.metadata if isinstance(e, FieldInfo) else [e])]
    if info is not None and isinstance(info.json_schema_extra, dict) and "expects" in info.json_schema_extra:
        return str(info.json_schema_extra["expects"])
    if get_origin(annotation) in (Union, types.UnionType):
        return ", or ".join(expects(a) for a in get_args(annotation) if a is not type(None))
    if get_origin(annotation) is Literal:
        return "one of " + ", ".join(map(str, get_args(annotation)))
    if annotation in (int, float):
        low = next((m.ge for m in metadata if hasattr(m, "ge")), None)
        high = next((m.le for m in metadata if hasattr(m, "le")), None)
        what = "an integer" if annotation is int else "a number"
        return f"{what} from {low:g} to {high:g}" if low is not None and high is not None else what
    if annotation is str:
        return "non-empty text"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "a mapping of " + ", ".join(annotation.model_fields)
    return str(annotation)  # pragma: no cover: every field's type is one of the above


def fields_of(model: type) -> dict[str, FieldInfo]:
    """A pydantic model's or pydantic dataclass's fields, in the order they are written."""
    return dict(model.__pydantic_fields__)


def _submodel(info: FieldInfo) -> type[BaseModel] | None:
    """The section model a field holds (a lora: mapping), if it holds one."""
    annotation = info.annotation
    candidates = get_args(annotation) if get_origin(annotation) in (Union, types.UnionType) else (annotation,)
    return next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)


@dataclass(frozen=True)
class FieldRef:
    """One field of a config model by its dotted path (training.learning_rate), and its rules."""

    path: str
    info: FieldInfo

    @property
    def expects(self) -> str:
        return expects(self.info.annotation, self.info)

    @property
    def range(self) -> tuple[float, float]:
        """A number field's lowest and highest value."""
        low = next(m.ge for m in self.info.metadata if hasattr(m, "ge"))
        high = next(m.le for m in self.info.metadata if hasattr(m, "le"))
        return low, high

    def check(self, value: Any) -> Any:
        """The value as the field takes it (a flag's text made a number), or ValueError saying what it takes."""
        try:
            return TypeAdapter(Annotated[self.info.annotation, self.info]).validate_python(value)
        except ValidationError:
            raise ValueError(
                f"must be {self.expects} (got {_SHORT.repr(value) if not isinstance(value, str) else value[:40]})"
            ) from None


def field_ref(model: type, path: str) -> FieldRef:
    """training.learning_rate -> its FieldRef in the model."""
    *sections, name = path.split(".")
    for section in sections:
        model = _submodel(fields_of(model)[section])
    return FieldRef(path, fields_of(model)[name])


def documented_fields(model: type, prefix: str = "") -> list[tuple[str, FieldInfo, type | None]]:
    """Every field of a model and its sections, depth first: (dotted path, field, its section model or None)."""
    found = []
    for name, info in fields_of(model).items():
        sub = _submodel(info)
        found.append((prefix + name, info, sub))
        if sub is not None:
            found += documented_fields(sub, f"{prefix}{name}.")
    return found


def parse(model: type, data: dict[str, Any], where: str, problems: list[str] | None = None):
    """The file's mapping as the model, or one ConfigError that lists every problem (and those given)."""
    problems = list(problems or [])
    data = _without_nulls(data)
    try:
        parsed = TypeAdapter(model).validate_python(data)
    except ValidationError as error:
        problems += _explain(model, error)
        parsed = None
    if problems:
        raise ConfigError(f"{where}: " + "; ".join(dict.fromkeys(problems)))
    return parsed


def _without_nulls(data: Any) -> Any:
    """`epochs:` with nothing after it means 'not given', as if the line were not there."""
    if isinstance(data, dict):
        return {k: _without_nulls(v) for k, v in data.items() if v is not None}
    return data


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxstring, _SHORT.maxother = 2, 4, 4, 40, 40


def _explain(model: type, error: ValidationError) -> list[str]:
    """One phrase per field in trouble: unknown (with the field meant), missing, or what it takes and what it got."""
    unknown: list[tuple[str, str | None]] = []
    missing: list[str] = []
    wrong: dict[str, str] = {}
    for item in error.errors():
        loc = [str(part) for part in item["loc"]]
        section, known, depth = model, fields_of(model), 0
        while depth < len(loc) and loc[depth] in known:
            sub = _submodel(known[loc[depth]])
            if sub is None or depth == len(loc) - 1:
                break
            section, known, depth = sub, fields_of(sub), depth + 1
        path = ".".join(loc[: depth + 1])
        if item["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
            guess = difflib.get_close_matches(loc[depth], list(known), n=1, cutoff=0.6)
            unknown.append((path, guess[0] if guess else None))
        elif item["type"] in ("missing", "missing_argument"):
            missing.append(path)
        elif path not in wrong:
            got = _SHORT.repr(item["input"])
            info = known.get(loc[depth])
            what = expects(info.annotation, info) if info is not None else expects(section)
            wrong[path] = f"{path} must be {what} (got {got})"
    guessed = {path.rsplit(".", 1)[0] + "." + guess if "." in path else guess for path, guess in unknown if guess}
    phrases = [f"{path} is not a known field" + (f" (did you mean {guess}?)" if guess else "") for path, guess in unknown]
    phrases += [f"{path} is missing" for path in missing if path not in guessed]
    return phrases + list(wrong.values())
