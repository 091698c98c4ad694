"""Backbones: a converted model as a feature extractor, with timm's FX feature extraction.

`features_only(model, out_indices)` reads a (converted) model and returns timm's
`FeatureGraphNet` over it: a traced copy of the forward that returns the feature maps at
`out_indices` and carries `feature_info` (channels, reduction, module per output), as
`timm.create_model(..., features_only=True)` does. ParC modules are leaves of the trace
(registered with timm's `register_notrace_module`), so the kernels are resampled at run
time and the backbone runs at any input size, detection sizes such as 800x1344 included.

Which features: a timm model's own `feature_info` (so `out_indices` mean what they mean
in timm); for a torchvision or hand-written model, one entry per stage found by
`graph.analyze` (stride 4, 8, 16, 32, ...: the output of the stage's last block).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from torch import nn

from parc_surgery.errors import TraceError, UsageError
from parc_surgery.models import input_size_of

__all__ = ["feature_info_of", "features_only"]


def _timm_feature_info(model: nn.Module) -> list[dict[str, Any]] | None:
    info = getattr(model, "feature_info", None)
    if isinstance(info, (list, tuple)) and info and all(isinstance(f, dict) for f in info):
        return [dict(f) for f in info]
    if info is not None and hasattr(info, "get_dicts"):  # timm's FeatureInfo
        return [dict(f) for f in info.info]
    return None


def _stage_feature_info(model: nn.Module, input_size: tuple[int, int]) -> list[dict[str, Any]]:
    """One feature per stage: the output of its last block container (or block)."""
    from parc_surgery.graph import analyze

    graph = analyze(model, input_size=input_size)
    infos = []
    for stage in graph.stages.values():
        module = _last_block(graph, stage)
        if module is not None:
            infos.append({"module": module, "num_chs": stage.channels, "reduction": stage.stride})
    return infos


def _last_block(graph: Any, stage: Any) -> str | None:
    if stage.containers:
        container, length = stage.containers[-1]
        if container in graph.modules:  # a real module (not a run): name the stage by it
            return container
        blocks = [
            m.path
            for m in graph.modules.values()
            if m.container == container and m.index == length - 1
        ]
        return min(blocks, key=lambda p: p.count(".")) if blocks else None
    in_stage = [m.path for m in graph.in_stage(stage.stage) if m.feature_size is not None]
    top = [p for p in in_stage if p.rpartition(".")[0] not in in_stage]
    return top[-1] if top else None


def feature_info_of(model: nn.Module, input_size: tuple[int, int] | None = None) -> list[dict]:
    """The features a backbone of `model` can return, as timm's feature_info dicts."""
    return _timm_feature_info(model) or _stage_feature_info(
        model, tuple(input_size) if input_size else input_size_of(model)
    )


def _checked_indices(out_indices: Iterable[int] | None, info: Sequence[dict]) -> tuple[int, ...]:
    if not info:
        raise UsageError("the model has no spatial stages, so it has no features to return")
    listing = "; ".join(
        f"{i}: {f['module']} ({f['num_chs']} ch, stride {f['reduction']})"
        for i, f in enumerate(info)
    )
    if out_indices is None:
        return tuple(range(len(info)))
    indices = tuple(out_indices)
    bad = [i for i in indices if not isinstance(i, int) or not -len(info) <= i < len(info)]
    if not indices or bad:
        raise UsageError(
            f"out_indices {indices} are not all feature indices of this model",
            hint=f"choose from {listing}",
        )
    return indices


def features_only(
    model: nn.Module,
    out_indices: Iterable[int] | None = None,
    *,
    input_size: tuple[int, int] | None = None,
    leaf_classes: Iterable[str] = (),
) -> nn.Module:
    """timm's FeatureGraphNet over `model`: forward returns the maps at `out_indices`.

    `out_indices` index `feature_info_of(model)` (default: all). `input_size` is where a
    model without timm's feature_info is analysed for its stages (default: its own).
    `leaf_classes` (a rules file's `leaf:`) are registered as timm notrace modules first.
    """
    from timm.layers import register_notrace_module
    from timm.models._features_fx import FeatureGraphNet

    info = feature_info_of(model, input_size)
    indices = _checked_indices(out_indices, info)
    names = set(leaf_classes)
    for module in model.modules():
        if type(module).__name__ in names:
            register_notrace_module(type(module))
    if _timm_feature_info(model) is None:
        model.feature_info = info  # FeatureGraphNet reads the features from the model
    try:
        return FeatureGraphNet(model, out_indices=indices)
    except Exception as err:  # torch.fx raises many types; all mean "cannot trace"
        raise TraceError(
            f"cannot build a feature extractor of {type(model).__name__} with torch.fx: "
            f"{type(err).__name__}: {' '.join(str(err).split())[:300]}",
            hint="register the module that fails with timm.layers.register_notrace_module",
        ) from err
