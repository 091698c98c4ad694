"""ParC RegNet block: the grouped 3x3 conv of a timm RegNet Bottleneck / PreBottleneck
becomes a grouped ParC pair with the same number of groups in each half.

timm's RegNet `Bottleneck` (timm.models.regnet) is a different class from ResNet's under
the same name: its conv2 is a ConvNormAct (conv, bn, act) with groups = width / group
size, and the SE sits after it. Only the conv inside is swapped (`conv2.conv`; a
PreBottleneck's plain `conv2`), so bn, act, se, conv1/conv3 and the shortcut keep their
weights and the block keeps its class and forward. There is no published ParC-RegNet:
the shipped `regnet` config places it as ParC-ResNet50 does.
"""

from __future__ import annotations

from torch import nn

from .local_conv import check_local_conv, dense_pair_for_conv, require_type, with_child
from .registry import ReplacementContext, ReplacementError, register_replacement

__all__ = ["REGNET_MODULE", "build_parc_regnet", "refuse_regnet_block"]

_ACCEPTS = ("Bottleneck", "PreBottleneck")
REGNET_MODULE = "timm.models.regnet"


def _is_regnet(module: nn.Module) -> bool:
    return type(module).__module__ == REGNET_MODULE


def refuse_regnet_block(module: nn.Module, ctx: ReplacementContext, name: str) -> None:
    """Raise when `name` (a ResNet replacement) was given timm's RegNet Bottleneck."""
    if _is_regnet(module):
        raise ReplacementError(
            f"{name} cannot replace timm's RegNet {type(module).__name__} (a different class "
            "from ResNet's Bottleneck: its conv2 is a grouped ConvNormAct)",
            where=ctx.path,
            hint="use `with: parc_regnet` (the shipped `regnet` config) for RegNet blocks",
        )


@register_replacement("parc_regnet", accepts=_ACCEPTS, level="block")
def build_parc_regnet(module: nn.Module, ctx: ReplacementContext) -> nn.Module:
    """RegNet (Pre)Bottleneck with its grouped 3x3 conv -> grouped ParC pair; rest kept."""
    require_type(module, ctx, _ACCEPTS, "parc_regnet")
    if not _is_regnet(module):
        raise ReplacementError(
            f"parc_regnet replaces timm's RegNet blocks ({REGNET_MODULE}), not a "
            f"{type(module).__module__}.{type(module).__name__}",
            where=ctx.path,
            hint="use `with: parc_bottleneck` for ResNet / ResNeXt Bottlenecks",
        )
    # The conv carries the block's stride (the shortcut downsamples with it), so the
    # stride check of check_local_conv covers the whole block.
    attr = "conv2.conv" if isinstance(getattr(module.conv2, "conv", None), nn.Module) else "conv2"
    conv = check_local_conv(module.get_submodule(attr), ctx, attr)
    return with_child(module, attr, dense_pair_for_conv(conv, ctx, attr))
