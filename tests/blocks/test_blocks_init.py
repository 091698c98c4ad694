"""init="from_local": the ParC pair starts from the local kernel it replaces."""

from __future__ import annotations

import pytest
import torch
from blocks_testkit import context, rel_err, smooth_input
from timm.models._efficientnet_blocks import InvertedResidual
from timm.models.convnext import ConvNeXtBlock
from timm.models.resnet import Bottleneck
from torch import nn

from parc_surgery.blocks import build_replacement
from parc_surgery.blocks.init import circular_from_local
from parc_surgery.blocks.local_conv import dense_pair_for_conv
from parc_surgery.options import SwapOptions


def _taps(k: int) -> torch.Tensor:
    """(1, 1, k, k) kernel whose row r sums to r + 1 (so every column sums to (k + 1) / 2)."""
    return torch.arange(1.0, k + 1).view(1, 1, k, 1).expand(1, 1, k, k) / k


def test_circular_offsets():
    w = _taps(3)  # rows sum to 1, 2, 3 at offsets -1, 0, +1
    assert circular_from_local(w, "H", 5).flatten().tolist() == [2, 3, 0, 0, 1]
    assert circular_from_local(w, "H", 5, dilation=2).flatten().tolist() == [2, 0, 3, 1, 0]
    # 'W' sums over rows: every column sums to (1 + 2 + 3) / 3 = 2.
    assert circular_from_local(w, "W", 4).flatten().tolist() == [2, 2, 0, 2]
    # A kernel longer than the map wraps and its taps add up: offsets -3..3 mod 4.
    w7 = _taps(7) * 7 / torch.arange(1.0, 8).view(1, 1, 7, 1)  # every row sums to 7
    assert circular_from_local(w7, "H", 4).flatten().tolist() == [7, 14, 14, 14]


