"""The typed options of one swap: one type from the rules file to the block builder.

`SwapOptions` is what a rule's `replace:` (and the file's `defaults:`) says, validated
when the YAML is read; the same object rides in each Match, in each Swap of the Plan (as
plain JSON in a checkpoint's recipe, validated again when read back) and in the
ReplacementContext a builder receives. Unset fields keep their defaults; layering
(built-in <- file defaults <- rule) uses pydantic's record of which fields were set.

The backend names live here, not in `ops`, because the CLI lists them in `--help` and
must not import torch to do so; `parc_surgery.ops` re-exports them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["BACKENDS", "IMPL_CHOICES", "INIT_MODES", "SwapOptions", "layered"]

# The ParC backends, and what `impl` accepts: one of them or "auto" (chosen per shape).
BACKENDS = ("spatial", "fft", "circulant")
IMPL_CHOICES = ("auto", *BACKENDS)
INIT_MODES = ("paper", "from_local")

# A bound on kernel_size that no real feature map reaches: kernel weights are allocated
# from it, so an unbounded value in a rules file or a recipe could exhaust memory.
MAX_KERNEL_SIZE = 4096


def _found(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


class SwapOptions(BaseModel):
    """Options of a replacement. In a rules file: a rule's `replace:` or the file's `defaults:`.

    The Field descriptions below are the reference for every option key.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    impl: Literal["auto", "spatial", "fft", "circulant"] = Field(
        "auto",
        description="ParC backend: auto (chosen per shape), spatial (circular conv2d, the "
        "official form), fft (Fast-ParC) or circulant (matmul).",
    )
    pe: bool | Literal["first_in_container"] = Field(
        True,
        description="Position embedding: true (every replaced block), false (none), or "
        "first_in_container (only the first selected block of each container).",
    )
    init: Literal["paper", "from_local"] = Field(
        "paper",
        description="Weight init of the new ParC convs: paper (the family's official init) "
        "or from_local (derived from the replaced local kernel).",
    )
    kernel_size: int | tuple[int, int] | None = Field(
        None,
        description="Override of the global kernel length: one length, or [kH, kW] "
        "(default: the feature map's height / width at the input size).",
    )
    bias: bool | None = Field(
        None,
        description="Whether the new ParC convs have a bias. Default: as the family's "
        "official ParC block (ResNet, MobileNetV2, ConvNeXt: yes; the generic depthwise "
        "replacement: iff the replaced conv had one).",
    )
    mid_mix: bool = Field(
        False,
        description="MobileViT ParC blocks: shuffle channels between the two ParC stages "
        "(off in the published ParC-Net-S).",
    )

    @field_validator("pe", mode="before")
    @classmethod
    def _pe(cls, value: Any) -> Any:
        if isinstance(value, bool) or value == "first_in_container":
            return value
        raise ValueError(f"expected true, false or first_in_container; found {_found(value)}")

    @field_validator("kernel_size", mode="before")
    @classmethod
    def _kernel_size(cls, value: Any) -> Any:
        if isinstance(value, list):
            value = tuple(value)
        lengths = value if isinstance(value, tuple) else (value,)
        if value is None or (
            len(lengths) == (2 if isinstance(value, tuple) else 1)
            and all(isinstance(v, int) and not isinstance(v, bool) for v in lengths)
            and all(0 < v <= MAX_KERNEL_SIZE for v in lengths)
        ):
            return value
        raise ValueError(
            f"expected a length from 1 to {MAX_KERNEL_SIZE} or [kH, kW]; found {_found(value)}"
        )

    def set_fields(self) -> dict[str, Any]:
        """The options this object sets explicitly (for layering)."""
        own = SwapOptions.model_fields
        return {name: getattr(self, name) for name in self.model_fields_set if name in own}

    def to_dict(self) -> dict[str, Any]:
        data = self.model_dump(mode="json")
        if isinstance(self.kernel_size, tuple):
            data["kernel_size"] = list(self.kernel_size)
        return data


def layered(*layers: SwapOptions | None, **resolved: Any) -> SwapOptions:
    """Later layers override earlier ones field by field; `resolved` overrides all."""
    values: dict[str, Any] = {}
    for layer in layers:
        if layer is not None:
            values.update(layer.set_fields())
    values.update(resolved)
    return SwapOptions(**values)
