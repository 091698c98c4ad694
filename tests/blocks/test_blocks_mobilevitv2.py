"""parc_mobilevitv2: MobileViTV2's linear-attention transformer -> ParC on the feature map."""

from __future__ import annotations

import pytest
import timm
import torch
from blocks_testkit import context
from mixers_testkit import attention_left, check_sizes, convert_and_reload

from parc_surgery.blocks import ParCMobileVitV2Block, ReplacementError, build_replacement

NAME = "mobilevitv2_050"


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return timm.create_model(NAME, num_classes=10).eval()


def _ctx(**kw):
    return context("stages.3.1", torch.zeros(1, 96, 4, 4), **kw)


def test_swap_keeps_every_layer_but_the_attention(model):
    block = model.stages[3][1]
    new = build_replacement("parc_mobilevitv2", block, _ctx())
    assert isinstance(new, ParCMobileVitV2Block) and attention_left(new) == []
    old_sd, new_sd = block.state_dict(), new.state_dict()
    kept = {k for k in old_sd if ".attn." not in k}
    assert kept == {k for k in new_sd if ".mixer." not in k}
    assert all(torch.equal(old_sd[k], new_sd[k]) for k in kept)
    # pe only in the first ParC block of the stack.
    assert [layer.mixer.has_pe for layer in new.transformer] == [True] + [False] * (
        len(new.transformer) - 1
    )


@pytest.mark.parametrize("size", [(4, 4), (5, 7)])  # 5x7 is resized to 6x8 as timm does
def test_with_both_mixers_silent_the_blocks_agree(model, size):
    # One-group GroupNorm over C x P x N is the same numbers as over C x H x W, and the MLP
    # is 1x1: without attention the unfolded and the folded block compute the same.
    block = model.stages[3][1]
    new = build_replacement("parc_mobilevitv2", block, _ctx())
    with torch.no_grad():
        for layer, parc in zip(block.transformer, new.transformer, strict=True):
            layer.attn.out_proj.weight.zero_()
            layer.attn.out_proj.bias.zero_()
            parc.mixer.parc2_w.weight.zero_()
            parc.mixer.parc2_h.weight.zero_()
        x = torch.randn(2, block.conv_kxk.conv.in_channels, *size)
        torch.testing.assert_close(new(x), block(x), rtol=1e-5, atol=1e-5)


def test_refuses_from_local(model):
    with pytest.raises(ReplacementError, match="from_local"):
        build_replacement("parc_mobilevitv2", model.stages[3][1], _ctx(init="from_local"))


def test_mobilevitv2_converts_to_a_pure_convnet_that_reloads_and_runs_anywhere(tmp_path):
    result, model = convert_and_reload(tmp_path, NAME, {"num_classes": 10}, (64, 64))
    assert [s.path for s in result.plan.swaps] == ["stages.2.1", "stages.3.1", "stages.4.1"]
    assert attention_left(model) == []
    check_sizes(model, [(96, 96), (64, 112)], 10)
