"""An original model and its conversion, side by side, for the analyses to compare."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from torch import nn

__all__ = ["ModelPair", "convert_pair"]


@dataclass
class ModelPair:
    """The untouched original, the converted model and the conversion's Plan."""

    original: nn.Module
    converted: nn.Module
    plan: Any

    @property
    def input_size(self) -> tuple[int, int]:
        return tuple(self.plan.input_size)

    @property
    def stages_label(self) -> str:
        return ",".join(map(str, self.plan.stages)) if self.plan.stages else "none"


def convert_pair(model_name: str, **convert_kwargs: Any) -> ModelPair:
    """convert() the model and keep a copy of the original taken just before the swap.

    The copy is taken in convert's on_plan hook, after source weights are loaded and
    before anything changes, so both models share every unswapped weight.
    """
    from parc_surgery.pipeline import convert

    kept: list[nn.Module] = []

    def keep_original(planned) -> None:
        kept.append(copy.deepcopy(planned.model))

    result = convert(model_name, on_plan=keep_original, **convert_kwargs)
    return ModelPair(kept[0].eval(), result.model.eval(), result.plan)
