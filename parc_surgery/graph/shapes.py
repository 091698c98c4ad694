"""Shape propagation with forward hooks on the real model.

`record_shapes` reads the model (it runs one batch-1 forward under `torch.no_grad` in
eval mode) and writes nothing on it: hooks are removed and every module's training
flag is restored afterwards. It returns, for every submodule that ran, the shape of its
first tensor input and of its first tensor output (first call only). Hooks see the
inside of FX leaf modules too, so every module path gets shapes, not only FX leaves.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from parc_surgery.models import input_channels

__all__ = ["Shape", "ShapeRecord", "eval_mode", "first_tensor", "record_shapes"]

Shape = tuple[int, ...]
ShapeRecord = dict[str, tuple[Shape | None, Shape | None]]


def first_tensor(value: Any) -> torch.Tensor | None:
    """The first tensor found in `value` (a tensor, or nested tuples / lists / dicts)."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (tuple, list)):
        for item in value:
            found = first_tensor(item)
            if found is not None:
                return found
    return None


def _shape(value: Any) -> Shape | None:
    tensor = first_tensor(value)
    return None if tensor is None else tuple(tensor.shape)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put `model` in eval mode; restore every submodule's own training flag on exit."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in flags:
            module.training = training


def _example_input(model: nn.Module, input_size: tuple[int, int]) -> torch.Tensor:
    ref = next(iter(model.parameters()), None)
    dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float32
    device = ref.device if ref is not None else torch.device("cpu")
    return torch.zeros(1, input_channels(model), *input_size, dtype=dtype, device=device)


def record_shapes(model: nn.Module, input_size: tuple[int, int]) -> ShapeRecord:
    """Run `model` once at `input_size` (batch 1) and return {path: (in_shape, out_shape)}.

    The root module's shapes are under the key "". Exceptions from the forward propagate
    unchanged.
    """
    record: ShapeRecord = {}
    handles = []

    def hook_for(path: str):
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            if path not in record:
                record[path] = (_shape(args), _shape(output))

        return hook

    for path, module in model.named_modules():
        handles.append(module.register_forward_hook(hook_for(path)))
    try:
        with torch.no_grad(), eval_mode(model):
            model(_example_input(model, input_size))
    finally:
        for handle in handles:
            handle.remove()
    return record
