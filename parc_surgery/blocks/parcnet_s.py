"""ParC-Net-S and -XS exactly: a timm MobileVitBlock -> the published ParC-Net block.

The published ParC-Net-S (official `outer_frame_v1` with `gcc_ca_mf_block`, PARC.md
section 3) is not MobileViT with its attention swapped: for a block with C input
channels it works at D = 2C with an FFN of F = 2D, and its local, projection and fusion
convs differ. Converting `mobilevit_s` with this replacement in all three MobileViT
blocks gives ParC-Net-S's 5,037,088 parameters; everything outside those blocks keeps
timm's shapes.

    conv_kxk   grouped 3x3 conv C -> D (groups C) + BN + SiLU   (official dim_adaptive.0)
    conv_1x1   1x1 conv D -> D, no BN, no act                    (dim_adaptive.1)
    parc_blocks, norm   n ParC meta-formers + BN                 (spatial_global_rep)
    conv_proj  grouped 1x1 conv D -> C (groups C) + BN + SiLU    (channel_adaptive)
    conv_fusion 3x3 conv 2C -> C + BN + SiLU                     (local_global_fusion)

The fusion conv is timm's, kept with its weights: it reads cat(shortcut, global) where
the official one reads cat(global, shortcut), the same function with the weight's input
halves swapped (parc_surgery.official swaps them on import and export).

ParC-Net-XS (`parcnet_xs_block`, official `scale_xs`) converts the same mobilevit_s
blocks at D = C (96/128/160), F = 2D, with 2/3/2 ParC blocks in stages 2/3/4 (timm's
MobileViT has 2/4/3 transformer blocks there) and fusion by addition: a new 3x3 conv
C -> C + BN + SiLU on shortcut + global (the official `local_global_fusion` of
fusion "add"). The local and projection convs are then depthwise (groups gcd(D, C) = C).

ParC-Net-H (`parcnet_h_block`, official `scale_h`, edgeformer_h.yaml) has no timm model
to convert: its stem is a 5x5 conv to 48 channels and its MV2 widths are 96/144/216/288/
432 (timm's MobileViTs stop at mobilevit_s's 16/32/64/96/128/160). parc_surgery
registers that layout as the timm model `parcnet_h_base` (timm_models.py: a ByobNet with
timm's MV2 and MobileViT blocks at the official widths); converting its MobileViT blocks
gives ParC-Net-H: D = 324/432/432, F = 2D, 3/9/3 ParC blocks (`H_STAGES`), local and
projection convs grouped gcd(D, C) = 108/144/432, fusion on cat(global, shortcut) as in S.

Kernel lengths are those of ParC-Net-S's native 256 x 256 input, 256 / stride (32, 16, 8
in mobilevit_s), whatever the conversion's input size: ParC resamples them at run time.
The stride is the block's nominal one: a stage that a smaller `output_stride` dilates
instead of downsampling keeps its kernel, as the official DeepLabV3 encoder (output stride
16) keeps 8 in its last block. A rule's `kernel_size` overrides them. timm dilates such a
block's local conv; the official encoder does not (edgeformer's `_make_outer_frame_v1`
never passes its dilation to `outer_frame_v1`, so `dim_adaptive.0` stays a plain 3x3
conv), and neither does the conversion: only the stride-1 stem block before it changes.
"""

from __future__ import annotations

import copy
import math

from timm.layers import ConvNormAct
from torch import nn

from .mobilevit import ParCMobileVitBlock, check_mobilevit_block, transformer_dims
from .registry import ReplacementContext, ReplacementError, register_replacement

__all__ = [
    "H_STAGES",
    "NATIVE_INPUT",
    "XS_DEPTHS",
    "build_parcnet_h_block",
    "build_parcnet_s_block",
    "build_parcnet_xs_block",
    "native_kernel_size",
]

_ACCEPTS = ("MobileVitBlock",)

# ParC-Net-S is trained (and its kernels sized) at 256 x 256.
NATIVE_INPUT = 256


def native_kernel_size(ctx: ReplacementContext, dilation: int = 1) -> tuple[int, int]:
    """(kH, kW): the rule's kernel_size, else the feature size at 256 px of the block's
    nominal stride (stage s: 2^(s+1), times the `dilation` that replaced downsampling)."""
    size = ctx.options.kernel_size
    if size is not None:
        return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    stride = 2 ** (ctx.stage + 1) * max(1, int(dilation))
    if ctx.stage < 1 or NATIVE_INPUT % stride:
        raise ReplacementError(
            f"this MobileVitBlock is in stage {ctx.stage}, where ParC-Net-S has no native "
            "kernel length",
            where=ctx.path,
            hint="set kernel_size in the rule",
        )
    return NATIVE_INPUT // stride, NATIVE_INPUT // stride


# ParC-Net-XS (official edgeformer config `scale_xs`, edgeformer_xs.yaml): ParC blocks per
# stage, by the block's nominal stage (timm's stages.2 .. stages.4 = cvnets' layer_3 .. 5).
XS_DEPTHS = {2: 2, 3: 3, 4: 2}
# ParC-Net-H (official `scale_h`): (C, D, ParC blocks) per nominal stage; F = 2D.
H_STAGES = {2: (216, 324, 3), 3: (288, 432, 9), 4: (432, 432, 3)}
_TITLES = {"parcnet_s_block": "ParC-Net-S", "parcnet_xs_block": "ParC-Net-XS",
           "parcnet_h_block": "ParC-Net-H"}  # fmt: skip


