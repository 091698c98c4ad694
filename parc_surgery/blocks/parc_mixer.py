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

Inference fast path (`fast_path_applies`: eval, eager no-grad, no hooks on the mixer or
its ParCs, no forced or explicit backend): depthwise circular convolutions along H and
along W commute, so "H then W" on x1 and "W then H" on x2 is one H pass over all C
channels followed by one W pass over all C channels. Every bias (the second stage's pe
run through the convolutions) is folded into one constant map, the first stage's pe into
one full-size map, both cached per (H, W, dtype, device) and rebuilt when a parameter
changes (version counter / storage), on `train()` and on `.to()`. A pass is a batched
GEMM with the cached circulant matrices for sides > SMALL_SIDE and a depthwise conv for
shorter ones. `mix_nhwc` / `add_pe_nhwc` take (B, H, W, C) maps (Swin's layout, a ViT's
token sequence viewed as a grid) and can write into a caller's view. `forward_reference`
is the step-by-step path, which training, tracing and export always take.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as _module

from parc_surgery.ops import ParC, ParCPair, resample_kernel
from parc_surgery.ops.circulant import circulant_matrices
from parc_surgery.ops.dispatch import current_forced_impl
from parc_surgery.ops.fx_leaf import fx_leaf
from parc_surgery.ops.mode import eager_inference
from parc_surgery.ops.spatial import circular_extend

__all__ = ["SMALL_SIDE", "ParCSpatialMixer"]

