"""An original model and its conversion, side by side, for the analyses to compare.

Two ways to get a pair:

- `convert_pair(name)`: convert a timm model now; both models share every unswapped
  weight (a controlled comparison: only the swapped blocks differ).
- `checkpoint_pair(path, original_weights=FILE)`: the converted model is the checkpoint
  (`parc_surgery.load`), the original is rebuilt from the checkpoint's recipe and given
  the weights the user names (e.g. the trained original a recovered checkpoint came from).
  Without weights the original would be at random initialisation and share nothing with
  the converted model; that is refused unless asked for with `random_original=True`.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from parc_surgery.errors import CheckpointError, UsageError

__all__ = [
    "CHECKPOINT_SUFFIX",
    "ModelPair",
    "checkpoint_pair",
    "convert_pair",
    "is_checkpoint_path",
]

CHECKPOINT_SUFFIX = ".safetensors"


@dataclass
class ModelPair:
    """The original, the converted model and the conversion's Plan.

    `original_weights` names where the original's weights came from ("shared with the
    conversion", a file, or "random init"); `warnings` are for the user to read.
    """

    original: nn.Module
    converted: nn.Module
    plan: Any
    original_weights: str = "shared with the conversion"
    checkpoint: str | None = None
    warnings: list[str] = field(default_factory=list)

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


def is_checkpoint_path(text: str | os.PathLike) -> bool:
    """True for a checkpoint path rather than a timm model name.

    timm names never end in ".safetensors" and are not files, so a name that does either
    is read as a checkpoint (a missing .safetensors path then fails as a missing file).
    """
    path = Path(text)
    return path.suffix == CHECKPOINT_SUFFIX or path.is_file()


def checkpoint_pair(
    path: str | os.PathLike,
    *,
    original_weights: str | os.PathLike | None = None,
    random_original: bool = False,
) -> ModelPair:
    """The checkpoint's model and its original rebuilt from the recipe (see module doc).

    Reads the checkpoint and the weights file; raises UsageError when neither
    `original_weights` nor `random_original` is given (or both), CheckpointError /
    WeightsError (exit 6) for a bad checkpoint or weights that do not fit the original.
    """
    from parc_surgery.checkpoint import load, load_source_weights, read_recipe
    from parc_surgery.models import create_model
    from parc_surgery.plan import Plan

    if original_weights is not None and random_original:
        raise UsageError("give --original-weights or --random-original, not both")
    if original_weights is None and not random_original:
        raise UsageError(
            f"{path}: the original model needs weights to compare against",
            hint="pass --original-weights FILE (the original's state_dict, e.g. the weights "
            "the checkpoint was converted from), or --random-original to compare against "
            "an untrained original that shares no weights with the checkpoint",
        )
    recipe = read_recipe(path)
    try:
        plan = Plan.from_dict(recipe["plan"])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: its recipe is incomplete ({err})") from None
    converted = load(path)
    original = create_model(plan.model, plan.model_args)
    warnings: list[str] = []
    if original_weights is None:
        source = "random init"
        warnings.append(
            f"the original {plan.model} is at random initialisation (--random-original): it "
            "shares no weights with the checkpoint, so differences show more than the swap"
        )
    else:
        source = str(original_weights)
        sha = load_source_weights(original, original_weights)
        recorded = recipe.get("source_weights_sha256")
        if recorded and recorded != sha:
            warnings.append(
                f"{original_weights} is not the weights file {path} was converted from "
                f"(sha256 {sha[:12]}... vs {recorded[:12]}... in the recipe); comparing anyway"
            )
    if not plan.swaps:
        warnings.append(f"{path} has no swaps: both models have the same architecture")
    return ModelPair(
        original.eval(),
        converted.eval(),
        plan,
        original_weights=source,
        checkpoint=str(path),
        warnings=warnings,
    )
