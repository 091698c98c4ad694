"""Layouts of spatial outputs: NCHW and NHWC feature maps, and NLC patch tokens on a grid.

`spatial_outputs` reads a shape record (batch 1), the input size, the strides
`nominal_strides` found for 4D outputs and the model's number of prefix tokens, and
writes nothing; it returns, for every output that lies on a spatial grid, its stride,
layout, grid size (H, W), channels and prefix tokens. A 3D output (1, N, C) is patch
tokens when N minus the prefix tokens (class / register tokens) is the H * W of a feature
map with C channels elsewhere in the model (a ViT's patch-embedding conv, the map that
EfficientFormer flattens): the tokens then have that map's stride and grid.
"""

from __future__ import annotations

from dataclasses import dataclass

from parc_surgery.graph.shapes import Shape, ShapeRecord

__all__ = ["LAYOUTS", "NCHW", "NHWC", "NLC", "Spatial", "map_layout", "spatial_outputs"]

NCHW, NHWC, NLC = "NCHW", "NHWC", "NLC"  # timm's names (timm.layers.Format)
LAYOUTS = (NCHW, NHWC, NLC)


@dataclass(frozen=True)
class Spatial:
    """Where one output sits on the model's spatial grid."""

    stride: int
    layout: str  # NCHW, NHWC or NLC
    feature_size: tuple[int, int]  # (H, W) of the map, or of the token grid
    channels: int
    prefix_tokens: int = 0  # NLC: tokens ahead of the grid (class, register tokens)


def fits(dims: tuple[int, ...], input_size: tuple[int, int], stride: int) -> bool:
    """True when `dims` is (H / stride, W / stride) give or take the padding's one pixel."""
    return all(abs(o - size / stride) <= 1 for o, size in zip(dims, input_size, strict=True))


def map_layout(out: Shape, input_size: tuple[int, int], stride: int | None) -> str | None:
    """NCHW when out[2:] is the map at `stride`, else NHWC when out[1:3] is, else None.

    NCHW wins a tie (a map whose channels equal its width reads the same either way).
    """
    if stride is None or len(out) != 4:
        return None
    if fits(out[2:], input_size, stride):
        return NCHW
    if fits(out[1:3], input_size, stride):
        return NHWC
    return None


def _map(out: Shape, layout: str, stride: int) -> Spatial:
    if layout == NCHW:
        return Spatial(stride, NCHW, (out[2], out[3]), out[1])
    return Spatial(stride, NHWC, (out[1], out[2]), out[3])


def spatial_outputs(
    record: ShapeRecord,
    input_size: tuple[int, int],
    strides: dict[str, int | None],
    prefix_tokens: int = 0,
) -> dict[str, Spatial]:
    """{path: Spatial} for every feature map and every patch-token output in `record`."""
    found: dict[str, Spatial] = {}
    grids: dict[tuple[int, int], Spatial] = {}  # (channels, H * W) -> the map
    for path, (_, out) in record.items():
        layout = map_layout(out, input_size, strides.get(path)) if out is not None else None
        if layout is not None:
            found[path] = _map(out, layout, strides[path])
            h, w = found[path].feature_size
            grids.setdefault((found[path].channels, h * w), found[path])
    for path, (_, out) in record.items():
        # Batch 1 only: window-partitioned tokens carry the windows in the batch axis.
        if out is None or len(out) != 3 or out[0] != 1:
            continue
        # With the model's prefix tokens, or without (CaiT adds its class token late).
        for prefix in dict.fromkeys((prefix_tokens, 0)):
            grid = grids.get((out[2], out[1] - prefix)) if out[1] - prefix > 1 else None
            if grid is not None:
                found[path] = Spatial(grid.stride, NLC, grid.feature_size, out[2], prefix)
                break
    return found
