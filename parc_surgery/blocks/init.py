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


def _half_weight(conv: nn.Conv2d, lo: int, parc: nn.Module) -> torch.Tensor:
    """The local weight a half (outputs lo .. lo + n of the conv) keeps, in its own layout.

    A half's group g' reads its own input channels; each of those lies in the conv's group
    of the output, so the kept taps are those between the half's groups' channels (a
    dense half keeps only its own C/2 inputs, a depthwise one every tap).
    """
    n, per_group = parc.weight.shape[:2]
    out = torch.arange(lo, lo + n, device=conv.weight.device)
    # Absolute input channels of each output's group in the half, then their positions
    # inside the conv's group of that output.
    first_in = lo + (out - lo) // per_group * per_group
    inputs = first_in[:, None] + torch.arange(per_group, device=out.device)
    conv_per_group = conv.in_channels // conv.groups
    local = inputs - (out // (conv.out_channels // conv.groups) * conv_per_group)[:, None]
    return conv.weight[out[:, None], local]


@torch.no_grad()
def init_pair_from_local(pair: nn.Module, conv: nn.Conv2d) -> None:
    """Set `pair` (a ParCPair) to start from `conv`: global kernels, pe zero, bias copied."""
    c1 = pair.parc_h.weight.shape[0]
    weights = (_half_weight(conv, 0, pair.parc_h), _half_weight(conv, c1, pair.parc_w))
    halves = zip((pair.parc_h, pair.parc_w), ("H", "W"), weights, strict=True)
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