def _axis_input(b: int, c: int, h: int, w: int) -> torch.Tensor:
    """First half of channels varies only along H, the rest only along W."""
    x = torch.randn(b, c, h, w)
    x[:, : c // 2] = x[:, : c // 2, :, :1]
    x[:, c // 2 :] = x[:, c // 2 :, :1, :]
    return x


@pytest.mark.parametrize("groups, dilation", [("dw", 1), ("dw", 2), ("dense", 1)])
def test_from_local_is_exact_where_the_conv_is_one_dimensional(groups, dilation):
    # With circular padding and inputs constant along the other axis, summing the local
    # kernel over that axis loses nothing: the pair must equal the conv exactly.
    torch.manual_seed(0)
    c = 8
    g = c if groups == "dw" else 1
    conv = nn.Conv2d(c, c, 3, padding=dilation, dilation=dilation, groups=g,
                     padding_mode="circular")  # fmt: skip
    if g == 1:  # the halves of a dense pair see only their own channels
        with torch.no_grad():
            conv.weight[: c // 2, c // 2 :] = 0
            conv.weight[c // 2 :, : c // 2] = 0
    x = _axis_input(2, c, 7, 6)
    ctx = context("c", x, init="from_local")
    if g == 1:  # the dense pair parc_bottleneck builds for conv2
        pair = dense_pair_for_conv(conv, ctx, "conv2")
    else:
        pair = build_replacement("parc_dwconv", conv, ctx)
    with torch.no_grad():
        torch.testing.assert_close(pair(x), conv(x), rtol=1e-5, atol=1e-5)
        assert all(p.pe.abs().max() == 0 for p in (pair.parc_h, pair.parc_w))
        torch.testing.assert_close(torch.cat((pair.parc_h.bias, pair.parc_w.bias)), conv.bias)


def _closeness(make_block, conv_attr: str, name: str, c: int, size=(16, 16)) -> dict:
    """Relative error of the new layer vs the replaced conv on smooth inputs, per init."""
    torch.manual_seed(0)
    block = make_block().eval()
    old = getattr(block, conv_attr)
    x = smooth_input(4, c, *size)
    out = {}
    for init in ("paper", "from_local"):
        torch.manual_seed(1)
        new = build_replacement(name, block, context("blk", x, init=init))
        with torch.no_grad():
            out[init] = rel_err(getattr(new, conv_attr)(x), old(x))
    return out


def test_from_local_starts_close_on_smooth_inputs():
    # Measured (seed 0, random local kernels, paper -> from_local relative error): IR 3x3
    # 1.45 -> 0.40, ConvNeXt 7x7 at 28x28 1.48 -> 0.53, Bottleneck dense 3x3 1.46 -> 0.76.
    # Depthwise (MobileNetV2 conv_dw, ConvNeXt conv_dw): all of the local kernel survives
    # the sum, only the other axis' slope and the zero-padded border are lost.
    ir = _closeness(lambda: InvertedResidual(32, 32, exp_ratio=2), "conv_dw",
                    "parc_inverted_residual", 64)  # fmt: skip
    assert ir["paper"] > 1.0 and ir["from_local"] < 0.45
    # A 7x7 window spans a quarter of a 28-pixel period, so its error is larger.
    cnx = _closeness(lambda: ConvNeXtBlock(64), "conv_dw", "parc_convnext", 64, (28, 28))
    assert cnx["paper"] > 1.0 and cnx["from_local"] < 0.65
    # Dense (ResNet conv2): each half also drops the other half's input channels.
    res = _closeness(lambda: Bottleneck(256, 64), "conv2", "parc_bottleneck", 64)
    assert res["paper"] > 1.0 and res["from_local"] < 0.6 * res["paper"]


def test_unknown_init_refused_by_the_options_type():
    # The typed options are the only way to a builder, so an unknown init never reaches one.
    with pytest.raises(ValueError, match="paper"):
        SwapOptions(init="zeros")


@pytest.mark.parametrize(
    ("make_block", "name", "attr", "official_std", "bias_zero"),
    [
        # ParC-ResNet50 layer3: conv2 256 -> halves of 128, K 14: kaiming_normal(fan_out,
        # relu) = sqrt(2 / (128 * 14)) = 0.0334; bias as nn.Conv2d leaves it.
        (lambda: Bottleneck(1024, 256), "parc_bottleneck", "conv2", 0.033, False),
        # ParC-MobileNetV2 blocks.3.2: 384 hidden -> 192 per half: sqrt(2 / (192 * 14)).
        (
            lambda: InvertedResidual(64, 64, exp_ratio=6),
            "parc_inverted_residual",
            "conv_dw",
            0.027,
            True,
        ),  # fmt: skip
        # ParC-ConvNeXt-XT stage 3: trunc_normal(std=0.02), bias zero.
        (lambda: ConvNeXtBlock(192), "parc_convnext", "conv_dw", 0.020, True),
    ],
    ids=["resnet", "mobilenetv2", "convnext"],
)
def test_paper_init_is_the_familys_official_scheme(make_block, name, attr, official_std, bias_zero):
    torch.manual_seed(0)
    block = make_block().eval()
    x = torch.zeros(1, getattr(block, attr).in_channels, 14, 14)
    pair = getattr(build_replacement(name, block, context("b", x)), attr)
    for parc in (pair.parc_h, pair.parc_w):
        assert abs(parc.weight.std().item() - official_std) < 0.0015
        bound = parc.weight[0].numel() ** -0.5  # nn.Conv2d's bias rule: U(-1/sqrt(fan_in), ..)
        if bias_zero:
            assert parc.bias.abs().max() == 0
        else:
            assert 0 < parc.bias.abs().max() <= bound
        assert 0.017 < parc.pe.std().item() < 0.023  # trunc_normal(std=0.02)


def test_paper_init_of_the_generic_depthwise_replacement():
    # Documented choice: the MobileNetV2 scheme, kaiming_normal(fan_out), bias zero.
    torch.manual_seed(0)
    conv = nn.Conv2d(256, 256, 3, padding=1, groups=256)
    pair = build_replacement("parc_dwconv", conv, context("c", torch.zeros(1, 256, 28, 28)))
    for parc in (pair.parc_h, pair.parc_w):
        assert abs(parc.weight.std().item() - (2 / (128 * 28)) ** 0.5) < 0.002
        assert parc.bias.abs().max() == 0


def test_from_local_ignores_the_paper_scheme():
    # from_local is the same whatever family the pair is built for: the local taps, no noise.
    torch.manual_seed(0)
    block = InvertedResidual(16, 16, exp_ratio=2).eval()
    x = torch.zeros(1, 32, 6, 6)
    pair = build_replacement(
        "parc_inverted_residual", block, context("b", x, init="from_local")
    ).conv_dw
    expected = circular_from_local(block.conv_dw.weight[:16], "H", 6)
    torch.testing.assert_close(pair.parc_h.weight.flatten(1), expected.flatten(1))
    assert pair.parc_h.bias.abs().max() == 0 and pair.parc_h.pe.abs().max() == 0
