"""ParC Bottleneck: a timm ResNet Bottleneck whose 3x3 conv2 is a dense ParC pair.

The block stays a timm `Bottleneck` with only `conv2` swapped, so every other state_dict
key (conv1/bn1, bn2, conv3/bn3, downsample, se) and the block's forward are unchanged.
"""

from __future__ import annotations

from torch import nn

from .local_conv import (
    check_local_conv,
    dense_pair_for_conv,
    refuse_stride,
    require_type,
    with_child,
)
from .registry import ReplacementContext, register_replacement

__all__ = ["build_parc_bottleneck"]

_ACCEPTS = ("Bottleneck",)


def _strides_in(module: nn.Module | None) -> list[int]:
    """Every stride > 1 of the convs and pools inside `module` (a downsample path)."""
    if module is None:
        return []
    found = []
    for m in module.modules():
        stride = getattr(m, "stride", None)
        if isinstance(m, (nn.Conv2d, nn.AvgPool2d, nn.MaxPool2d)) and stride is not None:
            stride = stride if isinstance(stride, (tuple, list)) else (stride, stride)
            found += [s for s in stride if s > 1]
    return found


@register_replacement("parc_bottleneck", accepts=_ACCEPTS, level="block")
def build_parc_bottleneck(module: nn.Module, ctx: ReplacementContext) -> nn.Module:
    """ResNet Bottleneck with conv2 -> dense ParC pair (bias, pe per ctx); rest kept.

    init paper: kaiming_normal(fan_out, relu), bias as nn.Conv2d leaves it (official).
    """
    require_type(module, ctx, _ACCEPTS, "parc_bottleneck")
    # A stride-2 bottleneck downsamples in conv2 (or in an anti-aliasing pool after it when
    # aa_layer is set) and in its shortcut; ParC cannot, so those blocks stay local.
    block_stride = getattr(module, "stride", 1)
    if block_stride != 1 or _strides_in(getattr(module, "downsample", None)):
        refuse_stride(ctx, f"this Bottleneck has stride {block_stride}")
    conv = check_local_conv(module.conv2, ctx, "conv2")
    pair = dense_pair_for_conv(conv, ctx, "conv2", paper_init="resnet")
    return with_child(module, "conv2", pair)
