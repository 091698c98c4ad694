"""Families that get no ParC replacement, and why (one line each, shown by `inspect`).

A family is listed here when no replacement can be faithful: one that keeps the block's
own weights and computes what ParC-Net's blocks compute. `unsupported_reasons(model)`
reads the model's block classes and writes nothing.
"""

from __future__ import annotations

from torch import nn

__all__ = ["UNSUPPORTED", "unsupported_reasons"]

# (module, block class) -> why that family has no ParC replacement.
UNSUPPORTED: dict[tuple[str, str], str] = {
    ("timm.models.levit", "LevitBlock"): (
        "LeViT has no ParC replacement: its attention has no norm to keep (BatchNorm'd "
        "q/k/v projections and learned per-head attention biases over the grid's offsets), "
        "and its stages 2-3 begin with attention that downsamples tokens, so they have no "
        "feature map to place ParC on"
    ),
}


def unsupported_reasons(model: nn.Module) -> list[str]:
    """One line per unsupported family whose blocks `model` contains."""
    classes = {(type(m).__module__, type(m).__name__) for m in model.modules()}
    return [reason for key, reason in UNSUPPORTED.items() if key in classes]
