"""Load a YAML file into a pydantic model, reporting every error with file:line:column.

Analysts edit these files by hand; a config error must say where it is and all of them
must be reported at once, not one per attempt.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

Model = TypeVar("Model", bound=BaseModel)
Location = tuple[int, int]
DataPath = tuple[Any, ...]


@dataclass(slots=True)
class Positions:
    """Where each value, and each mapping key, of a YAML document starts."""

    values: dict[DataPath, Location]
    keys: dict[DataPath, Location]

    def of_value(self, path: DataPath) -> Location:
        """Position of the value at `path`, or of its nearest enclosing value."""
        for n in range(len(path), -1, -1):
            if path[:n] in self.values:
                return self.values[path[:n]]
        return 1, 1

    def of_key(self, path: DataPath) -> Location:
        """Position of the key naming `path`, falling back to its value's position."""
        return self.keys.get(path) or self.of_value(path)


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem in one file, at a line and column (1-based)."""

    file: str
    line: int
    column: int
    where: str
    message: str

    def __str__(self) -> str:
        prefix = f"{self.file}:{self.line}:{self.column}"
        return f"{prefix}: {self.where}: {self.message}" if self.where else (
            f"{prefix}: {self.message}")


class ConfigError(Exception):
    """A configuration file could not be used; carries every issue found."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


def _mark(node: yaml.Node) -> Location:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _construct(node: yaml.Node, path: DataPath, positions: Positions) -> Any:
    """Build plain Python data from a YAML node, remembering where each path starts."""
    positions.values[path] = _mark(node)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = yaml.safe_load(yaml.serialize(key_node))
            positions.keys[(*path, key)] = _mark(key_node)
            out[key] = _construct(value_node, (*path, key), positions)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(item, (*path, i), positions) for i, item in enumerate(node.value)]
    return yaml.safe_load(yaml.serialize(node))


def _where(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _data_location(loc: tuple[Any, ...], positions: Positions) -> tuple[Any, ...]:
    """The error's location in the file's data: pydantic adds the tag of a union's member
    (`to.mllp.port`) and validator names that are not keys of the document; drop them."""
    path: tuple[Any, ...] = ()
    for i, part in enumerate(loc):
        candidate = (*path, part)
        if candidate in positions.values or i == len(loc) - 1:
            path = candidate
    return path


def _issue_for(file: str, err: Any, positions: Positions) -> ConfigIssue:
    loc = _data_location(tuple(err["loc"]), positions)
    if err["type"] == "extra_forbidden":
        line, col = positions.of_key(loc)
        return ConfigIssue(file, line, col, _where(loc[:-1]), f"unknown key '{loc[-1]}'")
    line, col = positions.of_value(loc)
    return ConfigIssue(file, line, col, _where(loc), err["msg"])


def load_yaml(path: Path) -> tuple[Any, Positions]:
    """Parse a YAML file into plain data plus a map from data paths to positions."""
    text = path.read_text(encoding="utf-8")
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([ConfigIssue(str(path), line, col, "", f"YAML: {problem}")]) from exc
    positions = Positions({}, {})
    data = {} if root is None else _construct(root, (), positions)
    return data, positions


def validate(model: type[Model], data: Any, *, file: str, positions: Positions) -> Model:
    """Validate plain data against a model; every error becomes a located ConfigIssue."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        issues = [_issue_for(file, err, positions) for err in exc.errors()]
        raise ConfigError(issues) from exc


def load_model(model: type[Model], path: Path) -> Model:
    """Read and validate one YAML file."""
    data, positions = load_yaml(path)
    return validate(model, data, file=str(path), positions=positions)
