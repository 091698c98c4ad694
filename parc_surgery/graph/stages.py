"""Strides and stages from recorded shapes.

`nominal_strides` reads two shape records of the same model (the requested input size
and a probe size that differs by a multiple of 64) and writes nothing; it returns each
module's output stride. Comparing two sizes makes strides exact at any input size and
tells global outputs (pooled to 1x1 at every size) from real feature maps.
`stage_of_stride` and `build_stages` turn strides into stage numbers and StageInfos.
"""

from __future__ import annotations

import math

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
    """{path: output stride} for modules with a 4D output; None for non-spatial ones.

    Without a probe (models that run at one size only, such as a plain ViT), the stride is
    input H / output H rounded to a power of two when the output is about (H / s, W / s);
    other 4D outputs, and a 1x1 output from an input larger than 64, are not spatial.
    """
    strides: dict[str, int | None] = {}
    height = input_size[0]
    for path, (_, out) in record.items():
        if out is None or len(out) != 4:
            strides[path] = None
            continue
        probed = probe.get(path, (None, None))[1] if probe is not None else None
        if probe_size is not None and probed is not None and len(probed) == 4:
            delta = abs(probe_size[0] - height)
            change = abs(probed[2] - out[2])
            strides[path] = _power_of_two(delta / change) if change else None
        else:
            strides[path] = _stride_from_one_size(out, input_size)
    return strides


def _stride_from_one_size(out: tuple[int, ...], input_size: tuple[int, int]) -> int | None:
    # A feature map at stride s is about H / s by W / s (padding moves it by at most one);
    # anything else (tokens laid out as (B, heads, N, d), a pooled 1x1) is not spatial.
    if out[2] == 1 and out[3] == 1 and min(input_size) > 64:
        return None
    stride = _power_of_two(input_size[0] / out[2])
    fits = all(abs(o - size / stride) <= 1 for o, size in zip(out[2:], input_size, strict=True))
    return stride if fits else None


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
            channels=last.out_shape[1],
            containers=grouped[stage],
        )
    return stages


def _is_block(info: ModuleInfo) -> bool:
    # A block is a direct child of its container: its path is container.<child>.
    return info.container is not None and info.path.count(".") == _depth(info.container) + 1


def _depth(path: str) -> int:
    return path.count(".") if path else -1
