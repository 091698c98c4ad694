"""Every model named in issue 22 gets a dry run that plans ParC where its family's shipped
config places it, and a small instance of each family converts soundly.

The ConvNet and attention families' dry runs and small instances live in
test_zoo_conv.py and test_zoo_attention.py; this file runs the rest and checks that the
three together cover the whole list.
"""

from __future__ import annotations

import re

import pytest
import test_zoo_attention  # noqa: E402  (pytest puts tests/zoo on the path)
import test_zoo_conv
import timm
import torch
import torchvision
from timm.models.densenet import DenseNet
from timm.models.inception_v3 import InceptionE
from timm.models.metaformer import (
    Attention,
    GroupNorm1,
    LayerNorm2dNoBias,
    LayerNormNoBias,
    MetaFormer,
    Pooling,
    SepConv,
)
from timm.models.pit import PoolingVisionTransformer
from torch import nn
from torchvision.models.swin_transformer import SwinTransformer
from torchvision.models.vision_transformer import VisionTransformer
from zoo_testkit import (
    check_gradients,
    check_readme_row,
    one_training_step,
    parc_params,
    readme_table,
)

import parc_surgery as ps
from parc_surgery.blocks.unsupported import unsupported_reasons
from parc_surgery.pipeline import plan_conversion


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


ISSUE_MODELS = {
    *("resnetv2_50", "res2net50_26w_4s", "cspresnet50", "densenet121", "repvgg_a0"),
    *("vgg11", "dla34", "hrnet_w18_small", "inception_v3", "nfnet_l0", "dpn68"),
    *("poolformer_s12", "convmixer_768_32", "levit_128s", "cait_xxs24_224", "pit_ti_224"),
    *("twins_pcpvt_small", "coatnet_0_rw_224", "maxvit_tiny_tf_224", "xception41"),
    "rexnet_100",
    *("torchvision:regnet_y_400mf", "torchvision:swin_t", "torchvision:vit_b_16"),
    *("torchvision:mobilenet_v3_small", "torchvision:mobilenet_v3_large"),
}


def _run(prefix: str, indices) -> list[str]:
    return [f"{prefix}{i}" for i in indices]


# model -> (shipped config chosen for it, planned swaps at its default input size)
EXPECTED = {
    # depths 2-2-6-2: last half of stages 3 and 4.
    "poolformer_s12": (
        "poolformer",
        _run("stages.2.blocks.", (3, 4, 5)) + ["stages.3.blocks.1"],
    ),
    # 24 and 16 DenseLayers in stages 3 and 4: conv2 of the last half of each.
    "densenet121": (
        "densenet",
        [f"features.denseblock3.denselayer{i}.conv2" for i in range(13, 25)]
        + [f"features.denseblock4.denselayer{i}.conv2" for i in range(9, 17)],
    ),
    "inception_v3": (
        "inception",
        ["Mixed_7b.branch3x3dbl_2.conv", "Mixed_7c.branch3x3dbl_2.conv"],
    ),
    # depths 2-6-4 on 27/14/7 grids: last half of stages 3 and 4.
    "pit_ti_224": (
        "pit",
        _run("transformers.1.blocks.", (3, 4, 5)) + _run("transformers.2.blocks.", (2, 3)),
    ),
    # Middle flow (8 blocks at stride 16): the last half's three depthwise convs each.
    "xception41": (
        "generic",
        [f"blocks.{b}.stack.conv{c}.conv_dw" for b in range(7, 11) for c in (1, 2, 3)],
    ),
    "rexnet_100": (
        "generic",
        [f"features.{i}.conv_dw.conv" for i in (8, 9, 10, 14, 15)],
    ),
    "torchvision:swin_t": (
        "swin",
        _run("features.1.", (0, 1))
        + _run("features.3.", (0, 1))
        + _run("features.5.", range(6))
        + _run("features.7.", (0, 1)),
    ),
    "torchvision:vit_b_16": ("vit", _run("encoder.layers.encoder_layer_", range(12))),
    "torchvision:mobilenet_v3_small": (
        "generic",
        [f"features.{i}.block.1.0" for i in (6, 8, 11)],
    ),
    "torchvision:mobilenet_v3_large": (
        "generic",
        [f"features.{i}.block.1.0" for i in (9, 10, 12, 15)],
    ),
}
UNSUPPORTED = {"levit_128s"}


