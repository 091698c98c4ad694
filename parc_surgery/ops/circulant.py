"""The circulant backend: each (out, in) kernel as an L x L circulant matrix, run as GEMM.

y_i = sum_m A[i, m] x_m with A[i, m] = w[(m - i) mod L]. On CPUs BLAS runs these small
GEMMs several times faster per MAC than oneDNN runs a depthwise conv, so circulant is
what `auto` picks for most depthwise shapes up to L = 112.

Depthwise in eager inference (`depthwise_eager`): one batched GEMM per sample over the
channels, written straight into the output (no einsum transposes), then one pass that
adds the folded position bias. Two measured traps shape it:

- ATen multiplies a batch of matrices with a plain triple loop when rows x inner x cols
  < 400 (L <= 7 for square maps): 480 7x7 products took 133 us, 9x7x7 ones 26 us. The
  form pads the matrix with zero rows ('H') or columns ('W') past that bound; the
  extra outputs are dropped when the bias is added, so the result is exact.
- Adding a bias that broadcasts along a short axis runs TensorIterator's inner loop L
  elements at a time: at L = 14 that add cost almost as much as the GEMM (15 us for
  192 channels). For L <= FULL_BIAS_MAX_LENGTH the form keeps the folded position bias
  expanded to the full (C, L, L) block, which the add reads as one contiguous run (4 us).
  `baddbmm` is slower still (35 us there, even with a contiguous bias).
"""

from __future__ import annotations

import torch

from .mode import eager_inference
from .spatial import Form, position_bias

__all__ = [
    "FULL_BIAS_MAX_LENGTH",
    "SMALL_GEMM_MACS",
    "apply_circulant",
    "circulant_matrices",
    "depthwise_eager",
    "prepare_circulant",
]

# ATen's bmm falls back to an unvectorised loop below this many MACs per matrix (CPU).
SMALL_GEMM_MACS = 400
# Up to this length the eager depthwise path adds a full-size (C, L, L) position bias.
FULL_BIAS_MAX_LENGTH = 28


def circulant_matrices(w: torch.Tensor) -> torch.Tensor:
    """A[..., i, m] = w[..., (m - i) mod L] for w (..., L): each kernel's circulant matrix.

    Eager, traced and exported: a gather with a constant index (the ONNX exporter folds
    it into an initializer). Under torch.compile: windows of [w, w] in reverse order,
    built from w alone, because inductor's freezing folds a graph of parameters into a
    constant but not one that starts from a tensor constructor (the index's arange):
    that left the gather in every compiled inference call (0.43 against 0.16 ms for a
    MobileNetV2 pair). (The windows' `unfold` does not export to ONNX correctly.)
    """
    length = w.shape[-1]
    compiler = getattr(torch, "compiler", None)
    if compiler is not None and compiler.is_compiling():
        windows = torch.cat([w, w], dim=-1).unfold(-1, length, 1)  # row j: w[(j + m) % L]
        return torch.flip(windows[..., 1:, :], dims=(-2,))  # row i: window L - i
    ar = torch.arange(length, device=w.device)
    return w[..., (ar[None, :] - ar[:, None]) % length]


def _padded_rows(length: int, device: torch.device) -> int:
    """Rows (or cols) for the depthwise GEMM: past ATen's small-matrix loop on CPU."""
    if device.type != "cpu" or length**3 >= SMALL_GEMM_MACS:
        return length
    return -(-SMALL_GEMM_MACS // (length * length))


def prepare_circulant(weight, bias, pe, direction, groups, length) -> Form:
    w = weight.flatten(2)  # (O, Cg, L)
    out_chs, cg, _ = w.shape
    og = out_chs // groups
    a = circulant_matrices(w)  # (O, Cg, L_i, L_m)
    a = a.reshape(groups, og, cg, length, length)
    if direction == "H":  # y (Og*L_i) = A (Og*L_i, Cg*L_m) @ x (Cg*L_m, W)
        mat = a.permute(0, 1, 3, 2, 4).reshape(groups, og * length, cg * length)
    else:  # y (H, Og*L_j) = x (H, Cg*L_m) @ A^T (Cg*L_m, Og*L_j)
        mat = a.permute(0, 2, 4, 1, 3).reshape(groups, cg * length, og * length)
    mat = mat.contiguous()  # reshape may return a strided view, which BLAS runs slowly
    pb = position_bias(weight, bias, pe, groups)
    if pb is not None:
        pb = pb.view(out_chs, -1, 1) if direction == "H" else pb.view(out_chs, 1, -1)
    form = {"mat": mat, "pos_bias": pb, "cg": cg, "og": og}
    if cg == 1 and og == 1:  # what depthwise_eager reads
        rows = _padded_rows(length, mat.device)
        pad = (0, 0, 0, rows - length) if direction == "H" else (0, rows - length)
        form["fast"] = torch.nn.functional.pad(mat, pad) if rows != length else mat
    return form


def _fast_bias(form: Form, shape: torch.Size, length: int) -> torch.Tensor | None:
    """The position bias to add: broadcast, or expanded to (C, H, W) for short L (memoised
    in the form per map shape, so a cached form pays the expansion once)."""
    pb = form["pos_bias"]
    if pb is None or length > FULL_BIAS_MAX_LENGTH:
        return pb
    if form.get("full_bias_shape") != shape:
        form["full_bias"] = pb.expand(shape).contiguous()
        form["full_bias_shape"] = shape
    return form["full_bias"]


def apply_circulant(x, form: Form, direction: str, groups: int, out=None) -> torch.Tensor:
    mat, cg, og = form["mat"], form["cg"], form["og"]
    if cg == 1 and og == 1 and eager_inference():
        return depthwise_eager(x, form, direction, out)
    b, c, h, w = x.shape
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
    if pb is not None:
        y = y + pb
    y = y.contiguous()
    return y if out is None else out.copy_(y)


def depthwise_eager(x, form: Form, direction: str, out=None) -> torch.Tensor:
    """Depthwise circulant in eager inference: a bmm per sample, then the bias pass.

    Each sample's (C, H, W) block is a batch of C matrices as it lies in memory, so
    bmm reads it in place and writes into `out` (or a fresh NCHW tensor) directly; a
    padded form writes into a scratch tensor whose extra rows the bias pass drops.
    """
    mat = form["fast"]
    b, c, h, w = x.shape
    length = h if direction == "H" else w
    pb = _fast_bias(form, x.shape[1:], length)
    y = torch.empty(x.shape, dtype=x.dtype, device=x.device) if out is None else out
    rows = mat.shape[1] if direction == "H" else mat.shape[2]
    dst = y
    if rows != length:
        shape = (b, c, rows, w) if direction == "H" else (b, c, h, rows)
        dst = torch.empty(shape, dtype=x.dtype, device=x.device)
    for i in range(b):
        operands = (mat, x[i]) if direction == "H" else (x[i], mat)
        target = dst[i]
        if target.is_contiguous():
            torch.bmm(*operands, out=target)
        else:
            target.copy_(torch.bmm(*operands))
    if rows != length:
        dst = dst[:, :, :length] if direction == "H" else dst[..., :length]
        return y.copy_(dst) if pb is None else torch.add(dst, pb, out=y)
    return y if pb is None else y.add_(pb)
