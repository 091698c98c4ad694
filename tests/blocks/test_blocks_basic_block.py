"""parc_bottleneck on a ResNet BasicBlock (ResNet-18/34): conv2 -> dense ParC pair."""

from __future__ import annotations

import pytest
import timm
import torch
from blocks_testkit import block_inputs, check_runs_anywhere, context, param_count
from mixers_testkit import check_sizes, convert_and_reload
from timm.models.resnet import BasicBlock

from parc_surgery.blocks import ReplacementError, build_replacement
from parc_surgery.ops import ParCPair

SIZE = (64, 96)


@pytest.fixture(scope="module")
def resnet18():
    torch.manual_seed(0)
    model = timm.create_model("resnet18", num_classes=10).eval()
    return model, block_inputs(model, SIZE)


def test_basic_block_swap(resnet18):
    model, inputs = resnet18
    orig = model.layer3[1]
    x = inputs["layer3.1"]
    ctx = context("layer3.1", x)
    new = build_replacement("parc_bottleneck", orig, ctx)
    assert type(new) is BasicBlock and isinstance(new.conv2, ParCPair)
    assert type(orig.conv2) is torch.nn.Conv2d  # the original is untouched
    old_sd, new_sd = orig.state_dict(), new.state_dict()
    kept = [k for k in old_sd if not k.startswith("conv2.")]
    assert kept == [k for k in new_sd if not k.startswith("conv2.")]
    assert all(torch.equal(old_sd[k], new_sd[k]) for k in kept)
    c, (kh, kw) = orig.conv2.out_channels, ctx.feature_size
    pair = sum(c // 2 * c // 2 * k + c // 2 + c // 2 * k for k in (kh, kw))  # dense, bias, pe
    assert param_count(new) == param_count(orig) - c * c * 9 + pair
    with torch.no_grad():
        assert new(x).shape == orig(x).shape
    check_runs_anywhere(new, c, (5, 3))


def test_stride_2_basic_block_is_refused(resnet18):
    model, inputs = resnet18
    with pytest.raises(ReplacementError, match="BasicBlock has stride 2"):
        build_replacement(
            "parc_bottleneck", model.layer3[0], context("layer3.0", inputs["layer3.0"])
        )


def test_resnet18_converts_reloads_and_runs_anywhere(tmp_path):
    result, model = convert_and_reload(tmp_path, "resnet18", {"num_classes": 10}, (64, 64))
    assert [s.path for s in result.plan.swaps] == ["layer3.1", "layer4.1"]
    assert result.plan.rules_source == "shipped:resnet"
    check_sizes(model, [(96, 96), (64, 128)], 10)
