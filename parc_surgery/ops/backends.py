"""The three ways to compute one ParC direction: spatial, fft and circulant.

Every backend is split in two so the module can cache the expensive half in inference:
``prepare_<name>(weight, bias, pe, direction, groups, length)`` turns the parameters
(already resampled to the runtime length) into a kernel form, and
``apply_<name>(x, form, direction, groups, out=None)`` runs it on an input. All of them
compute PARC.md section 1 exactly: y[b,o,i] = bias[o] + sum_c sum_k w[o,c,k] * x~[b,c,(i+k) mod L].
`out` (no-grad only) is a preallocated NCHW view the result is written into, which lets
`ParCPair` fill one output tensor instead of concatenating two.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["BACKENDS", "eager_inference", "position_bias"]

Form = dict[str, Any]


def eager_inference() -> bool:
    """True in plain eager no-grad runs, where in-place and out= shortcuts are safe.

    Under autograd, torch.compile, FX, TorchScript tracing or ONNX export the backends
    stick to out-of-place ops, which every tracer and exporter understands.
    """
    if torch.is_grad_enabled() or torch.jit.is_tracing() or torch.jit.is_scripting():
        return False
    compiler = getattr(torch, "compiler", None)
    if compiler is not None and compiler.is_compiling():
        return False
    fx = torch.fx._symbolic_trace
    tracing = getattr(fx, "is_fx_symbolic_tracing", None) or fx.is_fx_tracing
    return not tracing()


def _axis(direction: str) -> int:
    return 2 if direction == "H" else 3


def _circular_extend(x: torch.Tensor, dim: int) -> torch.Tensor:
    # The official alignment: output row i sees rows i .. i+L-1 (mod L).
    return torch.cat([x, x.narrow(dim, 0, x.shape[dim] - 1)], dim=dim)


def position_bias(
    weight: torch.Tensor, bias: torch.Tensor | None, pe: torch.Tensor | None, groups: int
) -> torch.Tensor | None:
    """Bias plus the ParC of pe alone, (O, L) ((O, 1) without pe): conv(x+pe) = conv(x)+conv(pe)."""
    if pe is None:
        return None if bias is None else bias[:, None]  # (O, 1), broadcasts over L
    w = weight.flatten(2)  # (O, Cg, L)
    p = pe.flatten(2)  # (1, C, L)
    out = F.conv1d(_circular_extend(p, 2), w, bias, groups=groups)
    return out[0]  # (O, L)


# --- spatial: the official circular extension + conv2d -------------------------------


def prepare_spatial(weight, bias, pe, direction, groups, length) -> Form:
    return {"weight": weight, "bias": bias, "pe": pe}


def _emit(y: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
    return y if out is None else out.copy_(y)


def apply_spatial(x, form: Form, direction: str, groups: int, out=None) -> torch.Tensor:
    if form["pe"] is not None:
        x = x + form["pe"]
    x = _circular_extend(x, _axis(direction))
    return _emit(F.conv2d(x, form["weight"], form["bias"], groups=groups), out)


# --- fft (Fast-ParC): correlation theorem along the global axis -----------------------


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
    return y.reshape(b, groups * og, *((nf, other) if direction == "H" else (other, nf)))


def apply_fft(x, form: Form, direction: str, groups: int, out=None) -> torch.Tensor:
    dim, length, spec = _axis(direction), form["length"], form["spec"]
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


# --- circulant: one L x L matrix per (out, in) kernel, run as batched matmul -----------


def prepare_circulant(weight, bias, pe, direction, groups, length) -> Form:
    w = weight.flatten(2)  # (O, Cg, L)
    out_chs, cg, _ = w.shape
    og = out_chs // groups
    ar = torch.arange(length, device=w.device)
    idx = (ar[None, :] - ar[:, None]) % length  # idx[i, m] = (m - i) mod L
    a = w[:, :, idx]  # (O, Cg, L_i, L_m): y_i = sum_m a[i, m] x_m
    a = a.reshape(groups, og, cg, length, length)
    if direction == "H":  # y (Og*L_i) = A (Og*L_i, Cg*L_m) @ x (Cg*L_m, W)
        mat = a.permute(0, 1, 3, 2, 4).reshape(groups, og * length, cg * length)
    else:  # y (H, Og*L_j) = x (H, Cg*L_m) @ A^T (Cg*L_m, Og*L_j)
        mat = a.permute(0, 2, 4, 1, 3).reshape(groups, cg * length, og * length)
    mat = mat.contiguous()  # reshape may return a strided view, which BLAS runs slowly
    pb = position_bias(weight, bias, pe, groups)
    if pb is not None:
        pb = pb.view(out_chs, -1, 1) if direction == "H" else pb.view(out_chs, 1, -1)
    return {"mat": mat, "pos_bias": pb, "cg": cg, "og": og}


def apply_circulant(x, form: Form, direction: str, groups: int, out=None) -> torch.Tensor:
    mat, cg, og = form["mat"], form["cg"], form["og"]
    b, c, h, w = x.shape
    if cg == 1 and og == 1 and b == 1 and eager_inference():  # not when traced: b is baked in
        return _circulant_depthwise_single(x, form, direction, out)
    if cg == 1 and og == 1 and b > 1:
        # Depthwise: einsum batches over channels with (L x L) @ (L x B*other) products,
        # several times faster than matmul's broadcast over B*C tiny products at small L.
        eq = "cij,bcjw->bciw" if direction == "H" else "cjw,bchj->bchw"
        y = torch.einsum(eq, mat, x)
    elif direction == "H":
        y = torch.matmul(mat, x.reshape(b, groups, cg * h, w)).view(b, groups * og, h, w)
    elif cg == 1 and og == 1:
        y = torch.matmul(x, mat)
    else:
        xg = x.reshape(b, groups, cg, h, w).transpose(2, 3).reshape(b, groups, h, cg * w)
        y = torch.matmul(xg, mat).view(b, groups, h, og, w).transpose(2, 3)
        y = y.reshape(b, groups * og, h, w)
    pb = form["pos_bias"]
    if out is None:
        eager = eager_inference()
        if y.is_contiguous() or not eager:
            y = y.contiguous()
            return y if pb is None else (y.add_(pb) if eager else y + pb)
        # einsum leaves channels outermost: go to NCHW in the same pass as the bias add.
        out = torch.empty(y.shape, dtype=y.dtype, device=y.device)
    return out.copy_(y) if pb is None else torch.add(y, pb, out=out)


BACKENDS = {
    "spatial": (prepare_spatial, apply_spatial),
    "fft": (prepare_fft, apply_fft),
    "circulant": (prepare_circulant, apply_circulant),
}


def _circulant_depthwise_single(x, form: Form, direction: str, out=None) -> torch.Tensor:
    """Depthwise circulant at batch 1: one (b)addbmm over channels, bias add fused.

    At batch 1 the channels are the only batch axis, and baddbmm adds the folded pe/bias
    inside the GEMM call: half the launches and memory passes of bmm + add, which is
    what the time is at these sizes (a few tens of microseconds per call).
    """
    mat, pb = form["mat"], form["pos_bias"]
    _, c, h, w = x.shape
    xs = x.reshape(c, h, w)
    operands = (mat, xs) if direction == "H" else (xs, mat)
    dst = None
    if out is not None and eager_inference() and out.is_contiguous():
        dst = out.view(c, h, w)
    if pb is None:
        y = torch.bmm(*operands, out=dst) if dst is not None else torch.bmm(*operands)
    elif dst is not None:
        y = torch.baddbmm(pb.expand(c, h, w), *operands, out=dst)
    else:
        y = torch.baddbmm(pb.expand(c, h, w), *operands)
    if dst is not None:
        return out
    y = y.view(1, c, h, w)
    return y if out is None else out.copy_(y)
