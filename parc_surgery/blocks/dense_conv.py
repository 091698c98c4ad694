"""ParC for the dense and grouped 3x3 convs of the ConvNets outside timm's ResNet.

`parc_conv_block` is one replacement for many block classes: each class's spatial
C -> C conv (the table below names it) becomes a dense or grouped ParC pair with the
conv's groups in each half, exactly as `parc_bottleneck` does for ResNet's conv2. The
block keeps its class, forward and every other weight. `parc_conv` is the op-level form
for nets with no blocks at all (VGG: one Sequential of convs): a rule selects the convs.

- timm ResNetV2 PreActBottleneck / Bottleneck: `conv2` (pre-activation ResNet).
- timm Res2Net Bottle2neck: every conv of `convs` (one per split of the hierarchy).
- timm CSPNet BottleneckBlock / DarkBlock: `conv2.conv` (inside its ConvNormAct).
- timm RepVGG RepVggBlock: `conv_kxk.conv`; the 1x1 and identity branches are kept (so
  timm's reparameterize keeps the block's branches: a ParC cannot fold into a 3x3).
- timm DLA DlaBasic / DlaBottleneck: `conv2`.
- timm DPN DualPathBlock: `c3x3_b.conv` (grouped).
- timm NFNet NormFreeBlock: `conv2b`, the second grouped 3x3, never strided. It is a
  ScaledStdConv2d (BiT's ResNetV2: StdConv2d): init from_local reads its standardised
  (effective) weight; the ParC pair itself is not weight-standardised.
- `parc_conv` also takes convs that change the width (DenseNet's DenseLayer conv2,
  4k -> k growth channels; Inception's 448 -> 384 3x3s) as a ParCWidthPair
  (blocks.width_pair). DenseNet is converted at the op level: a DenseLayer's input is
  the list of all earlier features, so its conv2 is the module with one input map.
- torchvision RegNet ResBottleneckBlock: `f.b.0` (grouped); also under `parc_regnet`, so
  the shipped `regnet` config converts torchvision's RegNets as timm's.

A block whose conv is strided downsamples, so it stays local (ReplacementError, and
matching skips stride-2 blocks before that).
"""

from __future__ import annotations

from torch import nn

from .local_conv import check_local_conv, dense_pair_for_conv, require_type, with_child
from .registry import ReplacementContext, ReplacementError, register_builder, register_replacement
from .regnet import build_parc_regnet  # noqa: F401  (parc_regnet registered first)
from .width_pair import width_pair_for_conv

__all__ = ["SPATIAL_CONVS", "build_parc_conv", "build_parc_conv_block", "build_tv_regnet"]

# (module, class) -> the attribute paths of its spatial C -> C conv(s).
SPATIAL_CONVS: dict[tuple[str, str], tuple[str, ...]] = {
    ("timm.models.resnetv2", "PreActBottleneck"): ("conv2",),
    ("timm.models.resnetv2", "Bottleneck"): ("conv2",),
    ("timm.models.res2net", "Bottle2neck"): ("convs.*",),
    ("timm.models.cspnet", "BottleneckBlock"): ("conv2.conv",),
    ("timm.models.cspnet", "DarkBlock"): ("conv2.conv",),
    ("timm.models.byobnet", "RepVggBlock"): ("conv_kxk.conv",),
    ("timm.models.dla", "DlaBasic"): ("conv2",),
    ("timm.models.dla", "DlaBottleneck"): ("conv2",),
    ("timm.models.dpn", "DualPathBlock"): ("c3x3_b.conv",),
    ("timm.models.nfnet", "NormFreeBlock"): ("conv2b",),
    ("torchvision.models.regnet", "ResBottleneckBlock"): ("f.b.0",),
}
_ACCEPTS = tuple(f"{mod}.{cls}" for mod, cls in SPATIAL_CONVS)
_STD_CONVS = ("ScaledStdConv2d", "StdConv2d")


def _conv_paths(module: nn.Module, patterns: tuple[str, ...]) -> list[str]:
    paths = []
    for pattern in patterns:
        if pattern.endswith(".*"):
            base = pattern[:-2]
            paths += [f"{base}.{name}" for name, _ in module.get_submodule(base).named_children()]
        else:
            paths.append(pattern)
    return paths


