"""Load YAML files into pydantic models; every error names the file, the line, the field and a fix."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class ConfigError(Exception):
    """A configuration or policy file is unusable; `problems` lists one line per fault."""

    def __init__(self, path: str, problems: Sequence[str]) -> None:
        self.path = path
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (PyYAML silently keeps the last one)."""


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None,
                f"duplicate key {key!r} (first at line {seen[key] + 1}); remove one of them",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_yaml(path: str | Path) -> tuple[Any, yaml.Node | None]:
    """Parse one YAML file into (data, node tree); raise ConfigError with the line on syntax errors."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(name, [f"{name}: cannot read file: {error.strerror or error}"]) from None
    except UnicodeDecodeError as error:
        raise ConfigError(name, [f"{name}: not UTF-8 text ({error.reason}); save the file as UTF-8"]) from None
    try:
        node = yaml.compose(text, Loader=_Loader)
        data = yaml.load(text, Loader=_Loader)  # _Loader is a SafeLoader
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = f":{mark.line + 1}" if mark else ""
        raise ConfigError(name, [f"{name}{line}: YAML syntax: {error.problem or error}"]) from None
    except yaml.YAMLError as error:
        raise ConfigError(name, [f"{name}: YAML syntax: {error}"]) from None
    return data, node


def _line_of(node: yaml.Node | None, loc: Sequence[int | str]) -> int | None:
    """1-based line of the deepest node reachable along a pydantic error location."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if getattr(k, "value", None) == part), None)
            if match is None:
                # pydantic puts union tags (the rule kind) into locations: skip those.
                continue
            node = match
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            continue
        line = node.start_mark.line + 1
    return line


def _field_path(loc: Sequence[int | str], tags: set[str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in tags:
            continue
        else:
            out += f".{part}" if out else part
    return out or "(top level)"


def _known_fields(model: type[BaseModel], loc: Sequence[int | str]) -> list[str]:
    """Field names of the model reached by loc (best effort, for 'did you mean')."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int) or current is None:
            continue
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            current = _REGISTRY_HINTS.get(str(part), current)
            continue
        annotation = fields[part].annotation
        current = _inner_model(annotation)
    fields = getattr(current, "model_fields", None)
    return sorted(fields) if fields else []


def _inner_model(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


# Rule kinds register their models here so that 'did you mean' also works inside rules.
_REGISTRY_HINTS: dict[str, type[BaseModel]] = {}


def register_hint(tag: str, model: type[BaseModel]) -> None:
    """Let error messages suggest field names of a tagged union member (a rule kind)."""
    _REGISTRY_HINTS[tag] = model


def _suggestion(error: Any, model: type[BaseModel]) -> str:
    kind = error["type"]
    loc = error["loc"]
    if kind == "extra_forbidden":
        field = str(loc[-1])
        close = difflib.get_close_matches(field, _known_fields(model, loc), n=1)
        return f"unknown field; did you mean '{close[0]}'?" if close else "unknown field; remove it"
    if kind == "missing":
        return f"add '{loc[-1]}:'"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        expected = error.get("ctx", {}).get("expected_tags", "")
        tags = [t.strip().strip("'") for t in expected.split(",") if t.strip()]
        close = difflib.get_close_matches(str(error.get("ctx", {}).get("tag", "")), tags, n=1)
        return (f"did you mean '{close[0]}'? " if close else "") + f"use one of: {expected}"
    if kind == "literal_error":
        return f"use one of: {error.get('ctx', {}).get('expected', '')}"
    return ""


def validate(model: type[M], data: Any, node: yaml.Node | None, path: str,
             tags: set[str] | None = None) -> M:
    """Validate parsed YAML against a model; ConfigError lines read 'file:line: field: problem (fix)'."""
    try:
        return model.model_validate(data if data is not None else {})
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = tuple(error["loc"])
            line = _line_of(node, loc)
            where = f"{path}:{line}" if line else path
            message = error["msg"].removeprefix("Value error, ")
            hint = _suggestion(error, model)
            field = _field_path(loc, tags or set())
            problems.append(f"{where}: {field}: {message}" + (f" ({hint})" if hint else ""))
        raise ConfigError(path, problems) from None


def problem_at(path: str | Path, loc: Sequence[int | str], message: str) -> str:
    """A 'file:line: field: problem' line for a check made after validation (e.g. a missing file)."""
    _, node = read_yaml(path)
    line = _line_of(node, loc)
    return f"{path}:{line}: {_field_path(loc, set())}: {message}" if line else f"{path}: {message}"


def load(model: type[M], path: str | Path, tags: set[str] | None = None) -> M:
    """Read and validate one YAML file."""
    data, node = read_yaml(path)
    return validate(model, data, node, str(path), tags)


def line_at(node: yaml.Node | None, loc: Sequence[int | str]) -> int | None:
    """1-based line of what `loc` (e.g. ("rules", 2, "moderators", 0)) reaches in a node tree."""
    return _line_of(node, loc)


def field_path(loc: Sequence[int | str]) -> str:
    """A location as a field path: ("rules", 2, "moderators", 0) -> 'rules[2].moderators[0]'."""
    return _field_path(loc, set())
