"""parc_mobilevit (the minimal swap) and the ParC meta-former block as published.

The meta-former tests recompute the official `gcc_ca_mf_block` by hand (PARC.md section 3)
with identity-like kernels, in eval and train mode.
"""

from __future__ import annotations

import pytest
import timm
import torch
from blocks_testkit import block_inputs, check_runs_anywhere, context, param_count, snapshot
from timm.models.mobilevit import MobileVitBlock
from torch import nn

from parc_surgery.blocks import (
    ParCMetaFormerBlock,
    ParCMobileVitBlock,
    ReplacementError,
    build_replacement,
)
from parc_surgery.blocks.mobilevit import PositionEmbedding, build_parc_mobilevit
from parc_surgery.ops import ParC, ParCPair

SIZE = (64, 96)
KEPT = ("conv_kxk", "conv_1x1", "conv_proj", "conv_fusion")


@pytest.fixture(scope="module")
def mobilevit():
    torch.manual_seed(0)
    model = timm.create_model("mobilevit_xxs", pretrained=False).eval()
    return model, block_inputs(model, SIZE)


class _LeafParC(torch.fx.Tracer):
    def is_leaf_module(self, m, qualname):
        leaves = (ParC, ParCPair, PositionEmbedding)
        return isinstance(m, leaves) or super().is_leaf_module(m, qualname)


def _trace(module: nn.Module) -> torch.fx.Graph:
    """FX graph of `module` with the ParC operators as leaves (as the graph pass sees it)."""
    return _LeafParC().trace(module)


def _expected_params(orig: MobileVitBlock, kh: int, kw: int, pe: bool) -> int:
    """Kept convs + per block (2 BNs, 4 depthwise ParCs, 4 pes once, FFN, CA) + final BN."""
    d = orig.conv_1x1.out_channels
    h, rd = d // 2, d // 16
    total = sum(param_count(getattr(orig, name)) for name in KEPT)
    for i, blk in enumerate(orig.transformer):
        f = blk.mlp.fc1.out_features
        spatial = 2 * (h * kh + h * kw) * (2 if pe and i == 0 else 1)
        ffn = 2 * d + d * f + f + f * d + d
        ca = d * rd + 2 * rd + rd * d + 2 * d
        total += 2 * d + spatial + ffn + ca
    return total + 2 * d


@pytest.mark.parametrize("path", ["stages.3.1", "stages.2.1"])
def test_mobilevit_swap(mobilevit, path):
    model, inputs = mobilevit
    orig, x = model.get_submodule(path), inputs[path]
    before = snapshot(orig)
    ctx = context(path, x)
    new = build_replacement("parc_mobilevit", orig, ctx)

    assert type(new) is ParCMobileVitBlock and new.training == orig.training
    assert len(new.parc_blocks) == len(orig.transformer)
    assert all(type(b) is ParCMetaFormerBlock for b in new.parc_blocks)
    with torch.no_grad():
        assert new(x).shape == orig(x).shape

    # A pure ConvNet: no attention, no token MLP, no LayerNorm, no unfold/fold path.
    assert not hasattr(new, "transformer") and not hasattr(new, "patch_size")
    kinds = {type(m).__name__ for m in new.modules()}
    assert not kinds & {"Attention", "Linear", "LayerNorm", "Block"}
    calls = {str(n.target) for n in _trace(new).nodes if n.op in ("call_function", "call_method")}
    assert not {c for c in calls if any(w in c for w in ("interpolate", "reshape", "view"))}

    # Kept convs: same names, equal weights; the original untouched.
    old_sd, new_sd = orig.state_dict(), new.state_dict()
    kept = [k for k in old_sd if k.split(".")[0] in KEPT]
    assert all(torch.equal(old_sd[k], new_sd[k]) for k in kept)
    assert all(torch.equal(before[k], v) for k, v in orig.state_dict().items())

    # pe only in the stack's first block (both of its ParC stages).
    pes = [n for n, _ in new.named_parameters() if n.endswith(".pe")]
    assert pes and all(n.startswith("parc_blocks.0.") for n in pes) and len(pes) == 4

    kh, kw = ctx.feature_size
    assert param_count(new) == _expected_params(orig, kh, kw, pe=True)
    check_runs_anywhere(new, x.shape[1], (5, 7))


def test_mobilevit_without_pe(mobilevit):
    model, inputs = mobilevit
    orig, x = model.stages[4][1], inputs["stages.4.1"]
    new = build_parc_mobilevit(orig, context("stages.4.1", x, pe=False))
    assert not [n for n, _ in new.named_parameters() if n.endswith(".pe")]
    kh, kw = x.shape[-2:]
    assert param_count(new) == _expected_params(orig, kh, kw, pe=False)


