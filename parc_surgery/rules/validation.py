"""Validate parsed rules data against the schema; errors point at file:line:column.

`validate_rules` reads the data and positions from `parse_yaml` and writes nothing; it
returns the RuleFileSpec or raises RulesError whose `where` is the position of the
offending key (unknown keys) or value (everything else). `positioned_error` does the same
for any pydantic schema (the batch jobs file uses it). `kernel_misfit` says why a
kernel_size does not fit the feature map it applies to (rules matching and checkpoint
recipes both refuse such a swap).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ValidationError

from parc_surgery.errors import RulesError
from parc_surgery.rules.schema import RuleFileSpec
from parc_surgery.rules.yaml_source import DataPath, Positions

__all__ = ["format_path", "kernel_misfit", "positioned_error", "shown", "validate_rules"]

ModelAt = Callable[[DataPath], "type[BaseModel] | None"]


def shown(value: Any, limit: int = 60, *, typed: bool = True) -> str:
    """A short repr of a value from a file: never the whole of a long value (or of a secret
    a hostile file points at), with its type unless `typed` is false."""
    if isinstance(value, dict):
        return "a mapping"
    text = repr(value)
    text = text[:limit] + "..." if len(text) > limit else text
    return f"{text} ({type(value).__name__})" if typed else text


def kernel_misfit(kernel_size: int | tuple[int, int] | None, feature_size) -> str | None:
    """Why `kernel_size` is longer than a feature map of `feature_size` (H, W); None if it fits.

    A ParC kernel longer than its map is resampled down to the map's length at run time,
    so the extra length would only add parameters (1000 on a 6x6 map: +634%).
    """
    if kernel_size is None or feature_size is None:
        return None
    kh, kw = kernel_size if isinstance(kernel_size, tuple) else (kernel_size, kernel_size)
    h, w = feature_size
    if kh <= h and kw <= w:
        return None
    given = f"{kh}x{kw}" if isinstance(kernel_size, tuple) else str(kernel_size)
    return (
        f"kernel_size {given} is longer than the {h}x{w} feature map it applies to (a ParC "
        "kernel is at most as long as its map: a longer one is resampled down at run time "
        "and only adds parameters)"
    )


def format_path(path: DataPath) -> str:
    """("rules", 0, "match", "index") -> "rules[0].match.index"."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "the file"


def _data_path(loc: tuple[Any, ...], data: Any) -> DataPath:
    """The part of a pydantic `loc` that walks real data (drops union tags like 'list[int]')."""
    path: list[str | int] = []
    node = data
    for part in loc:
        in_dict = isinstance(node, dict) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if in_dict or in_list:
            node = node[part]
        elif isinstance(node, dict) and isinstance(part, str) and part not in node:
            path.append(part)  # a missing key: keep it to name it
            break
        else:
            continue
        path.append(part)
    return tuple(path)


def _model_at(path: DataPath) -> type[BaseModel] | None:
    """The schema class that validates the mapping at `path`."""
    from parc_surgery.rules import schema

    by_key = {
        "match": schema.MatchSpec,
        "replace": schema.ReplaceSpec,
        "defaults": schema.ReplaceOptions,
    }
    if not path:
        return schema.RuleFileSpec
    if len(path) >= 2 and path[-2] == "rules" and isinstance(path[-1], int):
        return schema.RuleSpec
    return by_key.get(str(path[-1]))


def _keys_of(model: type[BaseModel]) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items()]


def _describe(error: dict[str, Any], path: DataPath, model_at: ModelAt) -> str:
    kind = error["type"]
    where = format_path(path[:-1]) if path else "the file"
    if kind == "extra_forbidden":
        model = model_at(path[:-1])
        expected = f"; expected one of: {', '.join(_keys_of(model))}" if model else ""
        return f"unknown key {path[-1]!r} in {where}{expected}"
    if kind == "missing":
        return f"missing key {path[-1]!r} in {where}"
    message = str(error["msg"])
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    if kind in ("value_error", "assertion_error"):
        return f"{format_path(path)}: {message}"
    if message.startswith("Input should be "):
        message = "expected " + message[len("Input should be ") :]
    else:
        message = message[0].lower() + message[1:]
    return f"{format_path(path)}: {message}; found {shown(error.get('input'))}"


def positioned_error(
    exc: ValidationError,
    data: Any,
    positions: Positions,
    *,
    model_at: ModelAt,
    hint: str,
    prefix: DataPath = (),
) -> RulesError:
    """A RulesError at the first offending position of `exc` in file order (others listed).

    `data` is what was validated; it sits at `prefix` in the file (a job inside `jobs`).
    """
    described = []
    seen: set[DataPath] = set()
    for error in exc.errors(include_url=False):
        path = _data_path(tuple(error["loc"]), data)
        if path in seen:
            continue  # one message per place (a union reports each of its members)
        seen.add(path)
        is_key = error["type"] == "extra_forbidden"
        located = (*prefix, *path)
        _, mark = positions.nearest(located, key=is_key)
        where = positions.where(located, key=is_key)
        described.append(((mark.line, mark.column), where, _describe(error, path, model_at)))
    described.sort(key=lambda item: item[0])  # report in file order
    _, where, what = described[0]
    more = [f"{w}: {d}" for _, w, d in described[1:4]]
    if more:
        total = len(described) - 1
        what += f" (and {total} more: " + "; ".join(more) + ("; ..." if total > 3 else "") + ")"
    return RulesError(what, where=where, hint=hint)


def validate_rules(data: Any, positions: Positions) -> RuleFileSpec:
    """The validated RuleFileSpec; RulesError at the first offending position otherwise."""
    if not isinstance(data, dict):
        found = (
            "an empty file" if data is None else f"{type(data).__name__} {shown(data, typed=False)}"
        )
        raise RulesError(
            f"a rules file is a mapping with 'version: 1' and 'rules:'; found {found}",
            where=positions.where(()),
        )
    try:
        return RuleFileSpec.model_validate(data)
    except ValidationError as exc:
        raise positioned_error(
            exc, data, positions, model_at=_model_at, hint="See the rules reference in the README"
        ) from None
