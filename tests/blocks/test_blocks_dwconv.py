"""parc_dwconv: the op-level replacement of any stride-1 depthwise conv."""

from __future__ import annotations

import pytest
import torch
from blocks_testkit import check_runs_anywhere, context, param_count, snapshot
from timm.layers import Conv2dSame, create_conv2d
from torch import nn

from parc_surgery.blocks import ReplacementError, build_replacement, get_replacement
from parc_surgery.blocks.dwconv import build_parc_dwconv
from parc_surgery.ops import ParCPair


@pytest.mark.parametrize(
    "conv",
    [
        nn.Conv2d(10, 10, 3, padding=1, groups=10),
        nn.Conv2d(9, 9, 5, padding=2, groups=9, bias=False),  # odd channel count
        nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=8),
        create_conv2d(8, 8, 7, depthwise=True),
        Conv2dSame(8, 8, 3, groups=8),
    ],
    ids=["3x3", "5x5-nobias-odd", "dilated", "create_conv2d", "Conv2dSame"],
)
def test_dwconv_swap(conv):
    assert get_replacement("parc_dwconv").level == "op"
    torch.manual_seed(0)
    x = torch.randn(2, conv.in_channels, 6, 9)
    before = snapshot(conv)
    new = build_replacement("parc_dwconv", conv, context("features.3.conv", x))
    assert isinstance(new, ParCPair)
    has_bias = conv.bias is not None
    assert (new.parc_h.bias is not None) == has_bias == (new.parc_w.bias is not None)
    with torch.no_grad():
        assert new(x).shape == conv(x).shape
    assert all(torch.equal(before[k], v) for k, v in conv.state_dict().items())

    c = conv.in_channels
    pair = sum(ch * k * 2 + (ch if has_bias else 0) for ch, k in ((c // 2, 6), (c - c // 2, 9)))
    assert param_count(new) == pair
    check_runs_anywhere(new, c, (4, 11))


@pytest.mark.parametrize(
    "conv, match",
    [
        (nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8), "stride 1"),
        (nn.Conv2d(8, 8, 3, padding=1), "not depthwise"),
        (nn.Conv2d(8, 16, 3, padding=1, groups=8), "not depthwise"),
        (nn.Conv2d(8, 8, 4, padding=2, groups=8), "even kernel"),
        (nn.Conv2d(8, 8, 3, padding=0, groups=8), "padding"),
    ],
    ids=["stride2", "dense", "multiplier", "even", "valid-padding"],
)
def test_dwconv_refused(conv, match):
    with pytest.raises(ReplacementError, match=match) as err:
        build_parc_dwconv(conv, context("features.3.conv", torch.zeros(1, 8, 6, 6)))
    assert "features.3.conv" in str(err.value)


def test_dwconv_refuses_non_conv():
    with pytest.raises(ReplacementError, match="cannot replace a Linear"):
        build_replacement("parc_dwconv", nn.Linear(4, 4), context("head", torch.zeros(1, 4, 2, 2)))


@pytest.mark.parametrize("conv_bias", [True, False])
@pytest.mark.parametrize("rule_bias", [True, False])
def test_dwconv_rule_bias_overrides_the_replaced_conv(conv_bias, rule_bias):
    conv = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=conv_bias)
    x = torch.zeros(1, 8, 6, 6)
    new = build_replacement("parc_dwconv", conv, context("c", x, bias=rule_bias))
    assert (new.parc_h.bias is not None) == rule_bias == (new.parc_w.bias is not None)