def test_mobilevit_refusals(mobilevit):
    model, inputs = mobilevit
    path, x = "stages.3.1", inputs["stages.3.1"]
    with pytest.raises(ReplacementError, match="from_local") as err:
        build_parc_mobilevit(model.get_submodule(path), context(path, x, init="from_local"))
    assert path in str(err.value)
    strided = MobileVitBlock(16, 16, stride=2, transformer_dim=32, transformer_depth=1)
    with pytest.raises(ReplacementError, match="stride 1"):
        build_parc_mobilevit(strided, context("s.0", torch.zeros(1, 16, 8, 8)))
    with pytest.raises(ReplacementError, match="cannot replace a Sequential"):
        build_replacement("parc_mobilevit", model.stages[3], context("stages.3", x))


def _block(dim=4, k=(3, 3), **kw) -> ParCMetaFormerBlock:
    """A meta-former whose channel part adds nothing (fc2 = 0) and whose BNs are identity."""
    blk = ParCMetaFormerBlock(dim, k, ffn_dim=8, impl="spatial", **kw)
    with torch.no_grad():
        blk.ffn.fc2.weight.zero_()
        blk.ffn.fc2.bias.zero_()
        for bn in (blk.norm_h, blk.norm_w):
            bn.eps = 0.0
    return blk


def _shift_kernel(parc: ParC, shift: int) -> None:
    """Kernel with a single 1 at offset `shift`: output row i reads row i + shift (mod L)."""
    with torch.no_grad():
        parc.weight.zero_()
        parc.weight.view(parc.weight.shape[0], -1)[:, shift] = 1.0


def test_metaformer_identity_kernels_give_twice_the_input_plus_both_pes():
    # With identity kernels and BNs, the spatial part returns x + pe1 + pe2, so the block
    # gives 2x + pe1_H + pe2_W on the first half and 2x + pe1_W + pe2_H on the second.
    torch.manual_seed(0)
    blk = _block().eval()
    for parc in (blk.parc1_h, blk.parc1_w, blk.parc2_w, blk.parc2_h):
        _shift_kernel(parc, 0)
    x = torch.randn(2, 4, 3, 3)
    with torch.no_grad():
        y = blk(x)
    p1h, p1w = blk.pe_h.pe, blk.pe_w.pe  # (1, 2, 3, 1), (1, 2, 1, 3)
    p2w, p2h = blk.parc2_w.pe, blk.parc2_h.pe
    torch.testing.assert_close(y[:, :2], 2 * x[:, :2] + p1h + p2w)
    torch.testing.assert_close(y[:, 2:], 2 * x[:, 2:] + p1w + p2h)


def test_metaformer_directions_and_alignment():
    # Shift kernels: parc1_h reads row i+1, parc2_w column j+1 (first half); parc1_w
    # column j+1, parc2_h row i+1 (second half). Without pe and with identity BNs the
    # spatial part is x shifted by (-1, -1) on both halves, in this order of axes.
    torch.manual_seed(0)
    blk = _block(k=(5, 4), use_pe=False).eval()
    for parc in (blk.parc1_h, blk.parc1_w, blk.parc2_w, blk.parc2_h):
        _shift_kernel(parc, 1)
    x = torch.randn(2, 4, 5, 4)
    with torch.no_grad():
        y = blk(x)
    torch.testing.assert_close(y, x + x.roll((-1, -1), dims=(2, 3)))
    assert blk.pe_h is None and blk.parc2_w.pe is None


def test_metaformer_pe_is_added_before_the_norm_in_eval_and_train():
    torch.manual_seed(0)
    blk = _block()
    for parc in (blk.parc1_h, blk.parc1_w, blk.parc2_w, blk.parc2_h):
        _shift_kernel(parc, 0)
    with torch.no_grad():  # a BN that scales by 2 and shifts by 1 in eval
        for bn in (blk.norm_h, blk.norm_w):
            bn.running_mean.fill_(0.5)
            bn.running_var.fill_(0.25)
            bn.bias.fill_(1.0)
    x = torch.randn(3, 4, 3, 3)
    p1h, p2w = blk.pe_h.pe, blk.parc2_w.pe
    with torch.no_grad():
        y = blk.eval()(x)[:, :2]
        # official: BN(x + pe) = 2 (x + pe - 0.5) + 1; BN(x) + pe would be 2 (x - 0.5) + 1 + pe.
        expected = x[:, :2] + 2 * (x[:, :2] + p1h - 0.5) + 1 + p2w
        torch.testing.assert_close(y, expected)
        # train mode: batch statistics of x + pe (biased variance), per channel.
        blk.train()
        blk.ffn.drop.p = 0.0
        blk.norm_h.eps = blk.norm_w.eps = 1e-5
        z = x[:, :2] + p1h
        mean = z.mean(dim=(0, 2, 3), keepdim=True)
        var = (z - mean).square().mean(dim=(0, 2, 3), keepdim=True)
        expected = x[:, :2] + (z - mean) / (var + 1e-5).sqrt() + 1 + p2w
        torch.testing.assert_close(blk(x)[:, :2], expected, rtol=1e-5, atol=1e-5)


