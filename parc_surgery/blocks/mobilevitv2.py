"""ParC MobileViTV2 block: the linear-attention transformer -> ParC on the feature map.

timm's MobileVitV2Block: (resize to a multiple of the patch size) -> conv_kxk -> conv_1x1
-> unfold into patches (B, C, P, N) -> n LinearTransformerBlocks (norm1 -> linear
self-attention, norm2 -> ConvMlp, each with a residual) -> norm -> fold -> conv_proj.
Its norms are GroupNorm with one group, which normalise over all of C x P x N, the same
numbers as C x H x W, and its MLPs are 1x1 convs: both mean the same on the folded map.
So the block becomes: resize -> conv_kxk -> conv_1x1 -> n ParC blocks on the map (norm1
-> ParC spatial mixer, norm2 -> ConvMlp) -> norm -> conv_proj, with no unfold, fold or
attention, and every kept layer under its own state_dict key (`transformer.i.attn.*`
becomes `transformer.i.mixer.*`). pe only in the first ParC block of the stack, as
ParC-Net places it.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from parc_surgery.ops.fx_leaf import fx_leaf

from .local_conv import global_kernel_size, refuse_stride, require_type
from .parc_mixer import ParCSpatialMixer
from .registry import ReplacementContext, ReplacementError, register_replacement
from .vit import refuse_init_from_local

__all__ = ["ParCMapBlock", "ParCMobileVitV2Block", "build_parc_mobilevitv2"]

_ACCEPTS = ("MobileVitV2Block",)


@fx_leaf
class ParCMapBlock(nn.Module):
    """A LinearTransformerBlock on the (B, C, H, W) map, ParC in place of its attention."""

    def __init__(self, block: nn.Module, mixer: ParCSpatialMixer):
        super().__init__()
        for name in ("norm1", "drop_path1", "norm2", "mlp", "drop_path2"):
            setattr(self, name, copy.deepcopy(getattr(block, name)))
        self.mixer = mixer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.mixer(self.norm1(self.mixer.add_pe(x))))
        return x + self.drop_path2(self.mlp(self.norm2(x)))


@fx_leaf
class ParCMobileVitV2Block(nn.Module):
    """MobileVitV2Block whose transformer runs ParC on the map: no unfold, no attention."""

    def __init__(self, block: nn.Module, layers: list[ParCMapBlock]):
        super().__init__()
        self.conv_kxk = copy.deepcopy(block.conv_kxk)
        self.conv_1x1 = copy.deepcopy(block.conv_1x1)
        self.transformer = nn.Sequential(*layers)
        self.norm = copy.deepcopy(block.norm)
        self.conv_proj = copy.deepcopy(block.conv_proj)
        self.patch_size = tuple(block.patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # As the original: resize to a multiple of the patch size, so the block's output
        # has the original's shape at every input size (the patches themselves are gone).
        h, w = x.shape[-2:]
        ph, pw = self.patch_size
        new_h, new_w = math.ceil(h / ph) * ph, math.ceil(w / pw) * pw
        if (new_h, new_w) != (h, w):
            x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=True)
        x = self.conv_1x1(self.conv_kxk(x))
        x = self.norm(self.transformer(x))
        return self.conv_proj(x)


@register_replacement("parc_mobilevitv2", accepts=_ACCEPTS, level="block")
def build_parc_mobilevitv2(module: nn.Module, ctx: ReplacementContext) -> nn.Module:
    """MobileVitV2Block -> ParCMobileVitV2Block: linear attention -> ParC; rest kept."""
    require_type(module, ctx, _ACCEPTS, "parc_mobilevitv2")
    refuse_init_from_local(ctx, "linear self-attention")
    strides = [s for m in module.conv_kxk.modules() if isinstance(m, nn.Conv2d) for s in m.stride]
    if any(s != 1 for s in strides):
        refuse_stride(ctx, "this MobileVitV2Block's conv_kxk has stride 2")
    layers = []
    for i, layer in enumerate(module.transformer):
        if not all(hasattr(layer, a) for a in ("norm1", "attn", "norm2", "mlp")):
            raise ReplacementError(
                f"transformer.{i} is a {type(layer).__name__}, not a LinearTransformerBlock",
                where=ctx.path,
            )
        # pe marks absolute position once; the later blocks inherit it in the features.
        mixer = ParCSpatialMixer(
            module.conv_1x1.out_channels,
            global_kernel_size(ctx),
            use_pe=ctx.pe and i == 0,
            impl=ctx.impl,
        )
        layers.append(ParCMapBlock(layer, mixer))
    new = ParCMobileVitV2Block(module, layers)
    ref = module.conv_1x1.weight
    return new.to(device=ref.device, dtype=ref.dtype).train(module.training)
