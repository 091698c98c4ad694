"""parc_efficientformer: the attention of EfficientFormer's MetaBlock1d -> ParC on the grid."""

from __future__ import annotations

import pytest
import timm
import torch
from blocks_testkit import context
from mixers_testkit import attention_left, check_sizes, convert_and_reload, kept_weights_equal

from parc_surgery.blocks import ParCViTBlock, TokenGridError, build_replacement, set_token_grid

NAME = "efficientformer_l1"
SMALL = dict(depths=(1, 1, 1, 2), embed_dims=(16, 16, 32, 64), num_classes=10)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return timm.create_model(NAME, **SMALL).eval()


def test_swap_keeps_everything_but_the_attention(model):
    block = model.stages[3].blocks[2]
    assert type(block).__name__ == "MetaBlock1d"
    ctx = context("stages.3.blocks.2", torch.zeros(1, 64, 7, 7))
    new = build_replacement("parc_efficientformer", block, ctx)
    assert isinstance(new, ParCViTBlock) and new.prefix_tokens == 0
    kept_weights_equal(block, new, dropped="token_mixer", added="mixer")
    with torch.no_grad():
        new.mixer.parc2_w.weight.zero_()
        new.mixer.parc2_h.weight.zero_()
        block.token_mixer.proj.weight.zero_()
        block.token_mixer.proj.bias.zero_()
        x = torch.randn(2, 49, 64)
        torch.testing.assert_close(new(x), block(x), rtol=0, atol=0)


def test_efficientformer_converts_to_a_pure_convnet_that_runs_anywhere(tmp_path):
    # timm's EfficientFormer runs at 224 only (its attention bias table is 7x7); once the
    # attention is ParC, the model runs at other sizes too.
    result, model = convert_and_reload(tmp_path, NAME, SMALL, (224, 224))
    assert [s.path for s in result.plan.swaps] == ["stages.3.blocks.2"]
    assert attention_left(model) == []
    check_sizes(model, [(256, 256), (160, 160)], 10)  # 8x8 and 5x5 token grids
    with pytest.raises(TokenGridError):
        model(torch.randn(1, 3, 224, 288))  # 7x9 tokens: ask for the grid
    set_token_grid(model, (7, 9))
    check_sizes(model, [(224, 288)], 10)
