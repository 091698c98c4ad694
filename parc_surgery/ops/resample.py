"""Resampling a global kernel (or position encoding) to the runtime feature length."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["resample_kernel"]


def resample_kernel(t: torch.Tensor, length: int, dim: int) -> torch.Tensor:
    """Linearly resample `t` along `dim` to `length` (align_corners=True); identity if equal.

    This is EdgeFormer's "meta kernel" rule: a kernel built for K positions is stretched or
    squeezed to the L positions of the input, so a model runs at any resolution. At
    length 1 the first entry is kept (align_corners=True with one output sample).
    """
    if length < 1:
        raise ValueError(f"resample length must be >= 1, got {length}")
    last = t.dim() - 1
    dim = dim % t.dim()
    if t.shape[dim] == length:
        return t
    # F.interpolate works on the last axis of a (N, C, L) tensor: move dim there. The
    # axis is named by its non-negative index: an exported graph then holds a Transpose
    # whose perm onnxruntime accepts (a -1 in a perm fails its type inference).
    moved = t.movedim(dim, last)
    lead = moved.shape[:-1]
    flat = moved.reshape(1, -1, moved.shape[-1])
    # interpolate has no bfloat16/half linear kernel on every build: compute in float32.
    work = flat if flat.dtype in (torch.float32, torch.float64) else flat.float()
    out = F.interpolate(work, size=length, mode="linear", align_corners=True).to(t.dtype)
    return out.reshape(*lead, length).movedim(last, dim)
