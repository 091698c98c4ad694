"""Grouped 3x3 convs (ResNeXt, RegNet) -> grouped ParC pairs with the conv's groups per half."""

from __future__ import annotations

import pytest
import timm
import torch
from blocks_testkit import context, param_count, snapshot
from mixers_testkit import check_sizes, convert_and_reload
from timm.models.resnet import Bottleneck
from torch import nn

from parc_surgery.blocks import ReplacementError, build_replacement
from parc_surgery.blocks.local_conv import dense_pair_for_conv
from parc_surgery.ops import ParCPair


def _grouped_conv(c: int, groups: int) -> nn.Conv2d:
    return nn.Conv2d(c, c, 3, padding=1, groups=groups, bias=False)


@pytest.mark.parametrize("k", [7, 14, 18])
def test_grouped_pair_never_outgrows_the_conv_up_to_kernel_18(k):
    conv = _grouped_conv(64, 8)  # 8 groups of 8
    pair = dense_pair_for_conv(conv, context("c", torch.zeros(1, 64, k, k), pe=False), "conv2")
    assert pair.parc_h.groups == pair.parc_w.groups == 8  # 8 groups of 4 in each half
    weights = pair.parc_h.weight.numel() + pair.parc_w.weight.numel()
    assert weights == 64 * 4 * k <= conv.weight.numel() == 64 * 8 * 9


def test_odd_group_width_is_refused():
    conv = _grouped_conv(24, 8)  # groups of 3 cannot halve
    with pytest.raises(ReplacementError, match="group width must be even"):
        dense_pair_for_conv(conv, context("blk", torch.zeros(1, 24, 5, 5)), "conv2")


def _axis_input(b: int, c: int, h: int, w: int) -> torch.Tensor:
    x = torch.randn(b, c, h, w)
    x[:, : c // 2] = x[:, : c // 2, :, :1]
    x[:, c // 2 :] = x[:, c // 2 :, :1, :]
    return x


def test_from_local_keeps_the_taps_inside_each_new_group():
    # Each half's group g' is half of one of the conv's groups. With the taps between the
    # two halves of every group zeroed, circular padding and inputs constant along the
    # other axis, the grouped pair started from the conv must equal it exactly.
    torch.manual_seed(0)
    c, groups = 16, 4  # groups of 4 -> groups of 2 in each half
    conv = nn.Conv2d(c, c, 3, padding=1, groups=groups, padding_mode="circular")
    width = c // groups
    with torch.no_grad():
        for o in range(c):
            # input j of o's group belongs to the same new group iff it sits in o's pair.
            for j in range(width):
                if (o % width) // (width // 2) != j // (width // 2):
                    conv.weight[o, j] = 0
    x = _axis_input(2, c, 7, 6)
    pair = dense_pair_for_conv(conv, context("c", x, init="from_local"), "conv2")
    with torch.no_grad():
        torch.testing.assert_close(pair(x), conv(x), rtol=1e-5, atol=1e-5)


def test_resnext_bottleneck_becomes_a_grouped_pair():
    block = Bottleneck(256, 64, cardinality=32, base_width=4).eval()  # conv2: 128 ch, g32
    new = build_replacement("parc_bottleneck", block, context("b", torch.zeros(1, 256, 7, 7)))
    assert isinstance(new.conv2, ParCPair) and new.conv2.parc_h.groups == 32
    assert param_count(new) < param_count(block)


@pytest.fixture(scope="module")
def regnet():
    torch.manual_seed(0)
    return timm.create_model("regnetx_002", num_classes=10).eval()


def test_regnet_block_swaps_only_the_conv_inside_conv2(regnet):
    block = regnet.s3.b2
    before = snapshot(block)
    ctx = context("s3.b2", torch.zeros(1, 152, 4, 4))
    new = build_replacement("parc_regnet", block, ctx)
    assert type(new) is type(block) and isinstance(new.conv2.conv, ParCPair)
    groups = block.conv2.conv.groups
    assert new.conv2.conv.parc_h.groups == new.conv2.conv.parc_w.groups == groups
    old_sd, new_sd = block.state_dict(), new.state_dict()
    kept = [k for k in old_sd if not k.startswith("conv2.conv.")]
    assert all(torch.equal(old_sd[k], new_sd[k]) for k in kept)
    assert all(torch.equal(before[k], v) for k, v in block.state_dict().items())
    with torch.no_grad():
        assert new(torch.randn(1, 152, 4, 4)).shape == (1, 152, 4, 4)


def test_regnet_and_resnet_bottlenecks_are_told_apart(regnet):
    ctx = context("s3.b2", torch.zeros(1, 152, 4, 4))
    with pytest.raises(ReplacementError, match="parc_regnet") as err:
        build_replacement("parc_bottleneck", regnet.s3.b2, ctx)
    assert "RegNet Bottleneck" in str(err.value)
    resnet_block = Bottleneck(64, 16)
    with pytest.raises(ReplacementError, match="parc_bottleneck"):
        build_replacement("parc_regnet", resnet_block, ctx)
    with pytest.raises(ReplacementError, match="stride 1"):
        build_replacement("parc_regnet", regnet.s3.b1, ctx)  # the stride-2 first block


def test_regnet_converts_reloads_and_runs_anywhere(tmp_path):
    result, model = convert_and_reload(tmp_path, "regnetx_002", {"num_classes": 10}, (64, 64))
    assert {s.replacement for s in result.plan.swaps} == {"parc_regnet"}
    assert result.plan.params_total_after < result.plan.params_total_before
    check_sizes(model, [(96, 96), (64, 96)], 10)
