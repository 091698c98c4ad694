"""parc_convnext: a ConvNeXt block with its 7x7 depthwise conv -> depthwise ParC pair + bias."""

from __future__ import annotations

import pytest
import timm
import torch
from blocks_testkit import block_inputs, check_runs_anywhere, context, param_count, snapshot
from timm.models.convnext import ConvNeXtBlock

from parc_surgery.blocks import ReplacementError, build_replacement
from parc_surgery.blocks.convnext import build_parc_convnext
from parc_surgery.ops import ParCPair

SIZE = (64, 96)


@pytest.fixture(scope="module")
def convnext():
    torch.manual_seed(0)
    model = timm.create_model("convnext_atto", pretrained=False).eval()
    return model, block_inputs(model, SIZE)


def _dw_pair_params(c: int, kh: int, kw: int, pe: bool = True) -> int:
    """Depthwise halves with bias: per channel one kernel, one bias (and one pe row)."""
    return sum(ch * k + ch + (ch * k if pe else 0) for ch, k in ((c // 2, kh), (c - c // 2, kw)))


def _check_swap(orig: ConvNeXtBlock, x: torch.Tensor, ctx) -> ConvNeXtBlock:
    before = snapshot(orig)
    new = build_replacement("parc_convnext", orig, ctx)
    assert type(new) is ConvNeXtBlock and isinstance(new.conv_dw, ParCPair)
    assert new.conv_dw.parc_h.bias is not None and new.conv_dw.parc_w.bias is not None
    with torch.no_grad():
        assert new(x).shape == orig(x).shape

    old_sd, new_sd = orig.state_dict(), new.state_dict()
    kept = [k for k in old_sd if not k.startswith("conv_dw.")]
    assert "gamma" in kept and any(k.startswith("mlp.") for k in kept)
    assert set(kept) == {k for k in new_sd if not k.startswith("conv_dw.")}
    assert all(torch.equal(old_sd[k], new_sd[k]) for k in kept)
    assert all(torch.equal(before[k], v) for k, v in orig.state_dict().items())
    assert type(orig.conv_dw) is torch.nn.Conv2d

    c = orig.conv_dw.out_channels
    kh, kw = ctx.feature_size
    expected = param_count(orig) - (c * 49 + c) + _dw_pair_params(c, kh, kw, ctx.pe)
    assert param_count(new) == expected
    return new


def test_convnext_swap(convnext):
    model, inputs = convnext
    path = "stages.2.blocks.4"
    x = inputs[path]
    new = _check_swap(model.get_submodule(path), x, context(path, x))
    check_runs_anywhere(new, x.shape[1], (3, 5))


def test_convnext_conv_mlp_block():
    # The NCHW layout (conv MLP, LayerNorm2d) converts the same way.
    torch.manual_seed(0)
    block = ConvNeXtBlock(16, conv_mlp=True, ls_init_value=0.5).eval()
    x = torch.randn(2, 16, 6, 4)
    new = _check_swap(block, x, context("blk", x, pe=False))
    check_runs_anywhere(new, 16, (4, 7))


def test_convnext_strided_block_refused():
    block = ConvNeXtBlock(16, 32, stride=2)
    with pytest.raises(ReplacementError, match="stride 1") as err:
        build_parc_convnext(block, context("stages.1.blocks.0", torch.zeros(1, 16, 8, 8)))
    assert "stages.1.blocks.0" in str(err.value)


def test_convnext_refuses_other_modules(convnext):
    model, inputs = convnext
    path = "stages.2.blocks.4.conv_dw"
    with pytest.raises(ReplacementError, match="cannot replace a Conv2d") as err:
        build_parc_convnext(model.get_submodule(path), context(path, inputs[path]))
    assert path in str(err.value)


def test_convnext_bias_option(convnext):
    model, inputs = convnext
    path = "stages.2.blocks.4"
    x = inputs[path]
    new = build_replacement(
        "parc_convnext", model.get_submodule(path), context(path, x, bias=False)
    )
    assert new.conv_dw.parc_h.bias is None and new.conv_dw.parc_w.bias is None
