"""parc_swin: a Swin block's shifted-window attention becomes ParC on the whole stage map."""

from __future__ import annotations

import pytest
import timm
import torch
from blocks_testkit import context
from mixers_testkit import attention_left, check_sizes, convert_and_reload, kept_weights_equal
from torch import nn

from parc_surgery.blocks import ParCSwinBlock, ReplacementError, build_replacement

NAME = "swin_tiny_patch4_window7_224"
SMALL = dict(img_size=64, embed_dim=32, depths=(1, 1, 2, 1), num_heads=(1, 2, 2, 4), window_size=4)


@pytest.fixture(scope="module")
def swin():
    torch.manual_seed(0)
    return timm.create_model(NAME, num_classes=10, **SMALL).eval()


def _ctx(pe=True, **kw):
    return context("layers.2.blocks.1", torch.zeros(1, 128, 4, 4), pe=pe, **kw)


def test_swap_keeps_everything_but_the_window_attention(swin):
    block = swin.layers[2].blocks[1]
    new = build_replacement("parc_swin", block, _ctx())
    assert isinstance(new, ParCSwinBlock) and new.training == block.training
    kept_weights_equal(block, new, dropped="attn", added="mixer")
    assert attention_left(new) == []
    x = torch.randn(2, 4, 4, 128)
    with torch.no_grad():
        assert new(x).shape == x.shape
        assert new(torch.randn(2, 5, 7, 128)).shape == (2, 5, 7, 128)  # any map size


def test_with_both_mixers_silent_the_blocks_agree(swin):
    block = swin.layers[2].blocks[0]
    new = build_replacement("parc_swin", block, _ctx())
    with torch.no_grad():
        new.mixer.parc2_w.weight.zero_()
        new.mixer.parc2_h.weight.zero_()
        block.attn.proj.weight.zero_()
        block.attn.proj.bias.zero_()
        x = torch.randn(2, 4, 4, 128)
        torch.testing.assert_close(new(x), block(x), rtol=0, atol=0)


def test_pe_goes_before_norm1(swin):
    torch.manual_seed(0)
    block = swin.layers[2].blocks[0]
    new = build_replacement("parc_swin", block, _ctx())
    x = torch.randn(2, 4, 4, 128)
    mixer = new.mixer
    with torch.no_grad():
        z = mixer.add_pe(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        y = x + mixer(new.norm1(z).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        y = y + new.mlp(new.norm2(y))
        torch.testing.assert_close(new(x), y, rtol=1e-5, atol=1e-5)
        # add_pe adds pe_h along H to the first half and pe_w along W to the second.
        added = mixer.add_pe(torch.zeros(1, 128, 4, 4))
        torch.testing.assert_close(added[:, :64], mixer.pe_h.expand(-1, -1, 4, 4))
        torch.testing.assert_close(added[:, 64:], mixer.pe_w.expand(-1, -1, 4, 4))


def test_refuses_from_local_and_other_blocks(swin):
    with pytest.raises(ReplacementError, match="from_local"):
        build_replacement("parc_swin", swin.layers[0].blocks[0], _ctx(init="from_local"))

    class SwinTransformerBlock(nn.Module):  # same name, another family (post-norm, V2...)
        pass

    with pytest.raises(ReplacementError, match="Swin V1 blocks"):
        build_replacement("parc_swin", SwinTransformerBlock(), _ctx())


def test_swin_converts_to_a_pure_convnet_that_reloads_and_runs_anywhere(tmp_path):
    result, model = convert_and_reload(tmp_path, NAME, dict(SMALL, num_classes=10), (64, 64))
    assert len(result.plan.swaps) == 5 and attention_left(model) == []
    assert [s.path for s in result.plan.swaps if s.options.pe] == [
        f"layers.{i}.blocks.0" for i in range(4)
    ]
    # timm's set_input_size still works (the stages call the blocks' set_input_size).
    check_sizes(model, [(96, 96), (64, 128)], 10, lambda m, size: m.set_input_size(img_size=size))
