"""ParC for timm's MetaFormer blocks (PoolFormer V1 / V2, ConvFormer, CAFormer).

A `MetaFormerBlock` is norm1 -> token mixer -> residual, then norm2 -> MLP -> residual,
on an NCHW map, with optional layer scale and residual scale; in an attention stage
(CAFormer's stages 3 and 4) the stage hands its blocks (B, H*W, C) tokens instead, and
the ParC block lays them out as the grid (blocks.vit.token_grid: the conversion grid,
or any grid of its aspect ratio) for the mixer. The token mixer is the
part a MetaFormer plugs in (PoolFormer's pooling, `pool(x) - x`; ConvFormer's separable
conv; CAFormer's attention), so it is the part ParC replaces: the mixer becomes ParC-Net's
spatial mixer (blocks.parc_mixer) on the block's map, with pe before the norm (PARC.md
step 2). norm1, drop_path1, layer_scale1, res_scale1, norm2, mlp, drop_path2,
layer_scale2 and res_scale2 keep their weights and state_dict keys (`token_mixer.*`
becomes `mixer.*`). A pooling has no weights and attention no local kernel: init
from_local is refused.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from parc_surgery.ops.fx_leaf import fx_leaf

from .attention_zoo import _mix_tokens
from .local_conv import global_kernel_size, require_type
from .parc_mixer import ParCSpatialMixer
from .registry import ReplacementContext, ReplacementError, register_replacement
from .vit import refuse_init_from_local, token_grid

__all__ = ["ParCMetaFormerMixerBlock", "build_parc_metaformer"]

_ACCEPTS = ("MetaFormerBlock",)
_MODULE = "timm.models.metaformer"
_KEPT = (
    "norm1",
    "drop_path1",
    "layer_scale1",
    "res_scale1",
    "norm2",
    "mlp",
    "drop_path2",
    "layer_scale2",
    "res_scale2",
)


@fx_leaf
class ParCMetaFormerMixerBlock(nn.Module):
    """MetaFormerBlock with the ParC spatial mixer as its token mixer: (B, C, H, W) -> same,
    or (B, H*W, C) tokens of a grid of `grid_size`'s aspect ratio -> same."""

    def __init__(self, block: nn.Module, mixer: ParCSpatialMixer, grid_size: tuple[int, int]):
        super().__init__()
        for name in _KEPT:
            setattr(self, name, copy.deepcopy(getattr(block, name)))
        self.mixer = mixer
        self.grid_size = tuple(grid_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:  # an attention stage's tokens
            hw = token_grid(x.shape[1], self.grid_size)
            y = _mix_tokens(self.mixer, self.norm1, x, hw)
        else:
            y = self.mixer(self.norm1(self.mixer.add_pe(x)))
        x = self.res_scale1(x) + self.layer_scale1(self.drop_path1(y))
        return self.res_scale2(x) + self.layer_scale2(self.drop_path2(self.mlp(self.norm2(x))))


def _channels(module: nn.Module) -> int:
    fc1 = getattr(module.mlp, "fc1", None)
    if fc1 is not None:
        return fc1.in_channels if isinstance(fc1, nn.Conv2d) else fc1.in_features
    return int(module.norm2.weight.shape[0])


@register_replacement("parc_metaformer", accepts=_ACCEPTS, level="block")
def build_parc_metaformer(module: nn.Module, ctx: ReplacementContext) -> nn.Module:
    """MetaFormerBlock -> its token mixer (pooling, sep conv, attention) becomes ParC."""
    require_type(module, ctx, _ACCEPTS, "parc_metaformer")
    if type(module).__module__ != _MODULE:
        raise ReplacementError(
            f"parc_metaformer replaces timm's {_MODULE}.MetaFormerBlock, not a "
            f"{type(module).__module__}.{type(module).__name__}",
            where=ctx.path,
        )
    refuse_init_from_local(ctx, f"a MetaFormer {type(module.token_mixer).__name__} token mixer")
    mixer = ParCSpatialMixer(_channels(module), global_kernel_size(ctx), ctx.pe, ctx.impl)
    new = ParCMetaFormerMixerBlock(module, mixer, ctx.feature_size)
    ref = next(module.parameters())
    return new.to(device=ref.device, dtype=ref.dtype).train(module.training)