def _as_plain_conv(conv: nn.Module) -> nn.Module:
    """A weight-standardised conv as the plain Conv2d it computes (for checks and init)."""
    if type(conv).__name__ not in _STD_CONVS:
        return conv
    plain = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=conv.bias is not None,
    ).to(device=conv.weight.device, dtype=conv.weight.dtype)
    plain.weight.data.copy_(_standardised(conv).detach())
    if conv.bias is not None:
        plain.bias.data.copy_(conv.bias.detach())
    return plain


def _pair(conv: nn.Conv2d, ctx: ReplacementContext, attr: str) -> nn.Module:
    """The dense / grouped ParC pair for a C -> C conv, a ParCWidthPair for C_in -> C_out."""
    if conv.in_channels != conv.out_channels:
        return width_pair_for_conv(conv, ctx, attr)
    return dense_pair_for_conv(conv, ctx, attr, paper_init="resnet")


def _standardised(conv: nn.Module):
    """The weight timm's StdConv2d / ScaledStdConv2d convolve with (as their forward)."""
    import torch.nn.functional as F

    out = conv.out_channels
    scale = getattr(conv, "gain", None)
    gain = (scale * conv.scale).view(-1) if scale is not None else None
    flat = conv.weight.reshape(1, out, -1)
    w = F.batch_norm(flat, None, None, weight=gain, training=True, momentum=0.0, eps=conv.eps)
    return w.reshape_as(conv.weight)


@register_replacement("parc_conv_block", accepts=_ACCEPTS, level="block")
def build_parc_conv_block(module: nn.Module, ctx: ReplacementContext) -> nn.Module:
    """A ConvNet block with its spatial C -> C conv(s) -> dense / grouped ParC pair(s).

    init paper: kaiming_normal(fan_out, relu), as ParC-ResNet's.
    """
    key = (type(module).__module__, type(module).__name__)
    if key not in SPATIAL_CONVS:
        raise ReplacementError(
            f"parc_conv_block cannot replace a {key[0]}.{key[1]}",
            where=ctx.path,
            hint=f"it accepts {', '.join(_ACCEPTS)}",
        )
    if getattr(module, "reparam_conv", None) is not None:
        raise ReplacementError(
            "this RepVggBlock is already reparameterized: its 3x3, 1x1 and identity "
            "branches are fused into one conv",
            where=ctx.path,
            hint="convert the training-form model (before timm's reparameterize_model)",
        )
    new = module
    for attr in _conv_paths(module, SPATIAL_CONVS[key]):
        conv = check_local_conv(_as_plain_conv(module.get_submodule(attr)), ctx, attr)
        new = with_child(new, attr, _pair(conv, ctx, attr))
    return new


@register_replacement("parc_conv", accepts=("Conv2d",), level="op")
def build_parc_conv(module: nn.Module, ctx: ReplacementContext) -> nn.Module:
    """A stride-1 3x3 Conv2d -> ParC pair (VGG's convs; C_in -> C_out: ParCWidthPair)."""
    require_type(module, ctx, ("Conv2d",), "parc_conv")
    conv = check_local_conv(module, ctx, "the conv")
    if conv.kernel_size == (1, 1):
        raise ReplacementError(
            "the conv is 1x1: it mixes channels only, so there is no spatial kernel to replace",
            where=ctx.path,
            hint="select the 3x3 convs (narrow the rule's `name`)",
        )
    if conv.kernel_size[0] != conv.kernel_size[1]:
        raise ReplacementError(
            f"the conv's kernel is {conv.kernel_size[0]}x{conv.kernel_size[1]}: a ParC pair "
            "(one half along H, one along W) stands in for a square kernel only",
            where=ctx.path,
            hint="select the square (3x3) convs (narrow the rule's `name`)",
        )
    return _pair(conv, ctx, "the conv").train(module.training)


@register_builder("parc_regnet", accepts=("torchvision.models.regnet.ResBottleneckBlock",))
def build_tv_regnet(module: nn.Module, ctx: ReplacementContext) -> nn.Module:
    """torchvision RegNet ResBottleneckBlock: grouped `f.b.0` -> grouped ParC pair, as timm's."""
    return build_parc_conv_block(module, ctx)
