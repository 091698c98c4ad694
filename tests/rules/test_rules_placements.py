"""The shipped configs reproduce the published ParC placements (PARC.md section 4)."""

from __future__ import annotations

import pytest
import timm
from rules_testkit import analyzed

from parc_surgery.blocks import ReplacementContext, build_replacement
from parc_surgery.errors import UsageError
from parc_surgery.rules import default_rules_for, load_rules, match


def plan(name, config=None, stages=None, **kw):
    model, graph = analyzed(name, **kw)
    ruleset = load_rules(config or default_rules_for(name, model))
    return match(ruleset, graph, model, stages)


def selected(result):
    return [m.path for m in result.matches]


def test_parc_resnet50():
    result = plan("resnet50")
    assert selected(result) == ["layer3.3", "layer3.4", "layer3.5", "layer4.2"]
    assert {m.replacement for m in result.matches} == {"parc_bottleneck"}
    assert all(m.options.pe is True for m in result.matches)
    assert result.stages == [3, 4] and result.warnings == []


def test_parc_mobilenetv2():
    result = plan("mobilenetv2_100")
    assert selected(result) == ["blocks.3.2", "blocks.3.3", "blocks.4.2", "blocks.5.2"]
    pe = {m.path: m.options.pe for m in result.matches}
    assert pe == {"blocks.3.2": True, "blocks.3.3": False, "blocks.4.2": True, "blocks.5.2": True}
    assert {m.replacement for m in result.matches} == {"parc_inverted_residual"}


@pytest.mark.parametrize("dims", [None, (48, 96, 192, 384)])
def test_parc_convnext(dims):
    result = plan("convnext_tiny", dims=dims)
    expected = ["stages.2.blocks.6", "stages.2.blocks.7", "stages.2.blocks.8", "stages.3.blocks.2"]
    assert selected(result) == expected
    assert all(m.options.pe is True for m in result.matches)
    if dims:
        assert result.matches[0].info.out_shape[1] == 192


def test_parc_mobilevit_converts_every_mobilevit_block():
    # The default for mobilevit_* is the minimal swap (MobileViT widths), not ParC-Net-S.
    result = plan("mobilevit_s")
    assert selected(result) == ["stages.2.1", "stages.3.1", "stages.4.1"]
    assert {m.replacement for m in result.matches} == {"parc_mobilevit"}
    assert not any(m.options.mid_mix for m in result.matches)


def test_parcnet_s_converts_every_mobilevit_block_to_the_published_block():
    result = plan("mobilevit_s", "parcnet-s")
    assert selected(result) == ["stages.2.1", "stages.3.1", "stages.4.1"]
    assert {m.replacement for m in result.matches} == {"parcnet_s_block"}
    assert [m.info.stage for m in result.matches] == [2, 3, 4]  # kernels 256 / 2^(s+1)
    assert all(m.options.pe is True and m.options.mid_mix is False for m in result.matches)


def test_generic_rules_on_efficientnet_b0():
    result = plan("efficientnet_b0")
    assert selected(result) == [
        "blocks.3.2.conv_dw",
        "blocks.4.2.conv_dw",
        "blocks.5.2.conv_dw",
        "blocks.5.3.conv_dw",
    ]
    assert {(m.replacement, m.level) for m in result.matches} == {("parc_dwconv", "op")}
    assert [m.first_in_container for m in result.matches] == [True, True, True, False]


def test_parc_resnet_on_basic_block_resnets():
    # BasicBlock ResNets get the same placement: the last half of stages 3 and 4.
    assert selected(plan("resnet18")) == ["layer3.1", "layer4.1"]
    result = plan("resnet34")
    assert selected(result) == ["layer3.3", "layer3.4", "layer3.5", "layer4.2"]
    assert {(m.info.type_name, m.replacement) for m in result.matches} == {
        ("BasicBlock", "parc_bottleneck")
    }
    assert result.warnings == []


