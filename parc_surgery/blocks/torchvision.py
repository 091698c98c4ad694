"""torchvision's blocks of the published ParC families, under the same replacement names.

A rule's `with: parc_bottleneck` / `parc_inverted_residual` / `parc_convnext` converts
torchvision's ResNet Bottleneck, MobileNetV2 InvertedResidual and ConvNeXt CNBlock to the
same ParC blocks as timm's: the same conv becomes the same ParC pair, everything else in
the block keeps its weights, and the block keeps its torchvision class and forward.

- Bottleneck has timm's layout (conv2 carries the stride): the timm builder serves it.
- InvertedResidual keeps its convs in a `conv` Sequential; the depthwise 3x3 is the
  first conv of one of its Conv2dNormActivation stages (`conv.1.0`, or `conv.0.0` when
  there is no expansion). It downsamples there, so `stride` must be 1.
- CNBlock's 7x7 depthwise conv (with bias) is `block.0`; CNBlocks never downsample.
- SwinTransformerBlock (V1, pre-norm, NHWC) becomes timm's ParCSwinBlock under
  `parc_swin`: norm1, norm2 and mlp keep their weights and keys, `stochastic_depth`
  serves as both drop paths, the shifted-window attention becomes the ParC mixer on the
  whole stage map. The V2 block (post-norm, SwinTransformerBlockV2) is refused.
- ViT EncoderBlock becomes timm's ParCViTBlock under `parc_vit`: ln_1 / ln_2 / mlp keep
  their weights and keys as norm1 / norm2 / mlp, the attention's dropout is drop_path1's
  place, nn.MultiheadAttention becomes the ParC mixer on the 14x14 patch grid; the class
  token gets the grid's mean, as in timm's.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

from torch import nn

from .bottleneck import build_parc_bottleneck
from .local_conv import check_local_conv, depthwise_pair_for_conv, global_kernel_size, refuse_stride
from .parc_mixer import ParCSpatialMixer
from .registry import ReplacementContext, ReplacementError, register_builder
from .swin import ParCSwinBlock
from .vit import ParCViTBlock, refuse_init_from_local

__all__ = [
    "build_tv_bottleneck",
    "build_tv_cnblock",
    "build_tv_inverted_residual",
    "build_tv_swin",
    "build_tv_vit",
]

TV_BOTTLENECK = "torchvision.models.resnet.Bottleneck"
TV_INVERTED_RESIDUAL = "torchvision.models.mobilenetv2.InvertedResidual"
TV_INVERTED_RESIDUAL_V3 = "torchvision.models.mobilenetv3.InvertedResidual"
TV_CNBLOCK = "torchvision.models.convnext.CNBlock"
TV_SWIN = "torchvision.models.swin_transformer.SwinTransformerBlock"
TV_VIT = "torchvision.models.vision_transformer.EncoderBlock"


def _with_descendant(module: nn.Module, path: str, child: nn.Module) -> nn.Module:
    """A deep copy of `module` with the submodule at dotted `path` replaced by `child`."""
    new = copy.deepcopy(module)
    parent_path, _, name = path.rpartition(".")
    setattr(new.get_submodule(parent_path) if parent_path else new, name, child)
    return new.train(module.training)


def _is_depthwise(conv: nn.Module) -> bool:
    return (
        isinstance(conv, nn.Conv2d)
        and conv.groups == conv.in_channels == conv.out_channels
        and conv.groups > 1
    )


@register_builder("parc_bottleneck", accepts=(TV_BOTTLENECK,))
def build_tv_bottleneck(module: nn.Module, ctx: ReplacementContext) -> nn.Module:
    """torchvision Bottleneck: conv2 -> dense ParC pair, as for timm's (same layout)."""
    return build_parc_bottleneck(module, ctx)


