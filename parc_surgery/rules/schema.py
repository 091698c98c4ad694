"""The rules file schema (pydantic v2). Unknown keys are errors everywhere.

A rules file::

    version: 1
    description: ParC-ResNet50 (one line, shown by `parc-surgery configs`)
    stages: [3, 4]            # default stages when --stages is not given
    defaults: {impl: auto, pe: true, init: paper}
    leaf: [SomeClass]         # classes kept opaque when tracing
    rules:
      - name: last-half-bottlenecks
        match: {module: Bottleneck, fraction: 0.5}
        replace: {with: parc_bottleneck, pe: true}

The Field descriptions below are the reference for every key.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from parc_surgery.blocks.registry import replacement_names
from parc_surgery.options import IMPL_CHOICES, SwapOptions

__all__ = [
    "KNOWN_REPLACEMENTS",
    "IMPLS",
    "MatchSpec",
    "ReplaceOptions",
    "ReplaceSpec",
    "RuleFileSpec",
    "RuleSpec",
    "known_replacements",
]

IMPLS = IMPL_CHOICES

# The built-in replacements (every builder registered in parc_surgery.blocks, kept equal by
# tests/blocks/test_blocks_registry.py); used only while the registry is still empty.
KNOWN_REPLACEMENTS = (
    "parc_bottleneck",
    "parc_cait",
    "parc_coatnet",
    "parc_conv",
    "parc_conv_block",
    "parc_convnext",
    "parc_dwconv",
    "parc_efficientformer",
    "parc_inverted_residual",
    "parc_maxvit",
    "parc_metaformer",
    "parc_mobilevit",
    "parc_mobilevitv2",
    "parc_regnet",
    "parc_swin",
    "parc_twins",
    "parc_vit",
    "parcnet_h_block",
    "parcnet_s_block",
    "parcnet_xs_block",
)

_SLICE = re.compile(r"^\s*(-?\d+)?\s*:\s*(-?\d+)?\s*$")


def known_replacements() -> list[str]:
    """Registered replacement names (the built-in list while none are registered)."""
    return replacement_names() or sorted(KNOWN_REPLACEMENTS)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _found(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=False)


# What `defaults:` and each rule's `replace:` hold: the one options type (parc_surgery.options).
ReplaceOptions = SwapOptions


class ReplaceSpec(SwapOptions):
    """What a matched module becomes: `with:` a registered replacement, plus options."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=False)

    with_: str = Field(
        alias="with",
        description="Name of a registered replacement, e.g. parc_bottleneck, "
        "parc_inverted_residual, parc_convnext, parc_mobilevit, parcnet_s_block, parc_dwconv, "
        "parc_regnet, parc_vit, parc_swin, parc_efficientformer, parc_mobilevitv2.",
    )

    @field_validator("with_")
    @classmethod
    def _registered(cls, value: str) -> str:
        names = known_replacements()
        if value not in names:
            raise ValueError(f"unknown replacement {value!r}; registered: {', '.join(names)}")
        return value


