"""Strides and stages from recorded shapes.

`nominal_strides` reads two shape records of the same model (the requested input size
and a probe size that differs by a multiple of 64) and writes nothing; it returns each
module's output stride. Comparing two sizes makes strides exact at any input size and
tells global outputs (pooled to 1x1 at every size) from real feature maps.
`stage_of_stride` and `build_stages` turn strides into stage numbers and StageInfos.
"""

from __future__ import annotations

import math

from parc_surgery.graph.layouts import map_layout
from parc_surgery.graph.model_graph import ModuleInfo, StageInfo
from parc_surgery.graph.shapes import ShapeRecord

__all__ = ["PROBE_DELTA", "build_stages", "nominal_strides", "probe_sizes", "stage_of_stride"]

# Every stride up to 64 divides it, so (probe - input) / (probe out - out) is exact.
PROBE_DELTA = 64


def probe_sizes(input_size: tuple[int, int]) -> list[tuple[int, int]]:
    """Probe sizes to try, cheapest first: 64 smaller when that still leaves 64, else larger."""
    h, w = input_size
    smaller = (h - PROBE_DELTA, w - PROBE_DELTA)
    larger = (h + PROBE_DELTA, w + PROBE_DELTA)
    return [smaller, larger] if min(smaller) >= PROBE_DELTA else [larger]


def _power_of_two(ratio: float) -> int:
    return 2 ** max(0, round(math.log2(ratio))) if ratio > 0 else 1


def nominal_strides(
    record: ShapeRecord,
    input_size: tuple[int, int],
    probe: ShapeRecord | None,
    probe_size: tuple[int, int] | None,
) -> dict[str, int | None]:
    """{path: output stride} for feature maps (NCHW or NHWC); None for everything else.

    The stride is input H / output H: measured from the change between the two sizes when
    a probe ran, else from one size, rounded to a power of two, or else the exact ratio
    (a ViT's 14-pixel patches, ConvMixer's 7). The output must then be about (H / s, W / s)
    in one of the two layouts (graph.layouts); other 4D outputs (attention maps, tokens
    laid out as (B, heads, N, d)) and a 1x1 output from an input larger than 64 are not
    spatial. Without a probe (models that run at one size only, such as a plain ViT or a
    Swin), a map's own size is all there is.
    """
    strides: dict[str, int | None] = {}
    height = input_size[0]
    for path, (_, out) in record.items():
        strides[path] = None
        if out is None or len(out) != 4 or (out[2] == out[3] == 1 and min(input_size) > 64):
            continue
        probed = probe.get(path, (None, None))[1] if probe is not None else None
        candidates = []
        if probe_size is not None and probed is not None and len(probed) == 4:
            # The axis that changed is H (NCHW: out[2]) or, for NHWC, W (out[2]) / H (out[1]).
            axis = 2 if probed[2] != out[2] else 1
            change = abs(probed[axis] - out[axis])
            if not change:
                continue  # the same at both sizes: a global output (pooled to 1x1)
            candidates.append(_power_of_two(abs(probe_size[0] - height) / change))
        for axis in (2, 1):
            if out[axis]:
                candidates += [_power_of_two(height / out[axis]), max(1, round(height / out[axis]))]
        for stride in candidates:
            if map_layout(out, input_size, stride) is not None:
                strides[path] = stride
                break
    return strides


def stage_of_stride(stride: int | None) -> int | None:
    """Stage k has stride 2 ** (k + 1): 4 -> 1, 8 -> 2, 16 -> 3, 32 -> 4, 64 -> 5; <= 2 -> 0."""
    if stride is None:
        return None
    return max(0, round(math.log2(stride)) - 1)


def build_stages(
    modules: dict[str, ModuleInfo], block: dict[str, int], composite: set[str]
) -> dict[int, StageInfo]:
    """StageInfo per stage >= 1 that has a block container.

    A model without any block container (VGG: one Sequential of convs, ReLUs and pools)
    falls back to the stages of its spatial modules that are composite (have children)
    or sit in a container, with no containers listed; a lone conv outside any container
    (a ViT's patch embedding) makes no stage.
    """
    grouped: dict[int, list[tuple[str, int]]] = {}
    last_block: dict[int, ModuleInfo] = {}
    for container, stage in block.items():
        if stage < 1:
            continue
        blocks = [m for m in modules.values() if m.container == container and _is_block(m)]
        grouped.setdefault(stage, []).append((container, blocks[0].container_len if blocks else 0))
        ran = [m for m in blocks if m.out_shape is not None]
        if ran:
            last_block[stage] = ran[-1]
    if not grouped:
        for info in modules.values():
            structural = info.path in composite or info.container is not None
            if structural and info.stage is not None and info.stage >= 1:
                last_block[info.stage] = info
                grouped.setdefault(info.stage, [])
    stages = {}
    for stage in sorted(grouped):
        last = last_block[stage]
        assert last.out_shape is not None and last.feature_size is not None
        stages[stage] = StageInfo(
            stage=stage,
            stride=2 ** (stage + 1),
            feature_size=last.feature_size,
            channels=last.channels if last.channels is not None else last.out_shape[1],
            containers=grouped[stage],
            layout=last.layout or "NCHW",
        )
    return stages


def _is_block(info: ModuleInfo) -> bool:
    # A block is a direct child of its container: its path is container.<child>.
    return info.container is not None and info.path.count(".") == _depth(info.container) + 1


def _depth(path: str) -> int:
    return path.count(".") if path else -1
