"""The three ways to compute one ParC direction, by name: spatial, fft and circulant.

Each entry is ``(prepare, apply)``: ``prepare(weight, bias, pe, direction, groups,
length)`` builds the kernel form (cached by the module in inference), ``apply(x, form,
direction, groups, out=None)`` runs it. See `spatial` for the contract.
"""

from __future__ import annotations

from .circulant import apply_circulant, prepare_circulant
from .fft import apply_fft, prepare_fft
from .mode import eager_inference
from .spatial import apply_spatial, position_bias, prepare_spatial

__all__ = ["BACKENDS", "eager_inference", "position_bias"]

BACKENDS = {
    "spatial": (prepare_spatial, apply_spatial),
    "fft": (prepare_fft, apply_fft),
    "circulant": (prepare_circulant, apply_circulant),
}
