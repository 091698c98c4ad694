"""parc_inverted_residual: MobileNetV2/EfficientNet blocks with conv_dw -> depthwise ParC pair."""

from __future__ import annotations

from functools import partial

import pytest
import timm
import torch
from blocks_testkit import block_inputs, check_runs_anywhere, context, param_count, snapshot
from timm.models._efficientnet_blocks import InvertedResidual, SqueezeExcite

from parc_surgery.blocks import ReplacementError, build_replacement
from parc_surgery.blocks.inverted_residual import build_parc_inverted_residual
from parc_surgery.ops import ParCPair

SIZE = (64, 96)


@pytest.fixture(scope="module")
def mobilenet():
    torch.manual_seed(0)
    model = timm.create_model("mobilenetv2_050", pretrained=False).eval()
    return model, block_inputs(model, SIZE)


def _dw_pair_params(c: int, kh: int, kw: int, pe: bool, bias: bool) -> int:
    """Depthwise halves: per channel one kernel (+ one pe row) (+ one bias)."""
    total = 0
    for ch, k in ((c // 2, kh), (c - c // 2, kw)):
        total += ch * k + (ch * k if pe else 0) + (ch if bias else 0)
    return total


def _check_swap(orig, x, ctx, bias=True):
    before = snapshot(orig)
    new = build_replacement("parc_inverted_residual", orig, ctx)
    assert type(new) is type(orig) and isinstance(new.conv_dw, ParCPair)
    assert new.conv_dw.parc_h.groups == new.conv_dw.parc_h.in_chs  # depthwise
    # The official ParC-MobileNetV2 convs have a bias (even before a BN); a rule can drop it.
    assert (new.conv_dw.parc_h.bias is not None) == bias == (new.conv_dw.parc_w.bias is not None)
    with torch.no_grad():
        assert new(x).shape == orig(x).shape

    old_sd, new_sd = orig.state_dict(), new.state_dict()
    kept = [k for k in old_sd if not k.startswith("conv_dw.")]
    assert set(kept) == {k for k in new_sd if not k.startswith("conv_dw.")}
    assert all(torch.equal(old_sd[k], new_sd[k]) for k in kept)
    after = orig.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert type(orig.conv_dw) is torch.nn.Conv2d

    c = orig.conv_dw.out_channels
    kh, kw = ctx.feature_size
    old_dw = c * 9 + (c if orig.conv_dw.bias is not None else 0)
    expected = param_count(orig) - old_dw + _dw_pair_params(c, kh, kw, ctx.pe, bias)
    assert param_count(new) == expected
    return new


@pytest.mark.parametrize("path", ["blocks.3.2", "blocks.0.0"])
def test_inverted_residual_swap(mobilenet, path):
    model, inputs = mobilenet
    orig, x = model.get_submodule(path), inputs[path]
    new = _check_swap(orig, x, context(path, x, pe=path == "blocks.3.2"))
    check_runs_anywhere(new, x.shape[1], (5, 3))


def test_inverted_residual_bias_option(mobilenet):
    model, inputs = mobilenet
    path = "blocks.3.2"
    orig, x = model.get_submodule(path), inputs[path]
    _check_swap(orig, x, context(path, x, bias=False), bias=False)
    _check_swap(orig, x, context(path, x, bias=True), bias=True)


def test_inverted_residual_paper_init_is_the_official_one(mobilenet):
    # Official ParC-MobileNetV2: kaiming_normal(fan_out) -> std sqrt(2 / (C/2 * K)), bias 0.
    torch.manual_seed(0)
    block = InvertedResidual(64, 64, exp_ratio=6).eval()  # blocks.3.2 of mobilenetv2_100
    x = torch.zeros(1, 64, 14, 14)
    pair = build_replacement("parc_inverted_residual", block, context("b", x)).conv_dw
    for parc in (pair.parc_h, pair.parc_w):
        assert abs(parc.weight.std().item() - (2 / (192 * 14)) ** 0.5) < 0.0015  # 0.0273
        assert parc.bias.abs().max() == 0
        assert 0.015 < parc.pe.std().item() < 0.025  # trunc_normal(std=0.02)


def test_inverted_residual_keeps_se():
    torch.manual_seed(0)
    block = InvertedResidual(
        16, 16, exp_ratio=3, se_layer=partial(SqueezeExcite, rd_ratio=0.25)
    ).eval()
    x = torch.randn(2, 16, 7, 5)
    new = _check_swap(block, x, context("blk", x))
    assert isinstance(new.se, SqueezeExcite)


@pytest.mark.parametrize("path", ["blocks.1.0", "blocks.3.0"])
def test_inverted_residual_stride2_refused(mobilenet, path):
    model, inputs = mobilenet
    with pytest.raises(ReplacementError, match="stride 1") as err:
        build_parc_inverted_residual(model.get_submodule(path), context(path, inputs[path]))
    assert path in str(err.value)


def test_inverted_residual_refuses_mixed_conv():
    block = InvertedResidual(16, 16, dw_kernel_size=[3, 5], exp_ratio=2)
    with pytest.raises(ReplacementError, match="MixedConv2d") as err:
        build_parc_inverted_residual(block, context("mix.0", torch.zeros(1, 16, 8, 8)))
    assert "mix.0" in str(err.value)


def test_inverted_residual_refuses_other_blocks(mobilenet):
    model, inputs = mobilenet
    with pytest.raises(ReplacementError, match="cannot replace a Conv2d"):
        build_replacement("parc_inverted_residual", model.conv_stem, context("x", inputs["bn1"]))
