"""Initialising new ParC convs: the family's official scheme ("paper") or "from_local".

paper: every official ParC ConvNet re-initialises its convs, ParC convs included, with
the family's own scheme (PARC.md section 1); `PAPER_INITS` names them and
`init_pair_paper` applies one. The generic depthwise replacement (`parc_dwconv`) uses the
MobileNetV2 scheme: its convs live in the efficientnet / mobilenet families, which timm
itself initialises the same way (normal with std sqrt(2 / fan_out)).

from_local: a local kxk conv applied to a smooth input sees almost the same value at every column of
its window, so along H it acts like the kernel summed over its width. That summed kernel,
placed at the matching circular offsets, is the global kernel that starts closest to the
old layer; all other taps start at zero, so the new layer first behaves locally and can
learn to look further.
"""

from __future__ import annotations

import torch
from torch import nn

from parc_surgery.options import INIT_MODES

__all__ = [
    "INIT_MODES",
    "PAPER_INITS",
    "circular_from_local",
    "init_pair_from_local",
    "init_pair_paper",
]

# The official scheme per family, applied to each ParC of a pair:
#   weight init, whether the bias is zeroed (else kept as nn.Conv2d's rule leaves it).
# pe keeps ParC's own trunc_normal(std=0.02), as in every official ConvNet.
PAPER_INITS: dict[str, tuple[str, bool]] = {
    # torchvision ResNet: kaiming_normal_(fan_out, relu) on every Conv2d; biases untouched.
    "resnet": ("kaiming_normal_fan_out", False),
    # torchvision MobileNetV2: kaiming_normal_(fan_out), bias zero.
    "mobilenetv2": ("kaiming_normal_fan_out", True),
    # ConvNeXt: trunc_normal_(std=0.02), bias zero.
    "convnext": ("trunc_normal_02", True),
}


@torch.no_grad()
def init_pair_paper(pair: nn.Module, family: str) -> None:
    """Re-initialise both ParCs of `pair` (a ParCPair) with `family`'s official scheme."""
    weight_init, zero_bias = PAPER_INITS[family]
    for parc in (pair.parc_h, pair.parc_w):
        if weight_init == "kaiming_normal_fan_out":
            # fan_out = out channels x kernel length, as for the official Conv2d weight.
            nn.init.kaiming_normal_(parc.weight, mode="fan_out", nonlinearity="relu")
        else:
            nn.init.trunc_normal_(parc.weight, std=0.02)
        if zero_bias and parc.bias is not None:
            parc.bias.zero_()


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
