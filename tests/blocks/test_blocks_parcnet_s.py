"""parcnet_s_block: a timm MobileVitBlock -> the published ParC-Net-S block (PARC.md section 3)."""

from __future__ import annotations

import pytest
import timm
import torch
from blocks_testkit import block_inputs, check_runs_anywhere, context, param_count
from torch import nn

from parc_surgery.blocks import ParCMobileVitBlock, ReplacementError, build_replacement
from parc_surgery.ops import ParC

SIZE = (64, 64)  # small on purpose: ParC-Net-S kernels do not follow the input size


@pytest.fixture(scope="module")
def mobilevit_s():
    torch.manual_seed(0)
    model = timm.create_model("mobilevit_s", pretrained=False).eval()
    return model, block_inputs(model, SIZE)


def _published_params(c: int, n: int, k: int) -> int:
    """One ParC-Net-S block of input C (official outer_frame_v1 + gcc_ca_mf_block)."""
    d, f, h, rd = 2 * c, 4 * c, c, 2 * c // 16
    local = d * 9 + 2 * d + d * d  # grouped 3x3 (1 input channel per output) + BN, 1x1
    meta = 2 * d + 4 * h * k + (2 * d + d * f + f + f * d + d) + (d * rd + 2 * rd + rd * d + 2 * d)
    pe = 4 * h * k  # first block only
    proj = d + 2 * c  # grouped 1x1, 2 inputs per output, + BN
    fusion = 2 * c * c * 9 + 2 * c
    return local + n * meta + pe + 2 * d + proj + fusion


@pytest.mark.parametrize(
    ("stage", "c", "n", "k"), [(2, 96, 2, 32), (3, 128, 4, 16), (4, 160, 3, 8)]
)
def test_parcnet_s_block_is_the_published_one(mobilevit_s, stage, c, n, k):
    model, inputs = mobilevit_s
    path = f"stages.{stage}.1"
    orig, x = model.get_submodule(path), inputs[path]
    new = build_replacement("parcnet_s_block", orig, context(path, x, stage=stage))
    assert type(new) is ParCMobileVitBlock and new.training == orig.training
    d = 2 * c
    local = new.conv_kxk.conv
    assert (local.in_channels, local.out_channels, local.groups, local.kernel_size) == (
        c,
        d,
        c,
        (3, 3),
    )
    assert isinstance(new.conv_kxk.bn.act, nn.SiLU)
    assert new.conv_1x1.weight.shape == (d, d, 1, 1) and new.conv_1x1.bias is None
    proj = new.conv_proj.conv
    assert (proj.in_channels, proj.out_channels, proj.groups) == (d, c, c)
    # The fusion conv is timm's, with its weights (import/export swap its input halves).
    assert torch.equal(new.conv_fusion.conv.weight, orig.conv_fusion.conv.weight)
    assert len(new.parc_blocks) == n and all(
        b.ffn.fc1.out_channels == 2 * d for b in new.parc_blocks
    )
    assert not any(b.mid_mix for b in new.parc_blocks)
    # Kernels are the feature size at 256 px whatever the input (here 64 px: 8/4/2).
    parcs = [m for m in new.modules() if isinstance(m, ParC)]
    assert {p.kernel_size for p in parcs} == {k} and x.shape[-1] == 256 // 2 ** (stage + 1) // 4
    pes = [name for name, _ in new.named_parameters() if name.endswith(".pe")]
    assert len(pes) == 4 and all(name.startswith("parc_blocks.0.") for name in pes)
    assert param_count(new) == _published_params(c, n, k)
    with torch.no_grad():
        assert new(x).shape == orig(x).shape
    check_runs_anywhere(new, c, (5, 7))


def test_parcnet_s_kernel_size_option_and_refusals(mobilevit_s):
    model, inputs = mobilevit_s
    path, x = "stages.4.1", inputs["stages.4.1"]
    orig = model.get_submodule(path)
    new = build_replacement("parcnet_s_block", orig, context(path, x, stage=4, kernel_size=[6, 5]))
    assert {(p.direction, p.kernel_size) for p in new.modules() if isinstance(p, ParC)} == {
        ("H", 6),
        ("W", 5),
    }
    with pytest.raises(ReplacementError, match="from_local"):
        build_replacement("parcnet_s_block", orig, context(path, x, stage=4, init="from_local"))
    with pytest.raises(ReplacementError, match="no native kernel length") as err:
        build_replacement("parcnet_s_block", orig, context(path, x, stage=0))
    assert path in str(err.value)


def test_mobilevit_s_with_parcnet_s_rules_has_the_published_count_at_any_input_size():
    from parc_surgery.apply import apply_plan
    from parc_surgery.pipeline import plan_conversion

    planned = plan_conversion("mobilevit_s", rules="parcnet-s", input_size=(64, 64))
    model = apply_plan(planned.model, planned.plan)
    assert param_count(model) == 5_037_088
    # Outside the three MobileViT blocks, timm's mobilevit_s shapes, untouched.
    blocks = ("stages.2.1.", "stages.3.1.", "stages.4.1.")
    reference = timm.create_model("mobilevit_s").state_dict()
    outside = {k: v.shape for k, v in model.state_dict().items() if not k.startswith(blocks)}
    assert outside == {k: v.shape for k, v in reference.items() if not k.startswith(blocks)}
    assert len(outside) > 100
