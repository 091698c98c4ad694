"""Generic op-level replacement: any stride-1 depthwise Conv2d -> depthwise ParC pair.

For blocks no family file knows: a rule can point at the depthwise conv itself.
"""

from __future__ import annotations

from torch import nn

from .local_conv import LOCAL_CONV_TYPES, check_local_conv, depthwise_pair_for_conv, require_type
from .registry import ReplacementContext, register_replacement

__all__ = ["build_parc_dwconv"]


@register_replacement("parc_dwconv", accepts=LOCAL_CONV_TYPES, level="op")
def build_parc_dwconv(module: nn.Module, ctx: ReplacementContext) -> nn.Module:
    """Stride-1 depthwise Conv2d (odd kernel) -> depthwise ParC pair, bias iff it had one.

    A rule's `bias` option overrides the default. init paper: the MobileNetV2 scheme
    (kaiming_normal(fan_out), bias zero), which timm also uses for these families.
    """
    require_type(module, ctx, LOCAL_CONV_TYPES, "parc_dwconv")
    conv = check_local_conv(module, ctx, "the conv")
    pair = depthwise_pair_for_conv(conv, ctx, "the conv", bias=None, paper_init="mobilenetv2")
    return pair.train(module.training)
