"""ModelGraph: what `analyze` learns about a model, as plain data."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import fx

__all__ = ["ModelGraph", "ModuleInfo", "StageInfo"]


@dataclass(frozen=True)
class ModuleInfo:
    """One submodule at the analysed input size (batch 1)."""

    path: str  # qualified name, e.g. "layer3.4" or "blocks.1.0.conv_dw"
    type_name: str  # class name, e.g. "Bottleneck"
    in_shape: tuple[int, ...] | None  # first tensor input; None if the module never ran
    out_shape: tuple[int, ...] | None  # first tensor output; None if the module never ran
    feature_size: tuple[int, int] | None  # (H, W) of a 4D output, else None
    stride: int | None  # input H / output H; None for non-spatial (tokens, pooled, 2D)
    stage: int | None  # stage by output stride (1 = 4, 2 = 8, 3 = 16...); 0 = stem
    container: str | None  # Sequential / ModuleList holding the enclosing block
    index: int | None  # 0-based position of the enclosing block in `container`
    container_len: int | None  # number of blocks in `container`
    layout: str | None = None  # NCHW / NHWC feature map, NLC patch tokens; None off the grid
    channels: int | None = None  # C of the map or of the tokens
    prefix_tokens: int = 0  # NLC: class / register tokens ahead of the grid

    @property
    def is_spatial(self) -> bool:
        """True when the output is a feature map (NCHW or NHWC) or patch tokens on a grid
        (NLC) that scales with the input."""
        return self.stride is not None

    @property
    def downsamples(self) -> bool:
        """True when the module changes the spatial size (a stride-2 block or conv)."""
        if self.in_shape is None or self.out_shape is None:
            return False
        if len(self.in_shape) != len(self.out_shape) or len(self.out_shape) not in (3, 4):
            return False
        axes = {"NHWC": slice(1, 3), "NLC": slice(1, 2)}.get(self.layout or "", slice(2, 4))
        return self.in_shape[axes] != self.out_shape[axes]


@dataclass(frozen=True)
class StageInfo:
    """One stage: every block whose output has stride 2 ** (stage + 1)."""

    stage: int
    stride: int
    feature_size: tuple[int, int]  # (H, W) of the stage's output at the input size
    channels: int  # output channels of the stage's last block
    containers: list[tuple[str, int]]  # (container path, number of blocks), in model order
    layout: str = "NCHW"  # of the stage's last block: NCHW, NHWC or NLC (patch tokens)


@dataclass
class ModelGraph:
    """Shapes, strides, stages and block containers of a model at one input size."""

    model_name: str
    input_size: tuple[int, int]  # (H, W)
    modules: dict[str, ModuleInfo]  # every submodule path, in `named_modules()` order
    stages: dict[int, StageInfo]  # spatial stages >= 1, ascending
    graph_module: fx.GraphModule | None = None  # the FX trace (proves traceability)
    output_shape: tuple[int, ...] | None = None  # the model's own output at batch 1
    no_spatial_reason: str | None = None  # why `stages` is empty, in words
    leaf_classes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def has_spatial_stages(self) -> bool:
        return bool(self.stages)

    @property
    def is_plain_vit(self) -> bool:
        """True when every block sits on one patch-token grid (a plain ViT / DeiT): the
        model has one stage, so its blocks are told apart by index, not by stage."""
        return len(self.stages) == 1 and next(iter(self.stages.values())).layout == "NLC"

    @property
    def max_stride(self) -> int | None:
        strides = [m.stride for m in self.modules.values() if m.stride is not None]
        return max(strides) if strides else None

    def stage_of(self, path: str) -> int | None:
        return self.modules[path].stage

    def in_stage(self, stage: int) -> list[ModuleInfo]:
        """Every module whose output belongs to `stage`, in model order."""
        return [m for m in self.modules.values() if m.stage == stage]
