"""ParC ConvNeXt block: the 7x7 depthwise conv_dw becomes a depthwise ParC pair with bias.

norm, mlp, gamma (layer scale), shortcut and drop_path are kept; the block stays a timm
`ConvNeXtBlock`, so its forward (either MLP layout) is unchanged.
"""

from __future__ import annotations

from torch import nn

from .local_conv import check_local_conv, depthwise_pair_for_conv, require_type, with_child
from .registry import ReplacementContext, register_replacement

__all__ = ["build_parc_convnext"]

_ACCEPTS = ("ConvNeXtBlock",)


@register_replacement("parc_convnext", accepts=_ACCEPTS, level="block")
def build_parc_convnext(module: nn.Module, ctx: ReplacementContext) -> nn.Module:
    """ConvNeXt block with conv_dw -> depthwise ParC pair with bias; rest kept.

    init paper: trunc_normal(std=0.02), bias zero (official ParC-ConvNeXt).
    """
    require_type(module, ctx, _ACCEPTS, "parc_convnext")
    # conv_dw carries the block's stride (and a channel change with a Downsample
    # shortcut): check_local_conv refuses stride != 1, the depthwise check the rest.
    conv = check_local_conv(module.conv_dw, ctx, "conv_dw")
    pair = depthwise_pair_for_conv(conv, ctx, "conv_dw", bias=True, paper_init="convnext")
    return with_child(module, "conv_dw", pair)