def test_every_model_of_the_issue_has_a_dry_run_here_or_in_its_family_file():
    covered = set(EXPECTED) | set(test_zoo_conv.EXPECTED) | set(test_zoo_attention.PLACEMENTS)
    assert covered | UNSUPPORTED == ISSUE_MODELS


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_dry_run_plans_swaps_at_the_expected_places(name):
    config, expected = EXPECTED[name]
    planned = plan_conversion(name)
    assert planned.plan.rules_source == f"shipped:{config}"
    assert [s.path for s in planned.plan.swaps] == expected
    assert all(s.stage >= 1 for s in planned.plan.swaps)
    check_readme_row(name, planned.plan)


def test_levit_plans_nothing_and_inspect_says_why():
    model = timm.create_model("levit_128s")
    assert not plan_conversion(model).plan.swaps
    (reason,) = unsupported_reasons(model)
    assert "LeViT" in reason and "\n" not in reason


# Small instances of each family (built directly where the timm / torchvision name fixes
# the architecture), their rules, and the sizes they run at. PiT and torchvision's ViT
# have a learned position embedding of one size: the original refuses another size too.
class _TinyInception(nn.Module):
    """Two of Inception-v3's InceptionE blocks (Mixed_7b / Mixed_7c) after a /32 stem."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 32, stride=32)
        self.Mixed_7b = InceptionE(32)
        self.Mixed_7c = InceptionE(2048)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2048, 10))

    def forward(self, x):
        return self.head(self.Mixed_7c(self.Mixed_7b(self.stem(x))))


SMALL = {
    "poolformer": (
        lambda: MetaFormer(
            depths=(1, 1, 2, 2),
            dims=(16, 32, 64, 64),
            token_mixers=Pooling,
            norm_layers=GroupNorm1,
            mlp_act=nn.GELU,
            layer_scale_init_values=1e-5,
            res_scale_init_values=None,
            downsample_norm=None,
            use_mlp_head=False,
            num_classes=10,
        ),
        None,
        [(64, 64), (96, 96)],
        ["stages.2.blocks.1", "stages.3.blocks.1"],
    ),
    # CAFormer's attention stages hand their blocks (B, H*W, C) tokens, not a map.
    "caformer": (
        lambda: MetaFormer(
            depths=(1, 1, 2, 2),
            dims=(16, 32, 64, 64),
            token_mixers=(SepConv, SepConv, Attention, Attention),
            norm_layers=(LayerNorm2dNoBias,) * 2 + (LayerNormNoBias,) * 2,
            num_classes=10,
        ),
        "poolformer",
        [(64, 64), (96, 96)],
        ["stages.2.blocks.1", "stages.3.blocks.1"],
    ),
    "densenet": (
        lambda: DenseNet(growth_rate=8, block_config=(1, 2, 4, 4), num_classes=10),
        "densenet",
        [(64, 64), (96, 96)],
        [f"features.denseblock{b}.denselayer{i}.conv2" for b in (3, 4) for i in (3, 4)],
    ),
    "inception": (
        _TinyInception,
        "inception",
        [(64, 64), (96, 96)],
        ["Mixed_7b.branch3x3dbl_2.conv", "Mixed_7c.branch3x3dbl_2.conv"],
    ),
    "pit": (
        lambda: PoolingVisionTransformer(
            img_size=64,
            patch_size=16,
            stride=8,
            base_dims=[8, 8, 8],
            depth=[1, 2, 2],
            heads=[1, 2, 2],
            mlp_ratio=2,
            num_classes=10,
        ),
        None,
        [(64, 64)],
        ["transformers.1.blocks.1", "transformers.2.blocks.1"],
    ),
    "torchvision swin": (
        lambda: SwinTransformer(
            patch_size=[4, 4],
            embed_dim=16,
            depths=[1, 1, 2, 1],
            num_heads=[1, 1, 2, 2],
            window_size=[4, 4],
            num_classes=10,
        ),
        None,
        [(64, 64), (96, 96)],
        ["features.1.0", "features.3.0", "features.5.0", "features.5.1", "features.7.0"],
    ),
    "torchvision vit": (
        lambda: VisionTransformer(
            image_size=32,
            patch_size=8,
            num_layers=2,
            num_heads=2,
            hidden_dim=16,
            mlp_dim=32,
            num_classes=10,
        ),
        None,
        [(32, 32)],
        ["encoder.layers.encoder_layer_0", "encoder.layers.encoder_layer_1"],
    ),
    "torchvision mobilenet_v3": (
        lambda: torchvision.models.mobilenet_v3_small(width_mult=0.25, num_classes=10),
        None,
        [(64, 64), (96, 96)],
        # Not features.6 as at full width. Stage 3 (stride 16) is features.4-8; at full
        # width its 40- and 48-channel blocks are two runs (timm's blocks.2 and blocks.3),
        # so the last half of each is features.6 and features.8. At width 0.25 both widths
        # round to 16 channels, so features.4-8 are one run of five blocks, one per stage
        # by output stride, and its last half is features.7 and features.8.
        ["features.7.block.1.0", "features.8.block.1.0", "features.11.block.1.0"],
    ),
}


@pytest.mark.parametrize("family", sorted(SMALL))
def test_small_instance_converts_reloads_runs_and_trains(family, tmp_path):
    build, rules, sizes, expected = SMALL[family]

    def seeded():
        torch.manual_seed(0)
        return build()

    out = tmp_path / "m.safetensors"
    result = ps.convert(seeded(), rules=rules, input_size=sizes[0], output=str(out))
    assert [s.path for s in result.plan.swaps] == expected
    assert result.verification.blocks_checked == len(expected)
    model = result.model
    x = torch.randn(2, 3, *sizes[0])
    with torch.no_grad():
        assert torch.equal(model.eval()(x), ps.load(out, model=seeded()).eval()(x))
    assert len(parc_params(model)) >= 2 * len(expected)
    # One step first: torchvision's ViT zero-initialises its classifier (see the helper).
    one_training_step(model, sizes[0])
    for size in sizes:
        x = torch.randn(2, 3, *size)
        with torch.no_grad():
            y = model.eval()(x)
        assert y.shape == (2, 10) and torch.isfinite(y).all(), size
        check_gradients(model, x)
    if len(sizes) == 1:  # a fixed position embedding: the original runs at one size only
        bigger = torch.randn(1, 3, sizes[0][0] + 32, sizes[0][1] + 32)
        with pytest.raises((RuntimeError, AssertionError, ValueError)):
            seeded().eval()(bigger)


def test_the_readme_model_table_has_a_row_per_model_of_the_issue_with_its_swaps():
    rows = readme_table()
    assert sorted(ISSUE_MODELS - set(rows)) == []
    # model -> (shipped config, planned swaps), from the three placement tables
    planned = {n: (config, len(swaps)) for n, (config, swaps) in EXPECTED.items()}
    planned |= {n: (config, len(swaps)) for n, (config, swaps) in test_zoo_conv.EXPECTED.items()}
    planned |= {n: (c, len(swaps)) for n, (c, _, swaps) in test_zoo_attention.PLACEMENTS.items()}
    for name, (config, count) in planned.items():
        cells = rows[name]
        assert (cells[1], cells[3]) == (config, str(count)), name
        assert re.fullmatch(r"[\d.]+[kMG] -> [\d.]+[kMG]", cells[4]), name
        assert re.fullmatch(r"[\d.]+[kMG] -> [\d.]+[kMG] \([\d.]+x\)", cells[5]), name
    for name in UNSUPPORTED:
        assert rows[name][3] == "0" and "unsupported" in rows[name][2], name