class MatchSpec(_Strict):
    """Which modules a rule selects: a kind (`module` or `op`), then filters.

    Filters apply in this order: chosen stages (and `stages`), position in the container
    (`index` or `fraction`), `name`. Stride-2 modules are never selected.
    """

    module: list[str] | None = Field(
        None,
        description="Block-level: class name (or list of class names) of the blocks to "
        "replace, e.g. Bottleneck, InvertedResidual, ConvNeXtBlock, MobileVitBlock.",
    )
    op: Literal["depthwise_conv"] | None = Field(
        None,
        description="Op-level: depthwise_conv selects every nn.Conv2d with "
        "groups == in_channels == out_channels.",
    )
    kernel: list[int] | None = Field(
        None, description="With op: allowed (square) kernel sizes, e.g. [3, 5, 7]. Default any."
    )
    stride: Literal[1] = Field(
        1, description="With op: the conv stride; only 1 (ParC is stride 1; stride-2 is skipped)."
    )
    stages: list[int] | None = Field(
        None,
        description="Only these stages (1 = stride 4, 2 = 8, 3 = 16, 4 = 32); intersected "
        "with the chosen stages.",
    )
    index: list[int] | str | None = Field(
        None,
        description="Positions in the block's container (0-based): an int, a list such as "
        "[3, 4, 5] (negative counts from the end), or a slice string such as '2:' or '-2:'.",
    )
    fraction: float | None = Field(
        None,
        gt=0,
        le=1,
        description="The last floor(n * fraction) blocks of each container of n blocks "
        "(0.5 on 6 blocks: 3, 4, 5). Exclusive with index.",
    )
    name: str | None = Field(
        None, description="fnmatch glob on the module's qualified path, e.g. 'layer3.*'."
    )

    @field_validator("module", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [value]
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            return value
        raise ValueError(f"expected a class name or a list of class names; found {_found(value)}")

    @field_validator("stride", mode="before")
    @classmethod
    def _stride_one(cls, value: Any) -> Any:
        if value != 1 or isinstance(value, bool):
            raise ValueError(f"expected 1 (ParC convs are stride 1); found {_found(value)}")
        return value

    @field_validator("stages", mode="before")
    @classmethod
    def _stage_list(cls, value: Any) -> Any:
        return _as_stage_list(value)

    @field_validator("index", mode="before")
    @classmethod
    def _index(cls, value: Any) -> Any:
        if _is_int(value):
            return [value]
        if isinstance(value, list) and all(_is_int(v) for v in value):
            return value
        if isinstance(value, str) and _SLICE.match(value) is not None:
            return value.replace(" ", "")
        expected = "an int, a list of ints or a slice like '2:', '-2:' or '1:3'"
        raise ValueError(f"expected {expected}; found {_found(value)}")

    @field_validator("kernel", mode="before")
    @classmethod
    def _kernel(cls, value: Any) -> Any:
        return [value] if isinstance(value, int) and not isinstance(value, bool) else value

    @model_validator(mode="after")
    def _consistent(self) -> MatchSpec:
        if (self.module is None) == (self.op is None):
            raise ValueError("give exactly one of 'module' (block-level) or 'op' (op-level)")
        if self.index is not None and self.fraction is not None:
            raise ValueError("give 'index' or 'fraction', not both")
        if self.module is not None and self.kernel is not None:
            raise ValueError("'kernel' applies only with 'op'")
        return self

    @property
    def level(self) -> str:
        return "block" if self.module is not None else "op"

    def select(self, n: int) -> set[int]:
        """Positions (0..n-1) that `index` / `fraction` select in a container of n blocks."""
        if self.fraction is not None:
            count = int(n * self.fraction + 1e-9)
            return set(range(n - count, n))
        if self.index is None:
            return set(range(n))
        if isinstance(self.index, str):
            found = _SLICE.match(self.index)
            assert found is not None
            start, stop = (int(g) if g is not None else None for g in found.groups())
            return set(range(n)[slice(start, stop)])
        return {i if i >= 0 else n + i for i in self.index if -n <= i < n}


class RuleSpec(_Strict):
    """One rule: what to match and what to replace it with."""

    name: str | None = Field(None, description="A name shown in plans, warnings and errors.")
    match: MatchSpec = Field(description="Which modules this rule selects.")
    replace: ReplaceSpec = Field(description="The replacement and its options.")


class RuleFileSpec(_Strict):
    """A whole rules file."""

    version: Literal[1] = Field(description="Schema version; must be 1.")
    description: str | None = Field(None, description="One line describing the file.")
    stages: list[int] | None = Field(
        None,
        description="Default stages when none are requested (1 = stride 4 ... 4 = stride 32); "
        "without it, every stage of the model.",
    )
    defaults: ReplaceOptions | None = Field(
        None, description="Replace options applied to every rule unless the rule sets them."
    )
    leaf: list[str] = Field(
        default_factory=list,
        description="Class names kept as opaque leaves when tracing (for untraceable modules).",
    )
    rules: list[RuleSpec] = Field(min_length=1, description="The rules, applied in order.")

    @field_validator("stages", mode="before")
    @classmethod
    def _stage_list(cls, value: Any) -> Any:
        return _as_stage_list(value)


def _as_stage_list(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if isinstance(value, list):
        for stage in value:
            if isinstance(stage, int) and not isinstance(stage, bool) and not 1 <= stage <= 8:
                raise ValueError(f"stages are numbered from 1 (stride 4); found {stage}")
    return value