# Up to this side a pass runs as a depthwise conv: ATen's bmm loops over tiny matrices
# without vectorising (ops.circulant), so a 7x7 circulant GEMM is slower than the conv.
SMALL_SIDE = 8
# Cached fast forms per mixer (one per (H, W, dtype, device)).
_FAST_CACHE = 4


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
        self._fast: dict = {}

    @property
    def has_pe(self) -> bool:
        return self.pe_h is not None

    def add_pe(self, x: torch.Tensor) -> torch.Tensor:
        """x + the first stage's pe (resampled to x's H and W); x unchanged without pe."""
        if self.pe_h is None:
            return x
        if self.fast_path_applies():
            return x + self._form(x.shape[2], x.shape[3], x.dtype, x.device)["pe"]
        return self.add_pe_reference(x)

    def add_pe_reference(self, x: torch.Tensor) -> torch.Tensor:
        """add_pe step by step (split, resample, add, concatenate)."""
        if self.pe_h is None:
            return x
        h, w = x.shape[-2:]
        x1, x2 = x.split(self.parc1.split, dim=1)
        pe_h = resample_kernel(self.pe_h, h, 2).to(x.dtype)
        pe_w = resample_kernel(self.pe_w, w, 3).to(x.dtype)
        return torch.cat([x1 + pe_h, x2 + pe_w], dim=1)

    def add_pe_nhwc(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """add_pe on a (B, H, W, C) map; `out` (fast path only) is a view to write into."""
        if self.fast_path_applies():
            if self.pe_h is None:
                return x if out is None else out.copy_(x)
            pe = self._form(x.shape[1], x.shape[2], x.dtype, x.device)["pe_nhwc"]
            return torch.add(x, pe) if out is None else torch.add(x, pe, out=out)
        y = self.add_pe_reference(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return y if out is None else out.copy_(y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Steps 3-5 on the normalised map `x`: H then W on x1, W then H on x2."""
        if self.fast_path_applies():
            form = self._form(x.shape[2], x.shape[3], x.dtype, x.device)
            y = self._passes(x, form)
            return y if form["bias"] is None else y.add_(form["bias"])
        return self.forward_reference(x)

    def forward_reference(self, x: torch.Tensor) -> torch.Tensor:
        """The mixer step by step: ParCPair, split, the two second-stage ParCs, concat."""
        y1, y2 = self.parc1(x).split(self.parc1.split, dim=1)
        return torch.cat([self.parc2_w(y1), self.parc2_h(y2)], dim=1)

    def mix_nhwc(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """forward on a (B, H, W, C) map, result (B, H, W, C); `out`: a view to fill."""
        xn = x.permute(0, 3, 1, 2)
        if not self.fast_path_applies():
            y = self.forward_reference(xn).permute(0, 2, 3, 1)
            return y if out is None else out.copy_(y)
        form = self._form(xn.shape[2], xn.shape[3], x.dtype, x.device)
        y = self._passes(xn, form).permute(0, 2, 3, 1)
        # The bias add doubles as the layout pass back to NHWC.
        bias = form["bias_nhwc"]
        if out is None:
            return y.contiguous() if bias is None else torch.add(y, bias)
        return out.copy_(y) if bias is None else torch.add(y, bias, out=out)

    # -- the fast path --------------------------------------------------------------
    def _parcs(self) -> tuple[nn.Module, ...]:
        return (self.parc1, self.parc1.parc_h, self.parc1.parc_w, self.parc2_w, self.parc2_h)

    def fast_path_applies(self) -> bool:
        """True when the fused inference passes may run instead of forward_reference."""
        if self.training or not eager_inference() or current_forced_impl() is not None:
            return False
        if _module._global_forward_hooks or _module._global_forward_pre_hooks:
            return False
        for m in (self, *self._parcs()):
            if m._forward_hooks or m._forward_pre_hooks or getattr(m, "impl", "auto") != "auto":
                return False
        return True

    def _version_key(self) -> tuple | None:
        try:
            return tuple((p._version, p.data_ptr()) for p in self.parameters())
        except RuntimeError:  # inference-mode tensors have no version counter
            return None

    def _form(self, h: int, w: int, dtype: torch.dtype, device: torch.device) -> dict:
        key = (h, w, dtype, device)
        version = self._version_key()
        cache = self.__dict__.setdefault("_fast", {})
        hit = cache.get(key)
        if hit is not None and version is not None and hit[0] == version:
            return hit[1]
        form = self._make_form(h, w, dtype, device)
        if version is not None:
            if len(cache) >= _FAST_CACHE and key not in cache:
                cache.pop(next(iter(cache)))
            cache[key] = (version, form)
        return form

    def _make_form(self, h: int, w: int, dtype: torch.dtype, device: torch.device) -> dict:
        def kernels(first: ParC, second: ParC, length: int, axis: int) -> torch.Tensor:
            k = torch.cat([first.weight, second.weight]).to(dtype)  # (C, 1, kh, 1) / (C,1,1,kw)
            return resample_kernel(k, length, axis)

        wh = kernels(self.parc1.parc_h, self.parc2_h, h, 2)  # x1: stage 1, x2: stage 2
        ww = kernels(self.parc2_w, self.parc1.parc_w, w, 3)  # x1: stage 2, x2: stage 1
        form: dict = {"h": h, "w": w}
        if h <= SMALL_SIDE:
            form["conv_h"] = wh
        else:
            form["mat_h"] = circulant_matrices(wh.flatten(1)).contiguous()  # (C, H, H)
        if w <= SMALL_SIDE:
            form["conv_w"] = ww
        else:  # right-multiplied: x (H, W) @ A^T
            form["mat_w"] = circulant_matrices(ww.flatten(1)).transpose(1, 2).contiguous()
        # Everything the mixer adds besides the convolutions of x: the mixer of zeros.
        bias = None
        params = (self.parc2_w.pe, self.parc2_h.pe, self.parc2_w.bias, self.parc2_h.bias)
        params += (self.parc1.parc_h.bias, self.parc1.parc_w.bias)
        if any(p is not None for p in params):
            zeros = torch.zeros(1, self.dim, h, w, dtype=dtype, device=device)
            bias = self.forward_reference(zeros)
        form["bias"] = bias
        form["bias_nhwc"] = None if bias is None else bias.permute(0, 2, 3, 1).contiguous()
        if self.pe_h is not None:
            zeros = torch.zeros(1, self.dim, h, w, dtype=dtype, device=device)
            pe = self.add_pe_reference(zeros)
            form["pe"], form["pe_nhwc"] = pe, pe.permute(0, 2, 3, 1).contiguous()
        return form

    @staticmethod
    def _passes(x: torch.Tensor, form: dict) -> torch.Tensor:
        """The H pass then the W pass over all channels of the NCHW (view) `x`."""
        b = x.shape[0]
        if "conv_h" in form:
            t = F.conv2d(circular_extend(x, 2, form["h"]), form["conv_h"], groups=x.shape[1])
        else:
            mat = form["mat_h"]
            t = torch.empty(x.shape, dtype=x.dtype, device=x.device)
            for i in range(b):
                torch.bmm(mat, x[i].contiguous(), out=t[i])
        if "conv_w" in form:
            return F.conv2d(circular_extend(t, 3, form["w"]), form["conv_w"], groups=x.shape[1])
        mat = form["mat_w"]
        t = t.contiguous()
        y = torch.empty(t.shape, dtype=x.dtype, device=x.device)
        for i in range(b):
            torch.bmm(t[i], mat, out=y[i])
        return y

    def train(self, mode: bool = True):
        self.__dict__.setdefault("_fast", {}).clear()
        return super().train(mode)

    def _apply(self, fn, *args, **kwargs):
        self.__dict__.setdefault("_fast", {}).clear()
        return super()._apply(fn, *args, **kwargs)

    def extra_repr(self) -> str:
        kh, kw = self.parc1.parc_h.kernel_size, self.parc1.parc_w.kernel_size
        return f"{self.dim}, kernel_size=({kh}, {kw}), use_pe={self.has_pe}"
