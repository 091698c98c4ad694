"""ParC for the attention of CaiT, Twins, CoAtNet and MaxViT (PARC.md section 3).

Each family's transformer block keeps its own norms, MLP, layer scale and drop path (and
their state_dict keys); only its attention becomes the ParC spatial mixer
(blocks.parc_mixer) on the block's whole feature map, as ParC-Net does for MobileViT:

- CaiT `LayerScaleBlock` (the self-attention blocks on the patch tokens; its
  class-attention blocks `LayerScaleBlockClassAttn` keep theirs: they only read the patch
  tokens into the class token): `attn` -> `mixer`, `gamma_1` / `gamma_2` kept.
- Twins `Block` (PCPVT's global sub-sampled attention, SVT's locally-grouped and global
  ones alike): tokens with the map's size passed along, as the model does.
- CoAtNet `TransformerBlock2d` (NCHW, relative-position attention): stride 1 only; the
  stride-2 first block of a stage pools in its norm and shortcut, and stays.
- MaxViT `MaxxVitBlock`: its MBConv is kept; its window (`attn_block`) and grid
  (`attn_grid`) attention each become a ParC map block (NHWC) with their own norms and
  MLP, so the block has no window or grid partition left. pe on the window one only.

Attention has no local kernel: init from_local is refused. Every class here is an FX
leaf (its forward reads the runtime grid).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from parc_surgery.ops.fx_leaf import fx_leaf

from .local_conv import global_kernel_size, refuse_stride, require_type
from .parc_mixer import ParCSpatialMixer
from .registry import ReplacementContext, ReplacementError, register_replacement
from .vit import refuse_init_from_local, token_grid

__all__ = [
    "ParCCaitBlock",
    "ParCMap2dBlock",
    "ParCMaxxVitBlock",
    "ParCPartitionBlock",
    "ParCTwinsBlock",
    "build_parc_cait",
    "build_parc_coatnet",
    "build_parc_maxvit",
    "build_parc_twins",
]


def _copy_kept(new: nn.Module, block: nn.Module, names: tuple[str, ...]) -> None:
    for name in names:  # absent ones (no layer scale) become identities
        kept = getattr(block, name, None)
        if isinstance(kept, nn.Parameter):
            setattr(new, name, nn.Parameter(kept.detach().clone(), kept.requires_grad))
        else:
            setattr(new, name, copy.deepcopy(kept) if kept is not None else nn.Identity())


def _mixer(dim: int, ctx: ReplacementContext, use_pe: bool | None = None) -> ParCSpatialMixer:
    pe = ctx.pe if use_pe is None else use_pe
    return ParCSpatialMixer(dim, global_kernel_size(ctx), use_pe=pe, impl=ctx.impl)


def _placed(new: nn.Module, old: nn.Module) -> nn.Module:
    ref = next(old.parameters())
    return new.to(device=ref.device, dtype=ref.dtype).train(old.training)


def _from_module(module: nn.Module, ctx: ReplacementContext, where: str, name: str) -> None:
    if type(module).__module__ != where:
        raise ReplacementError(
            f"{name} replaces timm's {where} blocks, not a "
            f"{type(module).__module__}.{type(module).__name__}",
            where=ctx.path,
        )


def _tokens_to_map(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], h, w)


def _mix_tokens(mixer: ParCSpatialMixer, norm: nn.Module, x: torch.Tensor, hw) -> torch.Tensor:
    """mixer(norm(x + pe)) on (B, h*w, C) tokens laid out as an h x w grid."""
    h, w = hw
    z = x
    if mixer.has_pe:  # pe before the norm (PARC.md step 2)
        z = mixer.add_pe(_tokens_to_map(x, h, w)).flatten(2).transpose(1, 2)
    return mixer(_tokens_to_map(norm(z), h, w)).flatten(2).transpose(1, 2)


@fx_leaf
class ParCCaitBlock(nn.Module):
    """CaiT LayerScaleBlock with ParC on the patch grid: forward((B, h*w, C)) -> same."""

    def __init__(self, block: nn.Module, mixer: ParCSpatialMixer, grid_size: tuple[int, int]):
        super().__init__()
        _copy_kept(self, block, ("norm1", "drop_path", "norm2", "mlp", "gamma_1", "gamma_2"))
        self.mixer = mixer
        self.grid_size = tuple(grid_size)
        self.runtime_grid: tuple[int, int] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hw = token_grid(x.shape[1], self.grid_size, self.runtime_grid)
        x = x + self.drop_path(self.gamma_1 * _mix_tokens(self.mixer, self.norm1, x, hw))
        return x + self.drop_path(self.gamma_2 * self.mlp(self.norm2(x)))


@fx_leaf
class ParCTwinsBlock(nn.Module):
    """Twins Block with ParC on the map: forward((B, H*W, C), (H, W)) -> (B, H*W, C)."""

    def __init__(self, block: nn.Module, mixer: ParCSpatialMixer):
        super().__init__()
        _copy_kept(self, block, ("norm1", "drop_path1", "norm2", "mlp", "drop_path2"))
        self.mixer = mixer

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        x = x + self.drop_path1(_mix_tokens(self.mixer, self.norm1, x, size))
        return x + self.drop_path2(self.mlp(self.norm2(x)))


_MAP_KEPT = ("norm1", "ls1", "drop_path1", "norm2", "mlp", "ls2", "drop_path2")


@fx_leaf
class ParCMap2dBlock(nn.Module):
    """Pre-norm NCHW transformer block (CoAtNet) with ParC instead of attention."""

    def __init__(self, block: nn.Module, mixer: ParCSpatialMixer):
        super().__init__()
        _copy_kept(self, block, _MAP_KEPT)
        self.mixer = mixer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.mixer.add_pe(x)
        x = x + self.drop_path1(self.ls1(self.mixer(self.norm1(z))))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))


@fx_leaf
class ParCPartitionBlock(nn.Module):
    """MaxViT's (window or grid) partition attention block, NHWC, with ParC on the map."""

    def __init__(self, block: nn.Module, mixer: ParCSpatialMixer):
        super().__init__()
        _copy_kept(self, block, _MAP_KEPT)
        self.mixer = mixer

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, H, W, C)
        z = self.mixer.add_pe(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        y = self.mixer(self.norm1(z).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        x = x + self.drop_path1(self.ls1(y))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))


