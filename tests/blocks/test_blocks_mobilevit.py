"""parc_mobilevit: a timm MobileVitBlock -> ParCMobileVitBlock (no attention, no unfold)."""

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
from parc_surgery.blocks.mobilevit import build_parc_mobilevit, channel_shuffle
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
        return isinstance(m, (ParC, ParCPair)) or super().is_leaf_module(m, qualname)


def _trace(module: nn.Module) -> torch.fx.Graph:
    """FX graph of `module` with the ParC operators as leaves (as the graph pass sees it)."""
    return _LeafParC().trace(module)


def _expected_params(orig: MobileVitBlock, kh: int, kw: int, pe: bool) -> int:
    """Kept convs + per block (BN, 2 depthwise ParC pairs, pe once, FFN, CA) + final BN."""
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


def test_metaformer_spatial_part_follows_the_spec():
    """Recompute the ParC meta-former step by step from PARC.md section 3."""
    torch.manual_seed(0)
    blk = ParCMetaFormerBlock(8, (5, 3), ffn_dim=12, use_pe=True, impl="spatial").eval()
    for m in blk.modules():  # non-trivial BN statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 8, 5, 3)
    with torch.no_grad():
        xn = blk.norm(x)
        x1, x2 = blk.parc1.parc_h(xn[:, :4]), blk.parc1.parc_w(xn[:, 4:])
        mixed = torch.stack((x1, x2), dim=2).flatten(1, 2)  # shuffle, groups=2
        assert torch.equal(mixed, channel_shuffle(torch.cat((x1, x2), 1), 2))
        y = x + torch.cat((blk.parc2_w(mixed[:, :4]), blk.parc2_h(mixed[:, 4:])), dim=1)
        f = blk.ffn.fc2(nn.functional.hardswish(blk.ffn.fc1(blk.ffn.norm(y))))
        expected = y + f * blk.ca.fc(f.mean((2, 3), keepdim=True))
        torch.testing.assert_close(blk(x), expected)
