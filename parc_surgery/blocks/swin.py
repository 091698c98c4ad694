"""ParC Swin block: shifted-window attention -> ParC on the whole stage map.

A timm Swin (V1) block works on an NHWC map: norm1 -> (shift, window partition,
WindowAttention, reverse, unshift) -> residual, then norm2 -> Mlp -> residual. The
windowed attention becomes the ParC spatial mixer (blocks.parc_mixer) over the whole
(un-windowed) map, so there are no windows, shifts, masks or relative-position tables
left; norm1, drop_path1, norm2, mlp, drop_path2 keep their weights (only `attn.*` becomes
`mixer.*`). The block keeps Swin's `set_input_size`, so timm's model.set_input_size(...)
still works; ParC itself resamples its kernels at any feature size.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from parc_surgery.ops.fx_leaf import fx_leaf

from .local_conv import global_kernel_size, require_type
from .parc_mixer import ParCSpatialMixer
from .registry import ReplacementContext, ReplacementError, register_replacement
from .vit import refuse_init_from_local

__all__ = ["ParCSwinBlock", "build_parc_swin"]

_ACCEPTS = ("SwinTransformerBlock",)
_SWIN_MODULE = "timm.models.swin_transformer"
_KEPT = ("norm1", "drop_path1", "norm2", "mlp", "drop_path2")


@fx_leaf
class ParCSwinBlock(nn.Module):
    """Swin block with ParC over the whole map instead of (shifted) window attention.

    forward(x: (B, H, W, C)) -> same shape, at any H, W.
    """

    def __init__(self, block: nn.Module, mixer: ParCSpatialMixer):
        super().__init__()
        for name in _KEPT:
            setattr(self, name, copy.deepcopy(getattr(block, name)))
        self.mixer = mixer
        self.input_resolution = getattr(block, "input_resolution", None)

    def set_input_size(self, feat_size, window_size=None, always_partition=None) -> None:
        """timm's Swin stages call this on resize: ParC has no windows to rebuild."""
        self.input_resolution = tuple(feat_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        if self.mixer.fast_path_applies():  # NHWC throughout, no permute copies
            z = self.mixer.add_pe_nhwc(x) if self.mixer.has_pe else x
            y = self.mixer.mix_nhwc(self.norm1(z))
        else:
            y = self._mix_reference(x)
        x = (x + self.drop_path1(y)).reshape(b, -1, c)
        x = x + self.drop_path2(self.mlp(self.norm2(x)))
        return x.reshape(b, h, w, c)

    def _mix_reference(self, x: torch.Tensor) -> torch.Tensor:
        z = x
        if self.mixer.has_pe:  # pe before the norm
            z = self.mixer.add_pe_reference(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return self.mixer.forward_reference(self.norm1(z).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)

    def forward_reference(self, x: torch.Tensor) -> torch.Tensor:
        """The block with the mixer step by step on NCHW permutes."""
        b, h, w, c = x.shape
        x = (x + self.drop_path1(self._mix_reference(x))).reshape(b, -1, c)
        x = x + self.drop_path2(self.mlp(self.norm2(x)))
        return x.reshape(b, h, w, c)


@register_replacement("parc_swin", accepts=_ACCEPTS, level="block")
def build_parc_swin(module: nn.Module, ctx: ReplacementContext) -> nn.Module:
    """Swin block -> ParCSwinBlock: window attention -> ParC on the whole map; rest kept."""
    require_type(module, ctx, _ACCEPTS, "parc_swin")
    if type(module).__module__ != _SWIN_MODULE:
        raise ReplacementError(
            f"parc_swin replaces timm's Swin V1 blocks ({_SWIN_MODULE}), not a "
            f"{type(module).__module__}.{type(module).__name__}",
            where=ctx.path,
        )
    refuse_init_from_local(ctx, "window attention")
    mixer = ParCSpatialMixer(module.dim, global_kernel_size(ctx), use_pe=ctx.pe, impl=ctx.impl)
    new = ParCSwinBlock(module, mixer)
    ref = module.norm1.weight
    return new.to(device=ref.device, dtype=ref.dtype).train(module.training)
