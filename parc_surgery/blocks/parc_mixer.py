"""The ParC spatial mixer that replaces attention (PARC.md section 3, steps 1-5).

ParC-Net's meta-former block mixes space in two stages of global depthwise circular
convolutions: the first half of the channels runs H then W, the second half W then H, so
after both stages every output has seen the whole map. `ParCSpatialMixer` is that spatial
part without the residual and without the norm: the block that holds it (ViT, Swin,
EfficientFormer, MobileViTV2) keeps the model's own pre-norm, residual, layer scale, drop
path and MLP, which is what makes the swap weight-preserving. In the block:

    y = mixer(norm1(mixer.add_pe(x)))        # pe before the norm (step 2), then steps 3-5
    x = x + drop_path(layer_scale(y))        # the model's own residual

pe (first block of a stack only): `pe_h` / `pe_w` are added before the norm (step 2);
the second stage's pe (step 5) lives in its two ParCs. Both resample with the kernels at
other feature sizes. No channel shuffle between the stages (published ParC-Net-S).
"""

from __future__ import annotations

import torch
from torch import nn

from parc_surgery.ops import ParC, ParCPair, resample_kernel
from parc_surgery.ops.fx_leaf import fx_leaf

__all__ = ["ParCSpatialMixer"]


@fx_leaf
class ParCSpatialMixer(nn.Module):
    """Global depthwise ParC in both directions on a (B, C, H, W) map; no bias, no residual.

    With odd C the second half (W first, then H) gets the extra channel, as in ParCPair.
    """

    def __init__(
        self, dim: int, kernel_size: tuple[int, int], use_pe: bool = True, impl: str = "auto"
    ):
        super().__init__()
        if dim < 2:
            raise ValueError(f"ParCSpatialMixer needs at least 2 channels, got {dim}")
        kh, kw = kernel_size
        c1, c2 = dim // 2, dim - dim // 2
        self.dim = dim
        # Step 2's pe, added before the norm: x1 + pe_H (along H), x2 + pe_W (along W).
        self.pe_h = nn.Parameter(torch.randn(1, c1, kh, 1)) if use_pe else None
        self.pe_w = nn.Parameter(torch.randn(1, c2, 1, kw)) if use_pe else None
        # Step 3: x1 -> H-ParC, x2 -> W-ParC.
        self.parc1 = ParCPair(
            dim, (kh, kw), groups_per_half=None, use_pe=False, bias=False, impl=impl
        )
        # Step 5: x1 + pe2_W -> W-ParC, x2 + pe2_H -> H-ParC (pe inside the ParC).
        self.parc2_w = ParC(c1, c1, "W", kw, groups=c1, use_pe=use_pe, bias=False, impl=impl)
        self.parc2_h = ParC(c2, c2, "H", kh, groups=c2, use_pe=use_pe, bias=False, impl=impl)
        if use_pe:
            # PARC.md step 7: pe ~ randn (std 1) in the meta-former block, not trunc_normal.
            with torch.no_grad():
                self.parc2_w.pe.normal_()
                self.parc2_h.pe.normal_()

    @property
    def has_pe(self) -> bool:
        return self.pe_h is not None

    def add_pe(self, x: torch.Tensor) -> torch.Tensor:
        """x + the first stage's pe (resampled to x's H and W); x unchanged without pe."""
        if self.pe_h is None:
            return x
        h, w = x.shape[-2:]
        x1, x2 = x.split(self.parc1.split, dim=1)
        pe_h = resample_kernel(self.pe_h, h, 2).to(x.dtype)
        pe_w = resample_kernel(self.pe_w, w, 3).to(x.dtype)
        return torch.cat([x1 + pe_h, x2 + pe_w], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Steps 3-5 on the normalised map `x`: H then W on x1, W then H on x2."""
        y1, y2 = self.parc1(x).split(self.parc1.split, dim=1)
        return torch.cat([self.parc2_w(y1), self.parc2_h(y2)], dim=1)

    def extra_repr(self) -> str:
        kh, kw = self.parc1.parc_h.kernel_size, self.parc1.parc_w.kernel_size
        return f"{self.dim}, kernel_size=({kh}, {kw}), use_pe={self.has_pe}"
