"""The shipped configs reproduce the published ParC placements (PARC.md section 4)."""

from __future__ import annotations

import pytest
from rules_testkit import analyzed

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


def test_plain_vit_says_it_has_no_spatial_stages():
    with pytest.raises(UsageError, match="no spatial stages.*tokens"):
        plan("vit_small_patch16_224", size=None)


@pytest.mark.parametrize(
    ("name", "config"),
    [
        ("resnet50", "resnet50"),
        ("resnet18", "resnet50"),
        ("timm/resnet50.a1_in1k", "resnet50"),
        ("mobilenetv2_140", "mobilenetv2"),
        ("convnext_small", "convnext"),
        ("mobilevit_xs", "mobilevit"),
        ("efficientnet_b0", "generic"),
        ("regnetx_002", "generic"),
    ],
)
def test_default_rules_for(name, config):
    assert default_rules_for(name) == config


def test_default_rules_for_recognises_resnet_bottlenecks_by_class():
    model, _ = analyzed("resnet50")
    assert default_rules_for("my_finetuned_net", model) == "resnet50"
