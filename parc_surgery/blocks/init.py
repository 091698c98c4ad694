"""Initialising a ParC pair from the local conv it replaces ("from_local").

A local kxk conv applied to a smooth input sees almost the same value at every column of
its window, so along H it acts like the kernel summed over its width. That summed kernel,
placed at the matching circular offsets, is the global kernel that starts closest to the
old layer; all other taps start at zero, so the new layer first behaves locally and can
learn to look further.
"""

from __future__ import annotations

import torch
from torch import nn

from parc_surgery.options import INIT_MODES

__all__ = ["INIT_MODES", "circular_from_local", "init_pair_from_local"]


def circular_from_local(
    w_local: torch.Tensor, direction: str, length: int, dilation: int = 1
) -> torch.Tensor:
    """(O, I, kh, kw) local weight -> (O, I, length) global kernel along `direction`.

    ParC's output row i reads rows i .. i+K-1 (mod H), so kernel position k reads the
    relative offset k, and the local tap at offset d (centred, times the dilation) lands
    at k = d mod K. Taps that wrap onto the same position (local kernel longer than the
    feature map) add up, as the circular conv would make them.
    """
    axis_sum = 3 if direction == "H" else 2  # sum over the other axis
    taps = w_local.sum(dim=axis_sum)  # (O, I, k) along `direction`
    k = taps.shape[-1]
    offsets = (torch.arange(k, device=taps.device) - k // 2) * dilation
    positions = torch.remainder(offsets, length)
    out = taps.new_zeros(*taps.shape[:-1], length)
    return out.index_add_(-1, positions, taps)


def _half_weights(conv: nn.Conv2d, c1: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The local weights the 'H' half (outputs :c1) and the 'W' half (outputs c1:) keep."""
    w = conv.weight
    if conv.groups == 1:
        # Dense: each half is a C/2 -> C/2 conv, so it keeps only its own input channels.
        return w[:c1, :c1], w[c1:, c1:]
    # Grouped / depthwise: groups never cross the half boundary, the weight splits by output.
    return w[:c1], w[c1:]


@torch.no_grad()
def init_pair_from_local(pair: nn.Module, conv: nn.Conv2d) -> None:
    """Set `pair` (a ParCPair) to start from `conv`: global kernels, pe zero, bias copied."""
    c1 = pair.parc_h.weight.shape[0]
    halves = zip((pair.parc_h, pair.parc_w), ("H", "W"), _half_weights(conv, c1), strict=True)
    for parc, direction, w_local in halves:
        length = parc.weight.shape[2] if direction == "H" else parc.weight.shape[3]
        dilation = conv.dilation[0] if direction == "H" else conv.dilation[1]
        kernel = circular_from_local(w_local.float(), direction, length, dilation)
        parc.weight.copy_(kernel.reshape(parc.weight.shape))
        if parc.pe is not None:
            parc.pe.zero_()
        if parc.bias is not None:
            if conv.bias is None:
                parc.bias.zero_()
            else:
                lo = 0 if direction == "H" else c1
                parc.bias.copy_(conv.bias[lo : lo + parc.bias.shape[0]])
