"""YAML text -> plain data plus the file position of every key and value.

`parse_yaml` reads YAML text and writes nothing; it returns the data (dicts, lists,
scalars, as yaml.safe_load would) and a `Positions` map from a data path such as
("rules", 0, "match", "fraction") to the line and column of that key and of its value.
A syntax error, or a key given twice in one mapping, raises RulesError with its line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.constructor import SafeConstructor

from parc_surgery.errors import RulesError

__all__ = ["DataPath", "Mark", "Positions", "parse_yaml"]

DataPath = tuple[str | int, ...]


@dataclass(frozen=True)
class Mark:
    """A 1-based line and column in a file."""

    line: int
    column: int

    @classmethod
    def of(cls, node: yaml.Node) -> Mark:
        return cls(node.start_mark.line + 1, node.start_mark.column + 1)


@dataclass
class Positions:
    """Where each data path's key and value start in the source file."""

    source: str  # the file name shown in messages
    keys: dict[DataPath, Mark] = field(default_factory=dict)
    values: dict[DataPath, Mark] = field(default_factory=dict)

    def nearest(self, path: DataPath, *, key: bool = False) -> tuple[DataPath, Mark]:
        """The longest prefix of `path` that has a position, and that position.

        With `key`, the mark of the key itself (for "unknown key" errors) when there is one.
        """
        for cut in range(len(path), -1, -1):
            prefix = path[:cut]
            if key and prefix in self.keys:
                return prefix, self.keys[prefix]
            if prefix in self.values:
                return prefix, self.values[prefix]
        return (), Mark(1, 1)

    def where(self, path: DataPath, *, key: bool = False) -> str:
        """The "file:line:column" of `path` (or of its nearest located parent)."""
        _, mark = self.nearest(path, key=key)
        return f"{self.source}:{mark.line}:{mark.column}"

    def line_of(self, path: DataPath) -> str:
        """The "file:line" of `path`'s value."""
        _, mark = self.nearest(path)
        return f"{self.source}:{mark.line}"


def _syntax_error(source: str, exc: yaml.YAMLError) -> RulesError:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    context_mark = getattr(exc, "context_mark", None)
    if context and context_mark is not None and mark is not None and context_mark.line != mark.line:
        context += f" that starts at line {context_mark.line + 1}"
    what = f"YAML syntax error: {problem}" + (f" ({context})" if context else "")
    where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else source
    return RulesError(what, where=where, hint="Fix the YAML at that line")


class _Builder:
    """Turns a composed node tree into data, recording positions as it goes."""

    def __init__(self, positions: Positions):
        self.positions = positions
        self.scalars = SafeConstructor()

    def build(self, node: yaml.Node, path: DataPath) -> Any:
        self.positions.values[path] = Mark.of(node)
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        return self.scalars.construct_object(node, deep=True)

    def _mapping(self, node: yaml.MappingNode, path: DataPath) -> dict[Any, Any]:
        self.scalars.flatten_mapping(node)  # resolve YAML merge keys (<<: *anchor)
        data: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = self.scalars.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                raise RulesError(
                    f"a mapping key must be a plain value, found {type(key).__name__}",
                    where=f"{self.positions.source}:{Mark.of(key_node).line}:"
                    f"{Mark.of(key_node).column}",
                )
            if key in data:
                first = self.positions.keys[(*path, key)]
                raise RulesError(
                    f"key {key!r} is given twice in one mapping (first at line {first.line})",
                    where=f"{self.positions.source}:{Mark.of(key_node).line}:"
                    f"{Mark.of(key_node).column}",
                    hint="Keep one of them",
                )
            self.positions.keys[(*path, key)] = Mark.of(key_node)
            data[key] = self.build(value_node, (*path, key))
        return data


def parse_yaml(text: str, source: str) -> tuple[Any, Positions]:
    """(data, positions) of one YAML document; empty text gives None."""
    positions = Positions(source)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise _syntax_error(source, exc) from None
    if node is None:
        return None, positions
    try:
        return _Builder(positions).build(node, ()), positions
    except yaml.constructor.ConstructorError as exc:
        raise _syntax_error(source, exc) from None
