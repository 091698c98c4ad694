"""ParC Bottleneck: a timm ResNet Bottleneck or BasicBlock whose 3x3 conv2 is a ParC pair.

conv2 is the block's C -> C spatial conv in both kinds (a BasicBlock's first conv carries
the stride and stays local): dense, or grouped with the conv's groups in each half
(ResNeXt). The block stays a timm `Bottleneck` / `BasicBlock` with only `conv2` swapped,
so every other state_dict key (conv1/bn1, bn2, conv3/bn3, downsample, se) and the block's
forward are unchanged. One replacement for both, so one rule covers every ResNet.
"""

from __future__ import annotations

from torch import nn

from .local_conv import (
    check_local_conv,
    dense_pair_for_conv,
    refuse_downsampling_block,
    require_type,
    with_child,
)
from .registry import ReplacementContext, register_replacement
from .regnet import refuse_regnet_block

__all__ = ["build_parc_bottleneck"]

_ACCEPTS = ("Bottleneck", "BasicBlock")


@register_replacement("parc_bottleneck", accepts=_ACCEPTS, level="block")
def build_parc_bottleneck(module: nn.Module, ctx: ReplacementContext) -> nn.Module:
    """ResNet Bottleneck / BasicBlock with conv2 -> ParC pair (bias, pe per ctx); rest kept.

    init paper: kaiming_normal(fan_out, relu), bias as nn.Conv2d leaves it (official).
    """
    require_type(module, ctx, _ACCEPTS, "parc_bottleneck")
    refuse_regnet_block(module, ctx, "parc_bottleneck")
    # A stride-2 block downsamples in a conv (or in an anti-aliasing pool after it when
    # aa_layer is set) and in its shortcut; ParC cannot, so those blocks stay local.
    refuse_downsampling_block(module, ctx)
    conv = check_local_conv(module.conv2, ctx, "conv2")
    pair = dense_pair_for_conv(conv, ctx, "conv2", paper_init="resnet")
    return with_child(module, "conv2", pair)
