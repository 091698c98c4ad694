"""The fft backend (Fast-ParC): the correlation theorem along the global axis.

`irfft(rfft(x~) * conj(rfft(w)))` per channel for depthwise convs; for dense / grouped
convs the per-frequency channel contraction runs as one complex batched GEMM. The
folded position bias (bias + ParC of pe) is added in the frequency domain, so the
output is written once. pocketfft (CPU) has no bf16/half kernels and cuFFT's half
kernels only take powers of two: both compute in float32 (float64 stays float64).
"""

from __future__ import annotations

import torch

from .mode import eager_inference
from .spatial import Form, axis_of, position_bias

__all__ = ["apply_fft", "prepare_fft"]


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # pocketfft has no bf16/half kernels; float32 keeps the result within bf16 rounding.
    return torch.float64 if dtype == torch.float64 else torch.float32


def prepare_fft(weight, bias, pe, direction, groups, length) -> Form:
    cdt = _compute_dtype(weight.dtype)
    w = weight.flatten(2).to(cdt)  # (O, Cg, L)
    out_chs, cg, _ = w.shape
    spec = torch.fft.rfft(w, n=length, dim=-1).conj()  # (O, Cg, F)
    nf = spec.shape[-1]
    pb = position_bias(
        w.unsqueeze(-1),
        None if bias is None else bias.to(cdt),
        None if pe is None else pe.to(cdt),
        groups,
    )
    bias_spec = None
    if pb is not None:
        # Folding the position bias into the spectrum saves a full pass over the output.
        pb = pb.expand(out_chs, length) if pb.shape[-1] != length else pb
        bias_spec = torch.fft.rfft(pb, n=length, dim=-1)  # (O, F)
        bias_spec = (
            bias_spec.view(out_chs, nf, 1) if direction == "H" else bias_spec.view(out_chs, 1, nf)
        )
    if cg == 1:
        og = out_chs // groups
        shape = (groups, og, nf, 1) if direction == "H" else (groups, og, 1, nf)
        spec = spec.reshape(shape)
        if og == 1:
            spec = spec.squeeze(1)
    else:
        # Dense / grouped: per frequency a complex (Cg x Og) matrix; the contraction is one
        # batched GEMM with the small B*other axis as rows, which MKL runs several times
        # faster than the transposed orientation (or a complex einsum) at batch 1.
        og = out_chs // groups
        spec = spec.reshape(groups, og, cg, nf).permute(0, 3, 2, 1).reshape(groups * nf, cg, og)
        spec = spec.contiguous()  # reshape may return a strided view, which BLAS runs slowly
        if bias_spec is not None:  # (O, F) -> (G*F, 1, Og), added by baddbmm
            bias_spec = bias_spec.reshape(groups, og, nf).permute(0, 2, 1)
            bias_spec = bias_spec.reshape(groups * nf, 1, og)
    return {"spec": spec, "bias_spec": bias_spec, "cg": cg, "length": length}


def _fft_dense(xf: torch.Tensor, form: Form, direction: str, groups: int) -> torch.Tensor:
    """Per-frequency channel contraction as one complex bmm; xf and the result are complex."""
    b, cg = xf.shape[0], form["cg"]
    nf, other = (xf.shape[2], xf.shape[3]) if direction == "H" else (xf.shape[3], xf.shape[2])
    xg = xf.unflatten(1, (groups, cg))  # (B, G, Cg, ., .)
    # to (G, F, B, other, Cg): one (B*other x Cg) @ (Cg x Og) product per group and frequency
    xg = xg.permute((1, 3, 0, 4, 2) if direction == "H" else (1, 4, 0, 3, 2))
    xg = xg.reshape(groups * nf, b * other, cg).contiguous()
    spec, bias = form["spec"], form["bias_spec"]
    y = torch.bmm(xg, spec) if bias is None else torch.baddbmm(bias, xg, spec)
    og = spec.shape[-1]
    y = y.view(groups, nf, b, other, og)
    y = y.permute((2, 0, 4, 1, 3) if direction == "H" else (2, 0, 4, 3, 1))
    y = y.reshape(b, groups * og, *((nf, other) if direction == "H" else (other, nf)))
    # irfft of a strided spectrum ran 2.2x slower than the copy plus irfft of a contiguous
    # one (114 us against 12 + 51 us for a C=128, L=14 half at batch 1).
    return y.contiguous()


def apply_fft(x, form: Form, direction: str, groups: int, out=None) -> torch.Tensor:
    dim, length, spec = axis_of(direction), form["length"], form["spec"]
    xf = torch.fft.rfft(x.to(_compute_dtype(x.dtype)), n=length, dim=dim)
    bias_spec = form["bias_spec"]
    if form["cg"] == 1 and spec.dim() == 3:  # depthwise, multiplier 1
        # One pass for product and bias; in eager inference in place, since xf is ours
        # and nothing needs it for backward (saves a spectrum-sized allocation).
        eager = eager_inference()
        if bias_spec is not None:
            yf = torch.addcmul(bias_spec, xf, spec, out=xf if eager else None)
        else:
            yf = xf.mul_(spec) if eager else xf * spec
        bias_spec = None
    elif form["cg"] == 1:  # depthwise with a channel multiplier
        yf = (xf.unflatten(1, (groups, 1)) * spec).flatten(1, 2)
    else:
        yf = _fft_dense(xf, form, direction, groups)
        bias_spec = None
    if bias_spec is not None:
        yf = yf + bias_spec
    y = torch.fft.irfft(yf, n=length, dim=dim)
    return y.to(x.dtype) if out is None else out.copy_(y)  # copy_ casts on the way
