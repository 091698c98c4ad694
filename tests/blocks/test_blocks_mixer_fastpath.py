"""The ParC mixer's inference fast path computes what the step-by-step path computes."""

from __future__ import annotations

import pytest
import torch
from timm.models.swin_transformer import SwinTransformerBlock
from timm.models.vision_transformer import Block

from parc_surgery.blocks.parc_mixer import ParCSpatialMixer
from parc_surgery.blocks.swin import ParCSwinBlock
from parc_surgery.blocks.vit import ParCViTBlock
from parc_surgery.ops import forced_impl

SIDES = [(10, 10), (7, 7), (12, 9), (5, 11)]  # GEMM, conv, and one of each per axis


def _mixer(dim, size, use_pe=True):
    torch.manual_seed(0)
    return ParCSpatialMixer(dim, size, use_pe=use_pe).double().eval()


@pytest.mark.parametrize("size", SIDES)
@pytest.mark.parametrize("use_pe", [True, False])
def test_fast_mixer_equals_reference_nchw_and_nhwc(size, use_pe):
    m = _mixer(11, size, use_pe)
    x = torch.randn(2, 11, *size, dtype=torch.float64)
    with torch.no_grad():
        assert m.fast_path_applies()
        ref = m.forward_reference(x)
        assert (m(x) - ref).abs().max() <= 1e-10
        assert (m.add_pe(x) - m.add_pe_reference(x)).abs().max() <= 1e-10
        xh = x.permute(0, 2, 3, 1).contiguous()
        assert (m.mix_nhwc(xh) - ref.permute(0, 2, 3, 1)).abs().max() <= 1e-10
        want = m.add_pe_reference(x).permute(0, 2, 3, 1)
        assert (m.add_pe_nhwc(xh) - want).abs().max() <= 1e-10


def test_fast_mixer_at_another_size_and_after_a_weight_change():
    m = _mixer(8, (10, 10))
    x = torch.randn(1, 8, 14, 6, dtype=torch.float64)  # kernels resampled
    with torch.no_grad():
        assert (m(x) - m.forward_reference(x)).abs().max() <= 1e-10
        m.parc2_w.pe.add_(1.0)  # the cached bias must be rebuilt
        m.parc1.parc_h.weight.mul_(2.0)
        assert (m(x) - m.forward_reference(x)).abs().max() <= 1e-10


def test_fast_path_is_off_for_train_grad_hooks_and_forced_backends():
    m = _mixer(8, (10, 10))
    with torch.no_grad():
        assert m.fast_path_applies()
        with forced_impl("spatial"):
            assert not m.fast_path_applies()
        m.parc2_h.register_forward_hook(lambda *a: None)
        assert not m.fast_path_applies()
    m = _mixer(8, (10, 10))
    assert not m.fast_path_applies()  # grad enabled
    with torch.no_grad():
        assert not m.train().fast_path_applies()
        m.eval().parc2_w.set_impl("fft")
        assert not m.fast_path_applies()


@pytest.mark.parametrize("size", [(10, 10), (7, 7)])
@pytest.mark.parametrize("prefix", [0, 1, 2])
def test_fast_vit_block_equals_reference(size, prefix):
    torch.manual_seed(0)
    block = ParCViTBlock(Block(16, 2), _mixer(16, size), size, prefix).double().eval()
    x = torch.randn(2, prefix + size[0] * size[1], 16, dtype=torch.float64)
    with torch.no_grad():
        assert (block(x) - block.forward_reference(x)).abs().max() <= 1e-10


@pytest.mark.parametrize("size", [(14, 14), (7, 7)])
def test_fast_swin_block_equals_reference(size):
    torch.manual_seed(0)
    swin = SwinTransformerBlock(16, size, num_heads=2, window_size=7)
    block = ParCSwinBlock(swin, _mixer(16, size)).double().eval()
    x = torch.randn(2, *size, 16, dtype=torch.float64)
    with torch.no_grad():
        assert (block(x) - block.forward_reference(x)).abs().max() <= 1e-10