def test_metaformer_mid_mix_shuffles_between_the_stages_only_when_asked():
    # Identity kernels, no pe: the stage-1 outputs are the halves a = x[:, :2], b = x[:, 2:].
    # ChannelShuffle(2) of cat(a, b) = (a0, b0, a1, b1): stage 2 then reads (a0, b0), (a1, b1).
    torch.manual_seed(0)
    x = torch.randn(2, 4, 3, 3)
    for mid_mix, mixed in ((False, x), (True, x[:, [0, 2, 1, 3]])):
        blk = _block(use_pe=False, mid_mix=mid_mix).eval()
        for parc in (blk.parc1_h, blk.parc1_w, blk.parc2_w, blk.parc2_h):
            _shift_kernel(parc, 0)
        with torch.no_grad():
            torch.testing.assert_close(blk(x), x + mixed)


def test_metaformer_channel_part_and_its_dropout():
    # x + CA(FFN(x)) with FFN = BN -> fc1 -> hardswish -> fc2 -> Dropout(0.1, train only).
    torch.manual_seed(0)
    blk = ParCMetaFormerBlock(32, (4, 4), ffn_dim=16, use_pe=False, impl="spatial").eval()
    for parc in (blk.parc1_h, blk.parc1_w, blk.parc2_w, blk.parc2_h):
        _shift_kernel(parc, 0)
    for bn in (blk.norm_h, blk.norm_w):
        bn.eps = 0.0
    x = torch.randn(4, 32, 4, 4)
    with torch.no_grad():
        y = 2 * x  # the spatial part with identity kernels and BNs
        f = blk.ffn.fc2(nn.functional.hardswish(blk.ffn.fc1(blk.ffn.norm(y))))
        torch.testing.assert_close(blk(x), y + f * blk.ca.fc(f.mean((2, 3), keepdim=True)))
        assert blk.ffn.drop.p == 0.1
        ffn = blk.ffn.train()
        ffn.norm.eval()  # only the dropout differs between the two modes now
        kept = ffn(y) / blk.ffn.eval()(y)
        dropped = (kept == 0).float().mean().item()
        assert 0.06 < dropped < 0.14
        torch.testing.assert_close(kept[kept != 0], torch.full_like(kept[kept != 0], 1 / 0.9))


def test_metaformer_official_init():
    # pe randn (std 1, not trunc_normal 0.02); kernels as nn.Conv2d: uniform with bound
    # 1 / sqrt(K) (std 1 / sqrt(3K)); no bias by default, randn when asked for.
    torch.manual_seed(0)
    blk = ParCMetaFormerBlock(128, (32, 32), ffn_dim=16)
    for pe in (blk.pe_h.pe, blk.pe_w.pe, blk.parc2_w.pe, blk.parc2_h.pe):
        assert 0.93 < pe.std().item() < 1.07
    for parc in (blk.parc1_h, blk.parc1_w, blk.parc2_w, blk.parc2_h):
        assert parc.bias is None
        assert parc.weight.abs().max() <= 32**-0.5
        assert abs(parc.weight.std().item() - (3 * 32) ** -0.5) < 0.01
    with_bias = ParCMetaFormerBlock(128, (32, 32), ffn_dim=16, bias=True)
    assert 0.8 < with_bias.parc1_h.bias.std().item() < 1.2


def test_mobilevit_options_reach_the_block(mobilevit):
    model, inputs = mobilevit
    path, x = "stages.3.1", inputs["stages.3.1"]
    orig = model.get_submodule(path)
    plain = build_parc_mobilevit(orig, context(path, x))
    assert not any(b.mid_mix for b in plain.parc_blocks)
    assert all(p.bias is None for p in plain.modules() if isinstance(p, ParC))
    mixed = build_parc_mobilevit(orig, context(path, x, mid_mix=True, bias=True))
    assert all(b.mid_mix for b in mixed.parc_blocks)
    assert all(p.bias is not None for p in mixed.modules() if isinstance(p, ParC))
