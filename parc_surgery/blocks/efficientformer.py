"""ParC EfficientFormer: the attention of its last stage's MetaBlock1d (Meta3D) -> ParC.

EfficientFormer (V1) flattens its last stage's map into tokens (no class token) and runs
a few pre-norm transformer blocks on them: norm1 -> Attention (with a bias table for the
7x7 grid, so timm's model runs at 224x224 only) -> ls1, norm2 -> Mlp -> ls2. Each becomes
a ParCViTBlock (blocks.vit) on that grid with no prefix tokens: the attention is the ParC
spatial mixer, everything else keeps its weights. With every MetaBlock1d converted the
model holds no attention, and it runs at other input sizes (the bias table is gone).
"""

from __future__ import annotations

from torch import nn

from .local_conv import require_type
from .registry import ReplacementContext, register_replacement
from .vit import token_block

__all__ = ["build_parc_efficientformer"]

_ACCEPTS = ("MetaBlock1d",)


@register_replacement("parc_efficientformer", accepts=_ACCEPTS, level="block")
def build_parc_efficientformer(module: nn.Module, ctx: ReplacementContext) -> nn.Module:
    """EfficientFormer MetaBlock1d -> ParCViTBlock: attention -> ParC on the token grid."""
    require_type(module, ctx, _ACCEPTS, "parc_efficientformer")
    return token_block(module, ctx, "token_mixer", prefix_tokens=0)
