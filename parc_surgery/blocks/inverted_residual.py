"""ParC InvertedResidual / DepthwiseSeparableConv (timm efficientnet-family blocks).

The 3x3 depthwise conv_dw becomes a depthwise ParC pair with bias; conv_pw, bn1, bn2 (and its act),
se, conv_pwl, bn3 keep their weights and the block keeps its timm class and forward.
"""

from __future__ import annotations

from torch import nn

from .local_conv import (
    check_local_conv,
    depthwise_pair_for_conv,
    refuse_stride,
    require_type,
    with_child,
)
from .registry import ReplacementContext, register_replacement

__all__ = ["build_parc_inverted_residual"]

_ACCEPTS = ("InvertedResidual", "DepthwiseSeparableConv")


@register_replacement("parc_inverted_residual", accepts=_ACCEPTS, level="block")
def build_parc_inverted_residual(module: nn.Module, ctx: ReplacementContext) -> nn.Module:
    """MobileNetV2/EfficientNet block with conv_dw -> depthwise ParC pair; rest kept.

    The pair has a bias by default, as the official ParC-MobileNetV2's (a BN follows, so
    it only matters in train mode; 2,304 parameters of ParC-MobileNetV2's 3,532,136).
    init paper: kaiming_normal(fan_out), bias zero.
    """
    require_type(module, ctx, _ACCEPTS, "parc_inverted_residual")
    # These blocks downsample in conv_dw, or in an anti-aliasing layer after it, or in a
    # space-to-depth conv in front of it; any of them makes the block stride 2.
    if getattr(module, "conv_s2d", None) is not None:
        refuse_stride(ctx, f"this {type(module).__name__} has a stride-2 space-to-depth conv")
    if not isinstance(getattr(module, "aa", nn.Identity()), nn.Identity):
        refuse_stride(ctx, f"this {type(module).__name__} downsamples in its aa layer")
    conv = check_local_conv(module.conv_dw, ctx, "conv_dw")
    pair = depthwise_pair_for_conv(conv, ctx, "conv_dw", bias=True, paper_init="mobilenetv2")
    return with_child(module, "conv_dw", pair)
