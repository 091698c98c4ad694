"""The one YAML loader of parc-surgery (rules files, jobs files, --model-arg values).

`parse_yaml` reads YAML text and writes nothing; it returns the data (dicts, lists,
scalars, as yaml.safe_load would) and a `Positions` map from a data path such as
("rules", 0, "match", "fraction") to the line and column of that key and of its value.
`read_yaml_file` reads a file first: a regular file, at most `max_yaml_bytes()` bytes
(1 MiB unless PARC_SURGERY_MAX_YAML_BYTES says otherwise), UTF-8 text.

The files may come from someone else, so the loader refuses what could exhaust memory or
the stack: aliases (`*name`, and so merge keys; an alias "bomb" of a few hundred bytes
expands to gigabytes), nesting deeper than MAX_DEPTH and more than MAX_NODES nodes. These
are checked on libyaml's event stream before anything is composed. Every refusal, syntax
error or key given twice raises RulesError (exit 2) naming the file and, where known,
the line and column.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.constructor import SafeConstructor

from parc_surgery.errors import RulesError, UsageError

__all__ = [
    "DEFAULT_MAX_YAML_BYTES",
    "MAX_DEPTH",
    "MAX_NODES",
    "YAML_LIMIT_ENV",
    "DataPath",
    "Mark",
    "Positions",
    "max_yaml_bytes",
    "parse_yaml",
    "read_yaml_file",
]

DataPath = tuple[str | int, ...]

DEFAULT_MAX_YAML_BYTES = 1 << 20
YAML_LIMIT_ENV = "PARC_SURGERY_MAX_YAML_BYTES"
MAX_DEPTH = 32  # a rules file needs 5 levels, a jobs file 5
MAX_NODES = 100_000  # about 5000 jobs; parsing that many takes about a second

# libyaml when present (every PyPI wheel has it): 10x faster than the pure-Python parser.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_PLAIN_COLLECTIONS = ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")


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
        if isinstance(node, yaml.CollectionNode) and node.tag not in _PLAIN_COLLECTIONS:
            raise RulesError(
                f"YAML tag {node.tag!r} is not accepted: only plain mappings and lists are",
                where=f"{self.positions.source}:{Mark.of(node).line}:{Mark.of(node).column}",
                hint="Remove the tag",
            )
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


def _at(source: str, mark: Any) -> str:
    return f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else source


def _check_events(text: str, source: str) -> None:
    """Refuse aliases, deep nesting and too many nodes, reading events only (no recursion)."""
    depth = nodes = 0
    for event in yaml.parse(text, Loader=_LOADER):
        if isinstance(event, yaml.AliasEvent):
            raise RulesError(
                f"YAML aliases are not accepted (*{event.anchor}): an alias can make a "
                "small file expand to gigabytes",
                where=_at(source, event.start_mark),
                hint="Write the value out where the alias is (merge keys '<<' need aliases too)",
            )
        if isinstance(event, yaml.NodeEvent):
            nodes += 1
            if nodes > MAX_NODES:
                raise RulesError(
                    f"the file has more than {MAX_NODES} YAML nodes",
                    where=_at(source, event.start_mark),
                    hint="Split it into smaller files",
                )
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise RulesError(
                    f"YAML nested deeper than {MAX_DEPTH} levels",
                    where=_at(source, event.start_mark),
                    hint="Flatten the structure",
                )
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def parse_yaml(text: str, source: str) -> tuple[Any, Positions]:
    """(data, positions) of one YAML document; empty text gives None."""
    positions = Positions(source)
    limit = max_yaml_bytes()
    if len(text) > limit:
        raise _too_large(source, len(text), limit)
    try:
        _check_events(text, source)
        node = yaml.compose(text, Loader=_LOADER)
    except yaml.YAMLError as exc:
        raise _syntax_error(source, exc) from None
    if node is None:
        return None, positions
    try:
        return _Builder(positions).build(node, ()), positions
    except yaml.constructor.ConstructorError as exc:
        raise _syntax_error(source, exc) from None
    except (ValueError, OverflowError) as exc:  # e.g. an int of 5000 digits, a bad date
        raise RulesError(
            f"a YAML value cannot be read: {' '.join(str(exc).split())[:200]}", where=source
        ) from None


def max_yaml_bytes() -> int:
    """The size limit of a YAML file: PARC_SURGERY_MAX_YAML_BYTES, else 1 MiB."""
    text = os.environ.get(YAML_LIMIT_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_YAML_BYTES
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise UsageError(
            f"{YAML_LIMIT_ENV}={text!r} is not a positive number of bytes",
            hint=f"e.g. {YAML_LIMIT_ENV}={4 << 20} for 4 MiB, or unset it for 1 MiB",
        )
    return value


def _too_large(source: str, size: int, limit: int) -> RulesError:
    return RulesError(
        f"{source} is {size} bytes, more than the {limit} a YAML file may have",
        hint=f"raise the limit with the environment variable {YAML_LIMIT_ENV}=BYTES if the "
        "file is really meant to be that large",
    )


def read_yaml_file(path: str | os.PathLike, *, kind: str = "rules file") -> tuple[Any, Positions]:
    """(data, positions) of a YAML file, read with the limits above; RulesError otherwise."""
    shown = os.fspath(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise RulesError(f"{kind} {shown} does not exist", hint="check the path") from None
    except OSError as err:
        raise RulesError(f"cannot read {kind} {shown}: {err.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise RulesError(f"{kind} {shown} is a directory", hint=f"give the {kind} inside it")
    if not stat.S_ISREG(st.st_mode):
        raise RulesError(f"{kind} {shown} is not a regular file", hint="give a YAML file")
    limit = max_yaml_bytes()
    if st.st_size > limit:
        raise _too_large(shown, st.st_size, limit)
    try:
        with open(path, "rb") as handle:
            raw = handle.read(limit + 1)  # never more, even if the file grows meanwhile
    except OSError as err:
        raise RulesError(f"cannot read {kind} {shown}: {err.strerror}") from None
    if len(raw) > limit:
        raise _too_large(shown, len(raw), limit)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise RulesError(
            f"{kind} {shown} is not UTF-8 text (byte {raw[err.start]:#04x} at offset "
            f"{err.start}): is it a binary file?",
            hint=f"a {kind} is YAML text in UTF-8",
        ) from None
    return parse_yaml(text, shown)
