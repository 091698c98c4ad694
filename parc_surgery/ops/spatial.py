"""The spatial backend (the official circular extension + conv2d) and shared helpers.

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

__all__ = [
    "Form",
    "apply_spatial",
    "axis_of",
    "circular_extend",
    "emit",
    "position_bias",
    "prepare_spatial",
]

Form = dict[str, Any]


def axis_of(direction: str) -> int:
    """The NCHW axis a ParC of `direction` runs along."""
    return 2 if direction == "H" else 3


def circular_extend(x: torch.Tensor, dim: int, length: int | None = None) -> torch.Tensor:
    """x with its first L-1 entries appended along `dim` (the official alignment:
    output row i sees rows i .. i+L-1 (mod L)).

    `length` (= x.shape[dim]) given as a Python int keeps an exported graph free of the
    Shape -> Gather -> Sub chain a traced `x.shape[dim] - 1` records.
    """
    length = x.shape[dim] if length is None else length
    return torch.cat([x, x.narrow(dim, 0, length - 1)], dim=dim)


def position_bias(
    weight: torch.Tensor, bias: torch.Tensor | None, pe: torch.Tensor | None, groups: int
) -> torch.Tensor | None:
    """Bias plus the ParC of pe alone, (O, L) ((O, 1) without pe): conv(x+pe) = conv(x)+conv(pe)."""
    if pe is None:
        return None if bias is None else bias[:, None]  # (O, 1), broadcasts over L
    w = weight.flatten(2)  # (O, Cg, L)
    p = pe.flatten(2)  # (1, C, L)
    out = F.conv1d(circular_extend(p, 2), w, bias, groups=groups)
    return out[0]  # (O, L)


def emit(y: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
    """`y`, or `y` copied into the caller's `out` view."""
    return y if out is None else out.copy_(y)


def prepare_spatial(weight, bias, pe, direction, groups, length) -> Form:
    return {"weight": weight, "bias": bias, "pe": pe, "length": length}


def apply_spatial(x, form: Form, direction: str, groups: int, out=None) -> torch.Tensor:
    if form["pe"] is not None:
        x = x + form["pe"]
    x = circular_extend(x, axis_of(direction), form["length"])
    return emit(F.conv2d(x, form["weight"], form["bias"], groups=groups), out)