class ParCMaxxVitBlock(nn.Module):
    """MaxxVitBlock: its MBConv, then ParC in place of window and grid attention."""

    def __init__(self, block: nn.Module, window: nn.Module | None, grid: nn.Module):
        super().__init__()
        self.conv = copy.deepcopy(block.conv)
        self.attn_block = window
        self.attn_grid = grid

    def set_input_size(self, feat_size=None, window_size=None, grid_size=None) -> None:
        """timm's MaxxVit.set_input_size calls this: ParC has no partition to resize."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x).permute(0, 2, 3, 1)
        if self.attn_block is not None:
            x = self.attn_block(x)
        return self.attn_grid(x).permute(0, 3, 1, 2)


@register_replacement("parc_cait", accepts=("LayerScaleBlock",), level="block")
def build_parc_cait(module: nn.Module, ctx: ReplacementContext) -> nn.Module:
    """CaiT LayerScaleBlock -> ParCCaitBlock: self-attention -> ParC on the patch grid."""
    require_type(module, ctx, ("LayerScaleBlock",), "parc_cait")
    _from_module(module, ctx, "timm.models.cait", "parc_cait")
    refuse_init_from_local(ctx, "a CaiT block's attention")
    mixer = _mixer(module.norm1.normalized_shape[-1], ctx)
    return _placed(ParCCaitBlock(module, mixer, ctx.feature_size), module)


@register_replacement("parc_twins", accepts=("timm.models.twins.Block",), level="block")
def build_parc_twins(module: nn.Module, ctx: ReplacementContext) -> nn.Module:
    """Twins Block -> ParCTwinsBlock: (sub-sampled / grouped) attention -> ParC."""
    refuse_init_from_local(ctx, "a Twins block's attention")
    mixer = _mixer(module.norm1.normalized_shape[-1], ctx)
    return _placed(ParCTwinsBlock(module, mixer), module)


@register_replacement("parc_coatnet", accepts=("TransformerBlock2d",), level="block")
def build_parc_coatnet(module: nn.Module, ctx: ReplacementContext) -> nn.Module:
    """CoAtNet TransformerBlock2d (stride 1) -> ParCMap2dBlock: attention -> ParC."""
    require_type(module, ctx, ("TransformerBlock2d",), "parc_coatnet")
    _from_module(module, ctx, "timm.models.maxxvit", "parc_coatnet")
    if not isinstance(module.shortcut, nn.Identity):
        refuse_stride(ctx, "this TransformerBlock2d downsamples (stride 2) in its norm1")
    refuse_init_from_local(ctx, "a CoAtNet block's attention")
    mixer = _mixer(module.norm2.normalized_shape[-1], ctx)
    return _placed(ParCMap2dBlock(module, mixer), module)


@register_replacement("parc_maxvit", accepts=("MaxxVitBlock",), level="block")
def build_parc_maxvit(module: nn.Module, ctx: ReplacementContext) -> nn.Module:
    """MaxxVitBlock -> its MBConv + ParC in place of window and grid attention."""
    require_type(module, ctx, ("MaxxVitBlock",), "parc_maxvit")
    _from_module(module, ctx, "timm.models.maxxvit", "parc_maxvit")
    refuse_init_from_local(ctx, "MaxViT's window and grid attention")
    if getattr(module, "nchw_attn", False):
        raise ReplacementError(
            "parc_maxvit converts MaxViT's channels-last partition attention; this block "
            "uses the NCHW variant (PartitionAttention2d)",
            where=ctx.path,
            hint="use a channels-last MaxViT (maxvit_*_tf_*, maxvit_tiny_rw_*)",
        )
    dim = module.attn_grid.norm1.normalized_shape[-1]
    window = None
    if module.attn_block is not None:
        window = ParCPartitionBlock(module.attn_block, _mixer(dim, ctx))
    grid = ParCPartitionBlock(module.attn_grid, _mixer(dim, ctx, use_pe=window is None and ctx.pe))
    return _placed(ParCMaxxVitBlock(module, window, grid), module)
