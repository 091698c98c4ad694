"""A dense ParC pair for a 3x3 conv that changes the channel count (C_in -> C_out).

DenseNet's DenseLayer (conv2: 4k -> k growth channels) and Inception's 3x3 branch convs
(448 -> 384) are not C -> C, so `ParCPair` (which keeps the channel count) cannot stand
in for them. `ParCWidthPair` is the same plug-in with both widths: the 'H' ParC maps the
first C_in // 2 input channels to the first C_out // 2 outputs, the 'W' ParC the rest to
the rest (odd counts: the 'W' half gets the extra channel, as in ParCPair); each half is
dense (groups=1), with a bias and pe as the dense pair. Its weights (C_out/2 * C_in/2 * K
per half) never outgrow the 3x3 conv's (C_out * C_in * 9) while K <= 18.

init paper: kaiming_normal(fan_out, relu) as ParC-ResNet's; from_local: each half starts
from the taps of the conv between its own inputs and outputs (blocks.init).
"""

from __future__ import annotations

import torch
from torch import nn

from parc_surgery.ops import ParC

from .init import circular_from_local, init_pair_paper
from .local_conv import global_kernel_size
from .registry import ReplacementContext, ReplacementError

__all__ = ["ParCWidthPair", "width_pair_for_conv"]


class ParCWidthPair(nn.Module):
    """'H' ParC on channels[:C_in//2] -> [:C_out//2], 'W' ParC on the rest -> the rest."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: tuple[int, int],
        use_pe: bool = True,
        bias: bool = True,
        impl: str = "auto",
    ):
        super().__init__()
        if min(in_chs, out_chs) < 2:
            raise ValueError(f"ParCWidthPair needs at least 2 channels, got {in_chs} -> {out_chs}")
        kh, kw = kernel_size
        self.in_chs, self.out_chs = in_chs, out_chs
        self.split = (in_chs // 2, in_chs - in_chs // 2)
        self.out_split = (out_chs // 2, out_chs - out_chs // 2)
        self.parc_h = ParC(self.split[0], self.out_split[0], "H", kh, 1, use_pe, bias, impl)
        self.parc_w = ParC(self.split[1], self.out_split[1], "W", kw, 1, use_pe, bias, impl)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_h, x_w = x.split(self.split, dim=1)
        return torch.cat([self.parc_h(x_h), self.parc_w(x_w)], dim=1)

    def extra_repr(self) -> str:
        return f"{self.in_chs} -> {self.out_chs}"


@torch.no_grad()
def _init_from_local(pair: ParCWidthPair, conv: nn.Conv2d) -> None:
    (i1, _), (o1, _) = pair.split, pair.out_split
    halves = ((pair.parc_h, "H", 0, 0), (pair.parc_w, "W", i1, o1))
    for parc, direction, i_lo, o_lo in halves:
        n, m = parc.weight.shape[:2]
        local = conv.weight[o_lo : o_lo + n, i_lo : i_lo + m].float()
        length = parc.weight.shape[2] if direction == "H" else parc.weight.shape[3]
        dilation = conv.dilation[0] if direction == "H" else conv.dilation[1]
        kernel = circular_from_local(local, direction, length, dilation)
        parc.weight.copy_(kernel.reshape(parc.weight.shape))
        if parc.pe is not None:
            parc.pe.zero_()
        if parc.bias is not None:
            if conv.bias is None:
                parc.bias.zero_()
            else:
                parc.bias.copy_(conv.bias[o_lo : o_lo + n])


def width_pair_for_conv(conv: nn.Conv2d, ctx: ReplacementContext, attr: str) -> ParCWidthPair:
    """The ParCWidthPair for a dense stride-1 conv `conv` (checked by check_local_conv)."""
    if conv.groups != 1:
        raise ReplacementError(
            f"{attr} maps {conv.in_channels} -> {conv.out_channels} channels in "
            f"{conv.groups} groups; a ParC pair that changes the width is dense only",
            where=ctx.path,
            hint="leave this conv local (narrow the rule)",
        )
    bias = True if ctx.options.bias is None else ctx.options.bias
    pair = ParCWidthPair(
        conv.in_channels, conv.out_channels, global_kernel_size(ctx), ctx.pe, bias, ctx.impl
    )
    pair.to(device=conv.weight.device, dtype=conv.weight.dtype)
    if ctx.init == "from_local":
        _init_from_local(pair, conv)
    else:
        init_pair_paper(pair, "resnet")
    return pair