def _params_at(name: str, config: str, size: int) -> int:
    """The converted model's parameter count with the kernels of a size x size input.

    Placements do not depend on the input size, so the cached 64x64 analysis selects the
    blocks and only the kernel lengths (size / stride) are those of `size`.
    """
    model, _ = analyzed(name)
    total = sum(p.numel() for p in model.parameters())
    for m in plan(name, config).matches:
        kernel = (size // m.info.stride, size // m.info.stride)
        ctx = ReplacementContext(m.path, kernel, m.info.stage, m.info.index, True, m.options)
        old = model.get_submodule(m.path)
        new = build_replacement(m.replacement, old, ctx)
        total += sum(p.numel() for p in new.parameters()) - sum(p.numel() for p in old.parameters())
    return total


def test_resnet_config_gives_resnet50_the_published_parc_resnet50():
    assert selected(plan("resnet50", "resnet")) == selected(plan("resnet50", "resnet50"))
    # ParC-ResNet50 at 224x224 (the official model's count).
    assert _params_at("resnet50", "resnet", 224) == 23_737_640


def test_parc_regnet():
    result = plan("regnety_008")
    assert selected(result) == ["s3.b5", "s3.b6", "s3.b7", "s3.b8", "s4.b2"]
    assert {m.replacement for m in result.matches} == {"parc_regnet"}


def test_parc_vit_converts_every_block_and_refuses_stages():
    result = plan("vit_small_patch16_224", size=None)
    assert selected(result) == [f"blocks.{i}" for i in range(12)]
    assert [m.options.pe for m in result.matches] == [True] + [False] * 11
    assert {(m.info.feature_size, m.info.prefix_tokens) for m in result.matches} == {((14, 14), 1)}
    with pytest.raises(UsageError, match="plain ViT.*no stages") as err:
        plan("vit_small_patch16_224", stages=[3], size=None)
    assert "index" in str(err.value)


def test_parc_swin_converts_every_block():
    result = plan("swin_tiny_patch4_window7_224", size=None)
    assert len(result.matches) == 12 and result.stages == [1, 2, 3, 4]
    firsts = [m.path for m in result.matches if m.options.pe]
    assert firsts == [f"layers.{i}.blocks.0" for i in range(4)]
    assert result.matches[0].info.feature_size == (56, 56)


def test_parc_efficientformer_converts_its_attention_blocks():
    result = plan("efficientformer_l1", size=None)
    assert selected(result) == ["stages.3.blocks.4"]
    assert result.matches[0].info.feature_size == (7, 7)


def test_parc_mobilevitv2_converts_every_mobilevitv2_block():
    result = plan("mobilevitv2_050")
    assert selected(result) == ["stages.2.1", "stages.3.1", "stages.4.1"]
    assert {m.replacement for m in result.matches} == {"parc_mobilevitv2"}


@pytest.mark.parametrize(
    ("name", "config"),
    [
        ("resnet50", "resnet"),
        ("resnet18", "resnet"),
        ("timm/resnet50.a1_in1k", "resnet"),
        ("resnext50_32x4d", "resnet"),
        ("mobilenetv2_140", "mobilenetv2"),
        ("convnext_small", "convnext"),
        ("mobilevit_xs", "mobilevit"),
        ("mobilevitv2_050", "mobilevitv2"),
        ("efficientnet_b0", "generic"),
        ("regnetx_002", "regnet"),
        ("vit_small_patch16_224", "vit"),
        ("deit_small_patch16_224", "vit"),
        ("swin_tiny_patch4_window7_224", "swin"),
        ("efficientformer_l1", "efficientformer"),
        ("efficientformerv2_s0", "generic"),
    ],
)
def test_default_rules_for(name, config):
    assert default_rules_for(name) == config


def test_default_rules_for_recognises_families_by_class():
    model, _ = analyzed("resnet50")
    assert default_rules_for("my_finetuned_net", model) == "resnet"
    model, _ = analyzed("regnety_008")
    assert default_rules_for("my_regnet", model) == "regnet"
    # A name that looks like a family but lacks its classes is not that family.
    model = timm.create_model("resnetv2_50x1_bit", pretrained=False)
    assert default_rules_for("resnetv2_50x1_bit", model) == "convnets"  # not resnet
