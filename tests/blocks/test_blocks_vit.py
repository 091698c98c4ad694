"""parc_vit: a timm ViT / DeiT block's attention becomes ParC on the patch-token grid."""

from __future__ import annotations

import pytest
import timm
import torch
from blocks_testkit import context
from mixers_testkit import attention_left, check_sizes, convert_and_reload, kept_weights_equal
from torch import nn

from parc_surgery.blocks import (
    ParCViTBlock,
    ReplacementError,
    TokenGridError,
    build_replacement,
    set_token_grid,
)
from parc_surgery.blocks.vit import token_grid
from parc_surgery.errors import UsageError

TINY = dict(img_size=64, patch_size=8, depth=2, embed_dim=32, num_heads=2)  # 8x8 grid


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", reg_tokens=1, **TINY).eval()


def _ctx(pe=True, prefix=2, **kw):
    return context("blocks.0", torch.zeros(1, 32, 8, 8), pe=pe, prefix_tokens=prefix, **kw)


def test_swap_keeps_everything_but_the_attention(vit):
    block = vit.blocks[0]
    new = build_replacement("parc_vit", block, _ctx())
    assert isinstance(new, ParCViTBlock) and new.training == block.training
    assert (new.grid_size, new.prefix_tokens) == ((8, 8), 2)
    kept_weights_equal(block, new, dropped="attn", added="mixer")
    assert attention_left(new) == [] and type(block.attn).__name__ == "Attention"
    x = torch.randn(2, 2 + 64, 32)
    with torch.no_grad():
        assert new(x).shape == x.shape


def _zero_mixer(block: ParCViTBlock) -> None:
    with torch.no_grad():
        block.mixer.parc2_w.weight.zero_()
        block.mixer.parc2_h.weight.zero_()


def test_with_both_mixers_silent_the_blocks_agree(vit):
    # Attention projected to zero and ParC with zero kernels leave norm2 / mlp / ls2:
    # the converted block must compute exactly what the original does then.
    block = vit.blocks[1]
    new = build_replacement("parc_vit", block, _ctx())
    _zero_mixer(new)
    with torch.no_grad():
        block.attn.proj.weight.zero_()
        block.attn.proj.bias.zero_()
        x = torch.randn(2, 66, 32)
        torch.testing.assert_close(new(x), block(x), rtol=0, atol=0)


def test_spatial_part_follows_parc_net(vit):
    # PARC.md section 3: pe before the norm on the patch grid; x1 runs H then W, x2 W
    # then H; prefix tokens get the mean of the mixer output over the grid.
    torch.manual_seed(1)
    new = build_replacement("parc_vit", vit.blocks[0], _ctx())
    with torch.no_grad():
        new.mlp.fc2.weight.zero_()  # leave the spatial path alone in the output
        new.mlp.fc2.bias.zero_()
        x = torch.randn(2, 66, 32)
        mixer = new.mixer
        grid = x[:, 2:].transpose(1, 2).reshape(2, 32, 8, 8)
        grid = grid + torch.cat(
            [mixer.pe_h.expand(-1, -1, 8, 8), mixer.pe_w.expand(-1, -1, 8, 8)], 1
        )
        normed = new.norm1(torch.cat([x[:, :2], grid.flatten(2).transpose(1, 2)], 1))[:, 2:]
        n = normed.transpose(1, 2).reshape(2, 32, 8, 8)
        y1 = mixer.parc2_w(mixer.parc1.parc_h(n[:, :16]))
        y2 = mixer.parc2_h(mixer.parc1.parc_w(n[:, 16:]))
        y = torch.cat([y1, y2], 1).flatten(2).transpose(1, 2)
        y = torch.cat([y.mean(1, keepdim=True).expand(-1, 2, -1), y], 1)
        torch.testing.assert_close(new(x), x + new.ls1(y), rtol=1e-5, atol=1e-5)
    assert mixer.parc2_w.pe is not None and mixer.parc1.parc_h.pe is None


def test_without_pe_the_mixer_has_none(vit):
    new = build_replacement("parc_vit", vit.blocks[1], _ctx(pe=False))
    assert not new.mixer.has_pe and new.mixer.parc2_h.pe is None


def test_refusals(vit):
    with pytest.raises(ReplacementError, match="from_local"):
        build_replacement("parc_vit", vit.blocks[0], _ctx(init="from_local"))

    class Block(nn.Module):  # a "Block" from another family (BEiT, EVA...)
        pass

    with pytest.raises(ReplacementError, match="VisionTransformer blocks"):
        build_replacement("parc_vit", Block(), _ctx())
    new = build_replacement("parc_vit", vit.blocks[0], _ctx())
    with pytest.raises(ValueError, match="no attention"):
        new(torch.randn(1, 66, 32), attn_mask=torch.ones(66, 66))


@pytest.mark.parametrize(
    ("cells", "built", "grid"),
    [
        (196, (14, 14), (14, 14)),
        (144, (14, 14), (12, 12)),
        (96, (4, 6), (8, 12)),
        (24, (4, 6), (4, 6)),
    ],
)
def test_token_grid_scales_the_conversion_grid(cells, built, grid):
    assert token_grid(cells, built) == grid


def test_token_grid_refuses_to_guess_and_takes_an_explicit_grid():
    # 14x18 and 18x14 (and 12x21...) all hold 252 tokens.
    with pytest.raises(TokenGridError, match="set_token_grid") as err:
        token_grid(252, (14, 14))
    assert isinstance(err.value, UsageError) and isinstance(err.value, ValueError)
    assert token_grid(252, (14, 14), override=(14, 18)) == (14, 18)
    with pytest.raises(TokenGridError, match="14x18"):
        token_grid(196, (14, 14), override=(14, 18))


def test_vit_converts_to_a_pure_convnet_that_reloads_and_runs_anywhere(tmp_path):
    args = dict(TINY, dynamic_img_size=True, num_classes=10)
    result, model = convert_and_reload(tmp_path, "vit_tiny_patch16_224", args, (64, 64))
    assert [s.path for s in result.plan.swaps] == ["blocks.0", "blocks.1"]
    assert attention_left(model) == []
    assert result.plan.swaps[0].prefix_tokens == 1
    check_sizes(model, [(96, 96), (48, 48)], 10)  # 12x12 and 6x6 grids, found alone
    with pytest.raises(TokenGridError):
        model(torch.randn(1, 3, 64, 96))  # 8x12: not the 8x8 aspect ratio
    assert set_token_grid(model, (8, 12)) == 2
    check_sizes(model, [(64, 96)], 10)
    set_token_grid(model, None)


def test_deit_resized_with_timms_set_input_size(tmp_path):
    # A ViT built for one size: timm's set_input_size resamples the position embedding.
    args = dict(TINY, num_classes=10)
    _, model = convert_and_reload(tmp_path, "deit_tiny_distilled_patch16_224", args, (64, 64))
    check_sizes(model, [(80, 80), (32, 32)], 10, lambda m, size: m.set_input_size(img_size=size))