@register_builder("parc_inverted_residual", accepts=(TV_INVERTED_RESIDUAL, TV_INVERTED_RESIDUAL_V3))
def build_tv_inverted_residual(module: nn.Module, ctx: ReplacementContext) -> nn.Module:
    """torchvision InvertedResidual (MobileNetV2 `conv`, MobileNetV3 `block`): its depthwise
    conv -> depthwise ParC pair; rest kept."""
    if getattr(module, "stride", 1) != 1:
        refuse_stride(ctx, f"this InvertedResidual has stride {module.stride}")
    inner = "conv" if hasattr(module, "conv") else "block"
    found = [
        f"{inner}.{i}.0"
        for i, stage in enumerate(getattr(module, inner))
        if isinstance(stage, nn.Sequential) and len(stage) and _is_depthwise(stage[0])
    ]
    if len(found) == 1 and module.get_submodule(found[0]).stride not in (1, (1, 1)):
        refuse_stride(ctx, "this InvertedResidual's depthwise conv has stride 2")
    if len(found) != 1:
        raise ReplacementError(
            f"this InvertedResidual has {len(found)} depthwise convs in `{inner}`, not one",
            where=ctx.path,
            hint="it is not torchvision's MobileNetV2 layout; convert its conv with "
            "`op: depthwise_conv` and parc_dwconv instead",
        )
    conv = check_local_conv(module.get_submodule(found[0]), ctx, found[0])
    # The same ParC pair as timm's block gets: official bias and MobileNetV2 init.
    pair = depthwise_pair_for_conv(conv, ctx, found[0], bias=True, paper_init="mobilenetv2")
    return _with_descendant(module, found[0], pair)


@register_builder("parc_convnext", accepts=(TV_CNBLOCK,))
def build_tv_cnblock(module: nn.Module, ctx: ReplacementContext) -> nn.Module:
    """torchvision CNBlock: the 7x7 depthwise block.0 -> depthwise ParC pair with bias."""
    conv = check_local_conv(module.block[0], ctx, "block.0")
    pair = depthwise_pair_for_conv(conv, ctx, "block.0", bias=True, paper_init="convnext")
    return _with_descendant(module, "block.0", pair)


@register_builder("parc_swin", accepts=(TV_SWIN,))
def build_tv_swin(module: nn.Module, ctx: ReplacementContext) -> nn.Module:
    """torchvision SwinTransformerBlock (V1) -> ParCSwinBlock, as timm's Swin blocks."""
    if type(module).__name__ != "SwinTransformerBlock":
        raise ReplacementError(
            f"parc_swin converts torchvision's pre-norm Swin V1 blocks, not a "
            f"{type(module).__name__} (Swin V2 normalises after its attention)",
            where=ctx.path,
            hint="convert torchvision's swin_t / swin_s / swin_b",
        )
    refuse_init_from_local(ctx, "window attention")
    dim = module.norm1.normalized_shape[-1]
    mixer = ParCSpatialMixer(dim, global_kernel_size(ctx), use_pe=ctx.pe, impl=ctx.impl)
    # timm's block names: torchvision's one stochastic depth stands for both drop paths.
    kept = SimpleNamespace(
        norm1=module.norm1,
        drop_path1=module.stochastic_depth,
        norm2=module.norm2,
        mlp=module.mlp,
        drop_path2=module.stochastic_depth,
    )
    new = ParCSwinBlock(kept, mixer)
    ref = module.norm1.weight
    return new.to(device=ref.device, dtype=ref.dtype).train(module.training)


@register_builder("parc_vit", accepts=(TV_VIT,))
def build_tv_vit(module: nn.Module, ctx: ReplacementContext) -> nn.Module:
    """torchvision ViT EncoderBlock -> ParCViTBlock: attention -> ParC on the patch grid."""
    refuse_init_from_local(ctx, "a ViT EncoderBlock's attention")
    dim = module.ln_1.normalized_shape[-1]
    mixer = ParCSpatialMixer(dim, global_kernel_size(ctx), use_pe=ctx.pe, impl=ctx.impl)
    # EncoderBlock: x + dropout(attn(ln_1(x))), then x + mlp(ln_2(x)): timm's block with
    # the dropout where drop_path1 is and no layer scale.
    kept = SimpleNamespace(
        norm1=module.ln_1,
        ls1=None,
        drop_path1=module.dropout,
        norm2=module.ln_2,
        mlp=module.mlp,
        ls2=None,
        drop_path2=None,
    )
    new = ParCViTBlock(kept, mixer, ctx.feature_size, ctx.prefix_tokens)
    ref = module.ln_1.weight
    return new.to(device=ref.device, dtype=ref.dtype).train(module.training)
