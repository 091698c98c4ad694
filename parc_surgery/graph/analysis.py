"""`analyze`: trace a model and describe its modules, strides, stages and containers.

Reads the model (one FX trace, two batch-1 forwards under no_grad in eval mode) and
writes nothing on it; returns a ModelGraph.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from parc_surgery.errors import TraceError, UsageError
from parc_surgery.graph.containers import Containers, enclosing_block, find_containers
from parc_surgery.graph.input_size import default_input_size, resolve_input_size
from parc_surgery.graph.layouts import Spatial, spatial_outputs
from parc_surgery.graph.model_graph import ModelGraph, ModuleInfo
from parc_surgery.graph.shapes import ShapeRecord, record_shapes
from parc_surgery.graph.stages import build_stages, nominal_strides, probe_sizes, stage_of_stride
from parc_surgery.graph.tracing import trace
from parc_surgery.models import model_name_of

__all__ = ["analyze", "model_name_of", "prefix_tokens_of"]


def analyze(
    model: nn.Module,
    input_size: tuple[int, int] | str | int | None = None,
    leaf_classes: Iterable[str | type] = (),
) -> ModelGraph:
    """ModelGraph of `model` at `input_size` (H, W; default: the model's own input size).

    Raises TraceError when the model cannot be traced, UsageError when the input size is
    too small for a stage (the message gives the minimum) or the model does not run at it.
    """
    leaf_classes = tuple(leaf_classes)
    size = resolve_input_size(input_size, model)
    name = model_name_of(model)
    graph_module = trace(model, leaf_classes)
    record = _run_at(model, name, size)
    output_shape = record.pop("", (None, None))[1]
    probe, probe_size = _probe(model, size)
    if probe is not None:
        probe.pop("", None)
    map_strides = nominal_strides(record, size, probe, probe_size)
    spatial = spatial_outputs(record, size, map_strides, prefix_tokens_of(model))
    strides = {path: found.stride for path, found in spatial.items()}
    _check_min_size(name, size, strides)
    # Every module that ran has an entry (None off the grid): containers tell the two apart.
    stage_of = {path: stage_of_stride(strides.get(path)) for path in record}
    channels_of = {path: found.channels for path, found in spatial.items()}
    containers = find_containers(model, stage_of, channels_of)
    modules = _module_infos(model, record, spatial, stage_of, containers)
    composite = {p for p, m in model.named_modules() if p and next(m.children(), None) is not None}
    stages = build_stages(modules, containers.block, composite)
    return ModelGraph(
        model_name=name,
        input_size=size,
        modules=modules,
        stages=stages,
        graph_module=graph_module,
        output_shape=output_shape,
        no_spatial_reason=None if stages else _no_spatial_reason(name, modules, containers),
        leaf_classes=tuple(c if isinstance(c, str) else c.__name__ for c in leaf_classes),
    )


def prefix_tokens_of(model: nn.Module) -> int:
    """Class and register tokens ahead of a ViT's patch tokens: timm's num_prefix_tokens,
    else the tokens of the model's class (and distillation) token parameters, (1, n, C)
    each (torchvision's ViT `class_token`, timm's PiT `cls_token`)."""
    count = getattr(model, "num_prefix_tokens", None)
    if isinstance(count, int) and not isinstance(count, bool):
        return count
    found = 0
    for name in ("class_token", "cls_token", "dist_token"):
        token = getattr(model, name, None)
        if isinstance(token, nn.Parameter) and token.dim() == 3 and token.shape[0] == 1:
            found += token.shape[1]
    return found


def _module_infos(
    model: nn.Module,
    record: ShapeRecord,
    spatial: dict[str, Spatial],
    stage_of: dict[str, int | None],
    containers: Containers,
) -> dict[str, ModuleInfo]:
    modules: dict[str, ModuleInfo] = {}
    for path, module in model.named_modules():
        if not path:
            continue
        in_shape, out_shape = record.get(path, (None, None))
        where = spatial.get(path)
        block = enclosing_block(path, containers)
        modules[path] = ModuleInfo(
            path=path,
            type_name=type(module).__name__,
            in_shape=in_shape,
            out_shape=out_shape,
            feature_size=where.feature_size if where else None,
            stride=where.stride if where else None,
            stage=stage_of.get(path),
            container=block[0] if block else None,
            index=block[1] if block else None,
            container_len=block[2] if block else None,
            layout=where.layout if where else None,
            channels=where.channels if where else None,
            prefix_tokens=where.prefix_tokens if where else 0,
        )
    return modules


def _min_size_error(name: str, size: tuple[int, int], max_stride: int) -> UsageError:
    return UsageError(
        f"input size {size[0]}x{size[1]} is too small for {name}: its deepest stage has "
        f"stride {max_stride}, so that stage's feature map would vanish (under 1x1)",
        hint=f"Use an input size of at least {max_stride}x{max_stride}",
    )


def _check_min_size(name: str, size: tuple[int, int], strides: dict[str, int | None]) -> None:
    deepest = max((s for s in strides.values() if s is not None), default=None)
    if deepest is not None and min(size) < deepest:
        raise _min_size_error(name, size, deepest)


def _run_at(model: nn.Module, name: str, size: tuple[int, int]) -> ShapeRecord:
    try:
        return record_shapes(model, size)
    except Exception as exc:
        error = exc
    reason = f"{type(error).__name__}: {' '.join(str(error).split())[:300]}"
    deepest = _deepest_stride(model)
    if deepest is not None and min(size) < deepest:
        raise _min_size_error(name, size, deepest) from error
    default = default_input_size(model)
    if size != default:
        raise UsageError(
            f"{name} does not run at input size {size[0]}x{size[1]} ({reason})",
            hint=f"Try its default input size {default[0]}x{default[1]}",
        ) from error
    raise TraceError(f"shape propagation of {name} failed at {size[0]}x{size[1]}: {reason}") from (
        error
    )


def _deepest_stride(model: nn.Module) -> int | None:
    """The model's largest reduction: timm's feature_info, else measured at its default size."""
    info = getattr(model, "feature_info", None)
    reductions = []
    if isinstance(info, list):
        reductions = [f["reduction"] for f in info if isinstance(f, dict) and "reduction" in f]
    elif info is not None and hasattr(info, "reduction"):
        reductions = list(info.reduction())
    if reductions:
        return int(max(reductions))
    default = default_input_size(model)
    try:
        record = record_shapes(model, default)
    except Exception:
        return None
    record.pop("", None)
    strides = nominal_strides(record, default, None, None)
    return max((s for s in strides.values() if s is not None), default=None)


def _probe(model: nn.Module, size: tuple[int, int]) -> tuple[ShapeRecord | None, tuple | None]:
    for probe_size in probe_sizes(size):
        try:
            return record_shapes(model, probe_size), probe_size
        except Exception:
            continue  # e.g. a ViT that only runs at its own image size
    return None, None


def _no_spatial_reason(name: str, modules: dict[str, ModuleInfo], containers: Containers) -> str:
    sized = [
        (len(kids), path) for path, kids in containers.children.items() if len(kids) > 1 and path
    ]
    maps = [m.path for m in modules.values() if m.stride is not None]
    made = f"; only {', '.join(maps[:3])} output feature maps" if maps else ""
    if sized:
        _, path = max(sized)
        first = modules.get(f"{path}.{containers.children[path][0]}")
        if first is not None and first.out_shape is not None:
            return (
                f"{name} has no spatial stages: its blocks ({path}.*, {first.type_name}) "
                f"output tokens of shape {first.out_shape}, not (B, C, H, W) feature maps"
                f"{made}. ParC replaces convolutions over feature maps, so there is "
                "nothing in it to convert"
            )
    return (
        f"{name} has no spatial stages: no block outputs a (B, C, H, W) feature map at a "
        f"stride of 4 or more{made}"
    )
