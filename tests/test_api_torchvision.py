"""torchvision's ResNet50, MobileNetV2 and ConvNeXt-T convert with the shipped rules to
the published placements, exactly as timm's do, and load back with or without model=."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision
from typer.testing import CliRunner

import parc_surgery as ps
from parc_surgery.blocks import ReplacementContext, ReplacementError, get_replacement
from parc_surgery.blocks.bottleneck import build_parc_bottleneck
from parc_surgery.blocks.inverted_residual import build_parc_inverted_residual
from parc_surgery.blocks.torchvision import (
    build_tv_bottleneck,
    build_tv_cnblock,
    build_tv_inverted_residual,
)
from parc_surgery.cli import convert_app
from parc_surgery.ops import ParC
from parc_surgery.rules import default_rules_for

SIZE = (64, 64)
# torchvision name: (timm name, shipped rules, the blocks the published placement converts)
PAIRS = {
    "resnet50": ("resnet50", "resnet", ["layer3.3", "layer3.4", "layer3.5", "layer4.2"]),
    "mobilenet_v2": (
        "mobilenetv2_100",
        "mobilenetv2",
        ["features.9", "features.10", "features.13", "features.16"],
    ),
    "convnext_tiny": (
        "convnext_tiny",
        "convnext",
        ["features.5.6", "features.5.7", "features.5.8", "features.7.2"],
    ),
}


@pytest.fixture(scope="module", params=sorted(PAIRS))
def converted(request, tmp_path_factory):
    """A torchvision model object converted by parcify_ and saved; the timm model's plan."""
    name = request.param
    torch.manual_seed(0)
    model = torchvision.models.get_model(name)
    plan = ps.parcify_(model, input_size=SIZE)
    path = tmp_path_factory.mktemp(name) / f"{name}.safetensors"
    ps.save(model, plan, path)
    timm_plan = ps.plan_conversion(PAIRS[name][0], input_size=SIZE).plan
    return name, model, plan, path, timm_plan


def _parc_layout(module: torch.nn.Module) -> list[tuple]:
    """Every ParC inside, as (direction, weight shape, has bias, has pe)."""
    return [
        (p.direction, tuple(p.weight.shape), p.bias is not None, p.pe is not None)
        for p in module.modules()
        if isinstance(p, ParC)
    ]


def test_torchvision_models_get_the_published_placements(converted):
    name, _, plan, _, timm_plan = converted
    _, rules, paths = PAIRS[name]
    assert plan.rules_source == f"shipped:{rules}"
    assert [s.path for s in plan.swaps] == paths
    assert plan.source.kind == "torchvision"
    # The same positions as timm's conversion: stage, index in the container, its length.
    where = [(s.stage, s.index, s.container_len, s.options.pe) for s in plan.swaps]
    assert where == [(s.stage, s.index, s.container_len, s.options.pe) for s in timm_plan.swaps]


def test_torchvision_conversions_cost_what_timms_do(converted):
    _, model, plan, _, timm_plan = converted
    assert plan.params_total_before == timm_plan.params_total_before
    assert plan.params_total_after == timm_plan.params_total_after
    assert plan.macs_total_after == timm_plan.macs_total_after
    assert [(s.params_after, s.macs_after) for s in plan.swaps] == [
        (s.params_after, s.macs_after) for s in timm_plan.swaps
    ]
    timm_model = ps.convert(timm_plan.model, input_size=SIZE).model
    layouts = [_parc_layout(model.get_submodule(s.path)) for s in plan.swaps]
    assert layouts == [_parc_layout(timm_model.get_submodule(s.path)) for s in timm_plan.swaps]


def test_torchvision_checkpoint_reloads_onto_a_base_model(converted):
    name, model, _, path, _ = converted
    loaded = ps.load(path, model=torchvision.models.get_model(name))
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x), model.eval()(x), rtol=0, atol=0)


def test_a_torchvision_object_without_its_name_needs_model(converted):
    _, _, _, path, _ = converted
    with pytest.raises(ps.errors.UsageError, match="model="):
        ps.load(path)