def _nominal_stage(ctx: ReplacementContext, dilation: int) -> int:
    """The stage the block would be in without output_stride's dilation."""
    return ctx.stage + max(1, int(dilation)).bit_length() - 1


def _outer_frame(module: nn.Module, ctx: ReplacementContext, name: str) -> nn.Module:
    """MobileVitBlock -> official `outer_frame_v1` of ParC-Net-S (`name` parcnet_s_block)
    or ParC-Net-XS (parcnet_xs_block)."""
    check_mobilevit_block(module, ctx, name)
    local = next(m for m in module.conv_kxk.modules() if isinstance(m, nn.Conv2d))
    c = local.in_channels
    xs = name == "parcnet_xs_block"
    title = _TITLES[name]
    if module.conv_fusion is None:
        raise ReplacementError(
            f"this MobileVitBlock has no conv_fusion (no_fusion=True); {title} fuses the "
            "global path with the shortcut",
            where=ctx.path,
            hint="use parc_mobilevit for this block",
        )
    _, rates = transformer_dims(module, ctx)
    if xs:
        stage = _nominal_stage(ctx, local.dilation[0])
        if stage not in XS_DEPTHS:
            raise ReplacementError(
                f"this MobileVitBlock is in stage {stage}, where ParC-Net-XS has no block "
                f"(it has ParC blocks in stages {', '.join(map(str, XS_DEPTHS))})",
                where=ctx.path,
                hint="convert mobilevit_s, or use parcnet_s_block / parc_mobilevit",
            )
        # Width D = C, n ParC blocks; drop-path rates: the replaced transformer's first n.
        d, depth = c, XS_DEPTHS[stage]
        rates = (rates + rates[-1:] * depth)[:depth]
        fusion = ConvNormAct(c, c, 3, act_layer=nn.SiLU)  # local_global_fusion on res + x
    elif name == "parcnet_h_block":
        stage = _nominal_stage(ctx, local.dilation[0])
        if H_STAGES.get(stage, (None,))[0] != c:
            where = ", ".join(f"{w} in stage {s}" for s, (w, _, _) in H_STAGES.items())
            raise ReplacementError(
                f"this MobileVitBlock has {c} channels in stage {stage}; ParC-Net-H's have {where}",
                where=ctx.path,
                hint="convert parcnet_h_base (ParC-Net-H's layout), or use parcnet_s_block",
            )
        _, d, depth = H_STAGES[stage]
        rates = (rates + rates[-1:] * depth)[:depth]
        fusion = copy.deepcopy(module.conv_fusion)
    else:
        d, fusion = 2 * c, copy.deepcopy(module.conv_fusion)
    groups = math.gcd(d, c)  # the official dim_adaptive.0 and channel_adaptive
    new = ParCMobileVitBlock(
        # Never dilated: the official dim_adaptive.0 is not, even where output_stride
        # dilates the stage.
        ConvNormAct(c, d, 3, groups=groups, act_layer=nn.SiLU),
        nn.Conv2d(d, d, 1, bias=False),
        ConvNormAct(d, c, 1, groups=groups, act_layer=nn.SiLU),
        fusion,
        d,
        native_kernel_size(ctx, local.dilation[0]),
        [2 * d] * len(rates),
        use_pe=ctx.pe,
        impl=ctx.impl,
        drop_path_rates=rates,
        mid_mix=ctx.options.mid_mix,
        bias=bool(ctx.options.bias),
        fusion="add" if xs else "concat",
    )
    # The official model initialises every nn.Conv2d with kaiming_normal(fan_out).
    convs = [new.conv_kxk.conv, new.conv_1x1, new.conv_proj.conv]
    for conv in convs + ([fusion.conv] if xs else []):
        nn.init.kaiming_normal_(conv.weight, mode="fan_out")
    weight = local.weight
    return new.to(device=weight.device, dtype=weight.dtype).train(module.training)


@register_replacement("parcnet_s_block", accepts=_ACCEPTS, level="block")
def build_parcnet_s_block(module: nn.Module, ctx: ReplacementContext) -> nn.Module:
    """MobileVitBlock -> ParC-Net-S block: D = 2C, F = 2D, grouped local/proj convs."""
    return _outer_frame(module, ctx, "parcnet_s_block")


@register_replacement("parcnet_xs_block", accepts=_ACCEPTS, level="block")
def build_parcnet_xs_block(module: nn.Module, ctx: ReplacementContext) -> nn.Module:
    """MobileVitBlock -> ParC-Net-XS block: D = C, F = 2D, 2/3/2 ParC blocks in stages
    2/3/4, a new 3x3 fusion conv C -> C on shortcut + global (official fusion "add")."""
    return _outer_frame(module, ctx, "parcnet_xs_block")


@register_replacement("parcnet_h_block", accepts=_ACCEPTS, level="block")
def build_parcnet_h_block(module: nn.Module, ctx: ReplacementContext) -> nn.Module:
    """MobileVitBlock of parcnet_h_base -> ParC-Net-H block: D = 324/432/432, F = 2D,
    3/9/3 ParC blocks, local/proj convs grouped gcd(D, C), concat fusion as in S."""
    return _outer_frame(module, ctx, "parcnet_h_block")
