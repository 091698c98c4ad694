"""The recipe inside a checkpoint, validated by a strict schema before anything is built.

A checkpoint may come from a stranger, and its recipe decides what `load` builds: the timm
model and its keyword arguments, the input size, every swap. `validate_recipe` reads the
recipe's JSON text and writes nothing; it returns the recipe as plain data and its Plan, or
raises CheckpointError (exit 6) naming the first key that is unknown, of the wrong type or
out of bounds. Bounds: names and paths are short and plain, sizes at most
MAX_FEATURE_SIZE, a swap's kernel no longer than its feature map, model arguments as
`model_args.check_model_args` allows. What the recipe builds is then compared with the
tensors actually in the file before any real memory is allocated (checkpoint.py).
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from parc_surgery.errors import CheckpointError, ParcSurgeryError
from parc_surgery.model_args import check_model_args
from parc_surgery.options import SwapOptions
from parc_surgery.plan import Plan
from parc_surgery.rules.validation import kernel_misfit

__all__ = ["CHECKPOINT_FORMAT", "MAX_FEATURE_SIZE", "MAX_RECIPE_BYTES", "validate_recipe"]

CHECKPOINT_FORMAT = "parc-surgery/1"
MAX_FEATURE_SIZE = 4096  # input and feature map sides; kernel weights are allocated from them
MAX_RECIPE_BYTES = 4 << 20

_Count = Annotated[int, Field(ge=0, le=1 << 50)]
_Side = Annotated[int, Field(ge=1, le=MAX_FEATURE_SIZE)]
_Size = Annotated[list[_Side], Field(min_length=2, max_length=2)]  # [H, W]
_Text = Annotated[str, Field(max_length=4096)]
_Name = Annotated[str, Field(max_length=128, pattern=r"^[A-Za-z0-9_.+-]*$")]
# A dotted module path; a container may be a run of a flat Sequential: "features[7:11]".
# A name may hold a hyphen: torchvision's RegNet blocks are "block3-1".
_ModulePath = Annotated[
    str,
    Field(max_length=512, pattern=r"^([A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*(\[\d+:\d+\])?)?$"),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class SwapSpec(_Strict):
    """One swap of the recipe's plan (plan.Swap as data)."""

    path: _ModulePath = Field(min_length=1)
    module_type: _Name
    stage: int = Field(ge=0, le=8)
    container: _ModulePath
    index: int = Field(ge=-1, le=1 << 20)
    container_len: int = Field(ge=0, le=1 << 20)
    feature_size: _Size
    replacement: _Name
    options: SwapOptions
    rule: _Text
    first_in_container: bool = False
    old_module: _Text = ""
    new_module: _Text = ""
    params_before: _Count = 0
    params_after: _Count = 0
    macs_before: _Count = 0
    macs_after: _Count = 0
    impl_auto: _Name = ""
    prefix_tokens: int = Field(0, ge=0, le=64)  # a ViT's class / register tokens

    @model_validator(mode="before")
    @classmethod
    def _legacy_options(cls, data: Any) -> Any:
        # 0.1 recipes kept first_in_container among the options.
        if isinstance(data, dict) and isinstance(data.get("options"), dict):
            options = dict(data["options"])
            if "first_in_container" in options:
                data = {**data, "options": options}
                data.setdefault("first_in_container", options.pop("first_in_container"))
        return data

    @model_validator(mode="after")
    def _kernel_fits(self) -> SwapSpec:
        misfit = kernel_misfit(self.options.kernel_size, self.feature_size)
        if misfit:
            raise ValueError(f"swap {self.path}: {misfit}")
        return self


class SourceSpec(_Strict):
    """Where the converted model came from (plan.ModelSource as data; recipes from 0.2 on)."""

    kind: Literal["timm", "torchvision", "custom"]
    name: _Name | None = None
    class_path: Annotated[str, Field(alias="class", max_length=256, pattern=r"^[\w.<>]+$")]


class PlanSpec(_Strict):
    """The recipe's plan (plan.Plan as data)."""

    # A timm name (with a pretrained tag), "torchvision:NAME", or a custom model's class;
    # never a "hf-hub:" or "local-dir:" source, which would read a config from elsewhere.
    model: Annotated[str, Field(max_length=128, pattern=r"^(torchvision:)?[A-Za-z0-9_.+-]+$")]
    model_args: dict[str, Any]
    input_size: _Size
    stages: list[Annotated[int, Field(ge=0, le=8)]] = Field(max_length=16)
    rules_source: _Text
    rules: dict[str, Any]
    swaps: list[SwapSpec] = Field(max_length=4096)
    warnings: list[_Text] = Field(max_length=4096)
    params_total_before: _Count = 0
    macs_total_before: _Count = 0
    params_total_after: _Count = 0  # derived from the swaps; accepted and recomputed
    macs_total_after: _Count = 0
    format_version: Literal[1] = 1
    source: SourceSpec | None = None  # None before 0.2: a timm model named by `model`

    @field_validator("model_args", mode="after")
    @classmethod
    def _model_args(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            return check_model_args(value)
        except ParcSurgeryError as err:
            raise ValueError(err.what) from None


class RecipeSpec(_Strict):
    """What `checkpoint.save` stores as the `recipe` metadata."""

    format: Literal["parc-surgery/1"]
    parc_surgery_version: Annotated[str, Field(max_length=64)]
    timm_version: Annotated[str, Field(max_length=64)]
    plan: PlanSpec
    source_weights_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None
    seed: int | None = Field(None, ge=-(1 << 63), lt=1 << 64)
    training: dict[str, Any] | None = None  # the finetune record; free-form, not built from


def _first_problem(err: ValidationError) -> str:
    first = err.errors(include_url=False)[0]
    where = ".".join(str(part) for part in first["loc"]) or "the recipe"
    message = str(first["msg"]).removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    found = first.get("input")
    shown = repr(found) if not isinstance(found, (dict, list)) else type(found).__name__
    shown = shown[:60] + ("..." if len(shown) > 60 else "")
    more = len(err.errors()) - 1
    return f"{where}: {message} (found {shown})" + (f"; and {more} more problems" if more else "")


def validate_recipe(text: str, source: str) -> tuple[dict[str, Any], Plan]:
    """(recipe as plain data, its Plan) from the recipe's JSON; CheckpointError if it is invalid."""
    hint = "the file was edited or is corrupt: convert the model again with parc-convert"
    if len(text) > MAX_RECIPE_BYTES:
        raise CheckpointError(
            f"{source}: its recipe is {len(text)} bytes, more than the {MAX_RECIPE_BYTES} "
            "a recipe can be",
            hint=hint,
        )
    try:
        RecipeSpec.model_validate_json(text)
    except ValidationError as err:
        problem = _first_problem(err)
        raise CheckpointError(f"{source}: its recipe is invalid: {problem}", hint=hint) from None
    data = json.loads(text)  # valid JSON of bounded depth: the schema just parsed it
    return data, Plan.from_dict(data["plan"])