def test_a_torchvision_model_converted_by_name_reloads_by_itself(tmp_path):
    out = tmp_path / "mnv2.safetensors"
    result = ps.convert("torchvision:mobilenet_v2", input_size=SIZE, output=str(out))
    assert result.plan.source.to_dict() == {
        "kind": "torchvision",
        "name": "mobilenet_v2",
        "class": "torchvision.models.mobilenetv2.MobileNetV2",
    }
    loaded = ps.load(out)  # torchvision.models.get_model("mobilenet_v2", weights=None)
    assert isinstance(loaded, torchvision.models.MobileNetV2)
    x = torch.randn(1, 3, *SIZE)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x), result.model.eval()(x), rtol=0, atol=0)


def test_parc_resnet50_from_torchvision_has_the_published_parameter_count():
    plan = ps.plan_conversion("torchvision:resnet50", input_size=(224, 224)).plan
    assert plan.params_total_before == 25_557_032
    assert plan.params_total_after == 23_737_640  # as timm's resnet50 and the official one


def test_the_registry_dispatches_by_class_and_module():
    tv = torchvision.models.mobilenet_v2()
    inverted = get_replacement("parc_inverted_residual")
    assert inverted.builder_for(tv.features[9]) is build_tv_inverted_residual
    timm_block = ps.create_model("mobilenetv2_050").blocks[3][1]
    assert inverted.builder_for(timm_block) is build_parc_inverted_residual
    cnblock = torchvision.models.convnext_tiny().features[1][0]
    assert get_replacement("parc_convnext").builder_for(cnblock) is build_tv_cnblock
    bottleneck = torchvision.models.resnet50().layer3[1]
    assert get_replacement("parc_bottleneck").builder_for(bottleneck) is build_tv_bottleneck
    timm_bottleneck = ps.create_model("resnet26").layer3[1]
    assert get_replacement("parc_bottleneck").builder_for(timm_bottleneck) is build_parc_bottleneck


def test_default_rules_come_from_the_torchvision_classes():
    assert default_rules_for(None, torchvision.models.resnet50()) == "resnet"
    assert default_rules_for(None, torchvision.models.mobilenet_v2()) == "mobilenetv2"
    assert default_rules_for(None, torchvision.models.convnext_tiny()) == "convnext"
    assert default_rules_for("torchvision:mobilenet_v2") == "mobilenetv2"
    # torchvision's MobileNetV3 InvertedResidual is another class: no MobileNetV2 rules.
    assert default_rules_for(None, torchvision.models.mobilenet_v3_small()) == "generic"


def test_a_stride_2_inverted_residual_is_refused_by_the_torchvision_builder():
    tv = torchvision.models.mobilenet_v2()
    ctx = ReplacementContext("features.7", (4, 4), stage=3, index=0, first_in_container=True)
    with pytest.raises(ReplacementError, match="stride 2"):
        build_tv_inverted_residual(tv.features[7], ctx)


def test_the_cli_converts_torchvision_names():
    result = CliRunner().invoke(
        convert_app,
        ["torchvision:mobilenet_v2", "--input-size", "64", "--dry-run", "--format", "json"],
    )
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert [s["path"] for s in plan["swaps"]] == PAIRS["mobilenet_v2"][2]
    assert plan["model"] == "torchvision:mobilenet_v2"
    unknown = CliRunner().invoke(convert_app, ["torchvision:resnet5O", "--dry-run"])
    assert unknown.exit_code == 2 and "resnet50" in unknown.output


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_torchvision_models_have_timms_stages(name):
    from parc_surgery.graph import analyze

    def stages(model):
        graph = analyze(model.eval(), input_size=SIZE)
        return [
            (s.stage, s.stride, s.feature_size, s.channels, [n for _, n in s.containers])
            for s in graph.stages.values()
        ]

    tv = stages(torchvision.models.get_model(name))
    assert tv == stages(ps.create_model(PAIRS[name][0]))
    assert [s[1] for s in tv] == [4, 8, 16, 32]
