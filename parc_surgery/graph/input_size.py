"""Input sizes: parsing "224" / "224x288" and a model's default."""

from __future__ import annotations

import re

from torch import nn

from parc_surgery.errors import UsageError
from parc_surgery.models import DEFAULT_INPUT_SIZE, input_size_of

__all__ = [
    "DEFAULT_INPUT_SIZE",
    "MAX_INPUT_SIZE",
    "default_input_size",
    "parse_input_size",
    "resolve_input_size",
]

# A side no classification backbone is converted at; the shape probes allocate input-sized
# tensors, so a jobs file's `input_size: 100000` must not reach them (120 GB).
MAX_INPUT_SIZE = 4096

_SIZE = re.compile(r"^\s*(\d+)\s*(?:[xX]\s*(\d+)\s*)?$")


def parse_input_size(text: str) -> tuple[int, int]:
    """Parse "224" -> (224, 224) or "224x288" -> (224, 288), as (H, W)."""
    found = _SIZE.match(str(text))
    if found is None:
        raise UsageError(
            f"input size {text!r} is not a size",
            hint='Give one number for a square input ("224") or HxW ("224x288")',
        )
    h = int(found.group(1))
    w = int(found.group(2)) if found.group(2) is not None else h
    if h < 1 or w < 1:
        raise UsageError(f"input size {text!r} must be positive")
    if max(h, w) > MAX_INPUT_SIZE:
        raise UsageError(
            f"input size {text!r} is larger than {MAX_INPUT_SIZE} on a side",
            hint="convert at the size the model is trained at; ParC resamples its kernels "
            "when it runs at another size",
        )
    return h, w


def default_input_size(model: nn.Module) -> tuple[int, int]:
    """(H, W) from `model.pretrained_cfg["input_size"]`, else 224x224."""
    return input_size_of(model)


def resolve_input_size(
    value: str | int | tuple[int, int] | list[int] | None, model: nn.Module
) -> tuple[int, int]:
    """A CLI / API input size (text, int, (H, W) or None for the model's default) as (H, W)."""
    if value is None:
        return default_input_size(model)
    if isinstance(value, int):
        return parse_input_size(str(value))
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise UsageError(f"input size {tuple(value)} must be (H, W)")
        return parse_input_size(f"{int(value[0])}x{int(value[1])}")
    return parse_input_size(value)
