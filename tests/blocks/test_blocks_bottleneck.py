"""parc_bottleneck: a timm ResNet Bottleneck with conv2 swapped for a dense ParC pair."""

from __future__ import annotations

import pytest
import timm
import torch
from blocks_testkit import block_inputs, check_runs_anywhere, context, param_count, snapshot
from timm.models.resnet import Bottleneck

from parc_surgery.blocks import ReplacementError, build_replacement
from parc_surgery.blocks.bottleneck import build_parc_bottleneck
from parc_surgery.errors import RulesError
from parc_surgery.ops import ParCPair

SIZE = (64, 96)  # non-square, so kH != kW shows a swapped orientation


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    model = timm.create_model("resnet26", pretrained=False).eval()
    return model, block_inputs(model, SIZE)


def _dense_pair_params(c: int, kh: int, kw: int, pe: bool = True) -> int:
    """Two dense halves (C//2 and C - C//2 channels), each weight + bias (+ pe)."""
    total = 0
    for ch, k in ((c // 2, kh), (c - c // 2, kw)):
        total += ch * ch * k + ch + (ch * k if pe else 0)
    return total


def test_bottleneck_swap(resnet):
    model, inputs = resnet
    path = "layer3.1"
    orig = model.get_submodule(path)
    x = inputs[path]
    before = snapshot(orig)
    ctx = context(path, x)
    new = build_replacement("parc_bottleneck", orig, ctx)

    # Still a timm Bottleneck, only conv2 differs, and the mode is kept.
    assert type(new) is Bottleneck and isinstance(new.conv2, ParCPair)
    assert new.training == orig.training
    assert new.conv2.parc_h.bias is not None and new.conv2.parc_h.pe is not None
    assert (new.conv2.parc_h.kernel_size, new.conv2.parc_w.kernel_size) == ctx.feature_size
    with torch.no_grad():
        assert new(x).shape == orig(x).shape

    old_sd, new_sd = orig.state_dict(), new.state_dict()
    kept = [k for k in old_sd if not k.startswith("conv2.")]
    assert set(kept) == {k for k in new_sd if not k.startswith("conv2.")}
    for k in kept:
        assert torch.equal(old_sd[k], new_sd[k]), k

    # The original is untouched and shares no tensor with the new block.
    assert type(orig.conv2) is torch.nn.Conv2d
    assert new.bn2.weight.data_ptr() != orig.bn2.weight.data_ptr()
    after = orig.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)

    c = orig.conv2.out_channels
    kh, kw = ctx.feature_size
    expected = param_count(orig) - c * c * 9 + _dense_pair_params(c, kh, kw)
    assert param_count(new) == expected

    check_runs_anywhere(new, x.shape[1], (5, 3))


def test_bottleneck_without_pe_and_kernel_override(resnet):
    model, inputs = resnet
    path = "layer2.1"
    orig = model.get_submodule(path)
    ctx = context(path, inputs[path], pe=False, options={"kernel_size": [6, 4]})
    new = build_parc_bottleneck(orig, ctx)
    assert new.conv2.parc_h.pe is None and new.conv2.parc_w.pe is None
    c = orig.conv2.out_channels
    assert param_count(new) == param_count(orig) - c * c * 9 + _dense_pair_params(c, 6, 4, False)


def test_bottleneck_downsample_without_stride_is_converted(resnet):
    # layer1.0 changes channels in its shortcut but keeps the resolution.
    model, inputs = resnet
    new = build_parc_bottleneck(model.layer1[0], context("layer1.0", inputs["layer1.0"]))
    assert isinstance(new.conv2, ParCPair)


@pytest.mark.parametrize("path", ["layer3.0", "layer4.0"])
def test_bottleneck_stride2_refused(resnet, path):
    model, inputs = resnet
    with pytest.raises(ReplacementError, match="stride 1") as err:
        build_parc_bottleneck(model.get_submodule(path), context(path, inputs[path]))
    assert path in str(err.value)
    assert isinstance(err.value, ValueError) and isinstance(err.value, RulesError)


def test_bottleneck_refuses_other_modules(resnet):
    model, inputs = resnet
    with pytest.raises(ReplacementError, match="cannot replace a Sequential") as err:
        build_replacement("parc_bottleneck", model.layer1, context("layer1", inputs["layer1"]))
    assert "layer1" in str(err.value)
    with pytest.raises(ReplacementError, match="cannot replace a Conv2d"):
        build_parc_bottleneck(model.conv1, context("conv1", inputs["conv1"]))


def test_grouped_bottleneck_keeps_its_groups_in_each_half():
    # ResNeXt: conv2 with 8 groups of 4 -> each half has 8 groups of 2, so the pair has
    # fewer weights than the 3x3 conv for any kernel up to 18.
    block = Bottleneck(64, 16, cardinality=8, base_width=16).eval()
    c = block.conv2.out_channels
    new = build_parc_bottleneck(block, context("blk", torch.zeros(1, 64, 6, 5)))
    assert new.conv2.parc_h.groups == 8 and new.conv2.parc_w.groups == 8
    per_group = c // 8
    halves = sum(c // 2 * (per_group // 2) * k + c // 2 + c // 2 * k for k in (6, 5))
    assert param_count(new) == param_count(block) - c * per_group * 9 + halves
    with torch.no_grad():
        assert new(torch.randn(1, 64, 6, 5)).shape == (1, 64, 6, 5)


def test_bottleneck_from_local_has_zero_bias_and_pe(resnet):
    # conv2 has no bias, so the pair's (official) bias starts at zero, pe too.
    model, inputs = resnet
    ctx = context("layer2.1", inputs["layer2.1"], init="from_local")
    new = build_parc_bottleneck(model.layer2[1], ctx)
    for parc in (new.conv2.parc_h, new.conv2.parc_w):
        assert parc.bias.abs().max() == 0 and parc.pe.abs().max() == 0
        assert parc.weight.abs().max() > 0


def test_bottleneck_bias_option(resnet):
    # Official ParC-ResNet convs have a bias; `bias: false` in a rule drops it.
    model, inputs = resnet
    path, x = "layer3.1", inputs["layer3.1"]
    new = build_replacement(
        "parc_bottleneck", model.get_submodule(path), context(path, x, bias=False)
    )
    assert new.conv2.parc_h.bias is None and new.conv2.parc_w.bias is None
    c = new.conv2.channels
    kh, kw = x.shape[-2:]
    with_bias = _dense_pair_params(c, kh, kw)
    assert param_count(new.conv2) == with_bias - c
