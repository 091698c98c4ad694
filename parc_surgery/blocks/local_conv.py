"""Replacing one local conv by a ParC pair: the checks and the pair, shared by all families.

Every family swaps a spatial conv for a ParC pair the same way; only which conv and which
groups differ. Everything a user can get wrong (stride 2, a conv type we cannot read, a
kernel with no centre) becomes a ReplacementError that names the module path.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import NoReturn

from torch import nn

from .init import init_pair_from_local, init_pair_paper
from .registry import ReplacementContext, ReplacementError

__all__ = [
    "with_child",
    "LOCAL_CONV_TYPES",
    "check_local_conv",
    "dense_pair_for_conv",
    "depthwise_pair_for_conv",
    "global_kernel_size",
    "groups_per_half",
    "parc_pair_for_conv",
    "refuse_downsampling_block",
    "refuse_stride",
    "require_type",
]

# Conv types whose weight means what nn.Conv2d's does at stride 1 with an odd kernel:
# timm's Conv2dSame pads 'same' dynamically, which is symmetric in that case.
LOCAL_CONV_TYPES = ("Conv2d", "Conv2dSame")


def global_kernel_size(ctx: ReplacementContext) -> tuple[int, int]:
    """(kH, kW): ctx.options.kernel_size if given, else the feature size at the block."""
    size = ctx.options.kernel_size
    if size is None:
        size = ctx.feature_size
    if isinstance(size, int):
        size = (size, size)
    return int(size[0]), int(size[1])


def require_type(module: nn.Module, ctx: ReplacementContext, accepts: Sequence[str], name: str):
    """Refuse a module whose class is not one `name` knows how to convert."""
    if type(module).__name__ not in accepts:
        raise ReplacementError(
            f"{name} cannot replace a {type(module).__name__}",
            where=ctx.path,
            hint=f"it accepts {', '.join(accepts)}; select other modules in the rules",
        )


def refuse_stride(ctx: ReplacementContext, what: str) -> NoReturn:
    """Raise: ParC has no stride, so a block that downsamples keeps its local conv."""
    raise ReplacementError(
        f"{what}: ParC is stride 1, so a downsampling block is never converted",
        where=ctx.path,
        hint="select only the stride-1 blocks (e.g. skip index 0 of a stage)",
    )


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


def refuse_downsampling_block(module: nn.Module, ctx: ReplacementContext) -> None:
    """Raise for a residual block (timm ResNet's) whose `stride` or shortcut downsamples."""
    block_stride = getattr(module, "stride", 1)
    if block_stride != 1 or _strides_in(getattr(module, "downsample", None)):
        refuse_stride(ctx, f"this {type(module).__name__} has stride {block_stride}")


def check_local_conv(conv: nn.Module, ctx: ReplacementContext, attr: str) -> nn.Conv2d:
    """`conv` if it is a stride-1, centred, odd-kernel conv a ParC pair can replace."""
    kind = type(conv).__name__
    if not isinstance(conv, nn.Conv2d) or kind not in LOCAL_CONV_TYPES:
        raise ReplacementError(
            f"{attr} is a {kind}, not a plain Conv2d, so it has no single local kernel to replace",
            where=ctx.path,
            hint="ParC replaces nn.Conv2d / Conv2dSame only (not CondConv or mixed convs)",
        )
    if tuple(conv.stride) != (1, 1):
        refuse_stride(ctx, f"{attr} has stride {tuple(conv.stride)}")
    kh, kw = conv.kernel_size
    if kh % 2 == 0 or kw % 2 == 0:
        raise ReplacementError(
            f"{attr} has an even kernel {conv.kernel_size}: it has no centre tap to align with",
            where=ctx.path,
        )
    if kind == "Conv2d" and conv.padding != "same":  # ConvMixer's padding="same": centred
        # A 'same' conv pads dilation * (k - 1) / 2; anything else shifts or shrinks the map.
        centred = tuple(
            d * (k - 1) // 2 for d, k in zip(conv.dilation, conv.kernel_size, strict=True)
        )
        if tuple(conv.padding) != centred:
            raise ReplacementError(
                f"{attr} has padding {conv.padding}, not the 'same' padding {centred}",
                where=ctx.path,
            )
    return conv


def parc_pair_for_conv(
    conv: nn.Conv2d,
    ctx: ReplacementContext,
    *,
    groups_per_half: int | None,
    bias: bool | None = None,
    paper_init: str | None = None,
) -> nn.Module:
    """A ParC pair with the conv's channels, on its device and dtype, initialised per ctx.

    groups_per_half None = depthwise, 1 = dense, g = g groups in each half.
    bias: the family's default (None = a bias iff the conv has one); a rule's `bias`
    option overrides it. paper_init: the family's official init scheme (a key of
    init.PAPER_INITS) used for init "paper"; None keeps nn.Conv2d's rule.
    """
    from parc_surgery.ops import ParCPair  # late: the registry imports without ops built

    if ctx.options.bias is not None:
        bias = ctx.options.bias
    pair = ParCPair(
        conv.out_channels,
        global_kernel_size(ctx),
        groups_per_half=groups_per_half,
        use_pe=ctx.pe,
        bias=conv.bias is not None if bias is None else bias,
        impl=ctx.impl,
    )
    pair.to(device=conv.weight.device, dtype=conv.weight.dtype)
    if ctx.init == "from_local":
        init_pair_from_local(pair, conv)
    elif paper_init is not None:
        init_pair_paper(pair, paper_init)
    return pair


def dense_pair_for_conv(
    conv: nn.Conv2d, ctx: ReplacementContext, attr: str, *, paper_init: str = "resnet"
) -> nn.Module:
    """A dense (or grouped) ParC pair for a C -> C conv; see groups_per_half.

    With a bias unless the rule says `bias: false`: official ParC convs have one even
    where a BN follows.
    """
    if conv.in_channels != conv.out_channels:
        raise ReplacementError(
            f"{attr} maps {conv.in_channels} -> {conv.out_channels} channels; a ParC pair "
            "keeps the channel count",
            where=ctx.path,
        )
    return parc_pair_for_conv(
        conv,
        ctx,
        groups_per_half=groups_per_half(conv, ctx, attr),
        bias=True,
        paper_init=paper_init,
    )


def groups_per_half(conv: nn.Conv2d, ctx: ReplacementContext, attr: str) -> int:
    """Each half keeps the conv's number of groups, as the dense pair keeps groups=1.

    So a group's width halves (ResNeXt / RegNet: C/2g channels per group in each half)
    and the pair's weights (C * C/2g * K) never outgrow the 3x3 conv's (C * C/g * 9)
    while K <= 18, as the dense pair's (C * C/2 * K) never outgrow C * C * 9.
    """
    groups, half = conv.groups, conv.out_channels // 2
    if conv.out_channels % 2 or half % groups:
        raise ReplacementError(
            f"{attr} has {groups} groups of {conv.out_channels // groups} channels; a grouped "
            f"ParC pair gives each half ({half} channels) the same {groups} groups, so the "
            "group width must be even",
            where=ctx.path,
            hint="leave this block local (narrow the rule) or use a model with even group widths",
        )
    return groups


def depthwise_pair_for_conv(
    conv: nn.Conv2d,
    ctx: ReplacementContext,
    attr: str,
    *,
    bias: bool | None = None,
    paper_init: str = "mobilenetv2",
) -> nn.Module:
    """A depthwise ParC pair for a depthwise conv; bias: the family's default (None = iff
    the conv has one), overridden by the rule's `bias` option."""
    c = conv.in_channels
    if not (conv.groups == c == conv.out_channels):
        raise ReplacementError(
            f"{attr} is not depthwise ({conv.in_channels} -> {conv.out_channels} channels, "
            f"groups={conv.groups})",
            where=ctx.path,
            hint="a depthwise ParC pair replaces convs with groups == in == out channels",
        )
    return parc_pair_for_conv(conv, ctx, groups_per_half=None, bias=bias, paper_init=paper_init)


def with_child(module: nn.Module, attr: str, child: nn.Module) -> nn.Module:
    """A deep copy of `module` with submodule `attr` ("conv2" or "conv2.conv") replaced by
    `child`; the original is untouched and the copy keeps its training flag."""
    new = copy.deepcopy(module)
    parent, _, name = attr.rpartition(".")
    setattr(new.get_submodule(parent) if parent else new, name, child)
    return new.train(module.training)
