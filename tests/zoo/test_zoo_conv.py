"""The ConvNet zoo: every dense / grouped 3x3 family gets its ParC pairs where the shipped
config (chosen by family) places them, and a small instance of each converts soundly."""

from __future__ import annotations

import pytest
import torch
from timm.models.convmixer import ConvMixer
from zoo_testkit import check_gradients, check_readme_row, one_training_step, parc_params

import parc_surgery as ps
from parc_surgery.pipeline import plan_conversion
from parc_surgery.rules.loading import default_rules_for


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


# model -> (shipped config chosen for it, {(swap path, stage, index in its stage run)})
EXPECTED = {
    "resnetv2_50": (
        "convnets",
        {("stages.2.blocks.3", 3, 3), ("stages.2.blocks.4", 3, 4), ("stages.2.blocks.5", 3, 5),
         ("stages.3.blocks.2", 4, 2)},
    ),
    "res2net50_26w_4s": (
        "convnets",
        {("layer3.3", 3, 3), ("layer3.4", 3, 4), ("layer3.5", 3, 5), ("layer4.2", 4, 2)},
    ),
    "cspresnet50": (
        "convnets",
        {("stages.2.blocks.3", 3, 3), ("stages.2.blocks.4", 3, 4), ("stages.3.blocks.1", 4, 1)},
    ),
    "repvgg_a0": ("convnets", {(f"stages.2.{i}", 3, i) for i in range(7, 14)}),
    "vgg11": ("vgg", {("features.18", 3, 1)}),
    "dla34": (
        "convnets",
        {("level4.tree2.tree1", 3, 2), ("level4.tree2.tree2", 3, 3), ("level5.tree2", 4, 1)},
    ),
    "hrnet_w18_small": (
        "convnets",
        {("stage3.0.branches.2.1", 3, 1), ("stage4.0.branches.2.1", 3, 1),
         ("stage4.0.branches.3.1", 4, 1)},
    ),
    "nfnet_l0": (
        "convnets",
        {("stages.2.3", 3, 3), ("stages.2.4", 3, 4), ("stages.2.5", 3, 5), ("stages.3.2", 4, 2)},
    ),
    "dpn68": (
        "convnets",
        {*((f"features.conv4_{i}", 3, i - 1) for i in range(7, 13)), ("features.conv5_3", 4, 2)},
    ),
    "torchvision:regnet_y_400mf": (
        "regnet",
        {(f"trunk_output.block{b}.block{b}-{i}", b, i) for b in (3, 4) for i in (3, 4, 5)},
    ),
    "convmixer_768_32": ("convmixer", {(f"blocks.{i}.0.fn.0", 2, i) for i in range(16, 32)}),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_dry_run_places_swaps_per_stage(name):
    config, expected = EXPECTED[name]
    planned = plan_conversion(name, input_size=(224, 224))
    assert planned.ruleset.label == f"{config}.yaml"
    assert default_rules_for(name, planned.model) == config
    placed = {(s.path, s.stage, s.index) for s in planned.plan.swaps}
    assert placed == expected
    check_readme_row(name, planned.plan)


# Small instances: fewer blocks or narrower where timm takes the args, at 64 px.
SMALL = {
    "resnetv2_50": {"layers": [1, 1, 2, 2], "channels": (64, 128, 256, 512)},
    "res2net50_26w_4s": {"layers": [1, 1, 2, 2]},
    "cspresnet50": {},
    "repvgg_a0": {},
    "vgg11": {"mlp_ratio": 0.0625},
    "dla34": {},
    "hrnet_w18_small": {},
    "nfnet_l0": {},
    "dpn68": {},
    "torchvision:regnet_y_400mf": {},
}


def _check_sound(model: torch.nn.Module, loaded: torch.nn.Module) -> None:
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), loaded.eval()(x))
    assert parc_params(model)
    one_training_step(model, (64, 64))
    for size in ((64, 64), (96, 96)):
        x = torch.randn(2, 3, *size)
        with torch.no_grad():
            assert torch.isfinite(model.eval()(x)).all(), size
        check_gradients(model, x)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_small_instance_converts_reloads_and_trains(tmp_path, name):
    out = tmp_path / "m.safetensors"
    result = ps.convert(name, model_args=SMALL[name], input_size=(64, 64), output=str(out))
    assert result.plan.swaps and result.verification.blocks_checked == len(result.plan.swaps)
    assert len(parc_params(result.model)) >= 2 * len(result.plan.swaps)
    _check_sound(result.model, ps.load(out))


def test_small_convmixer_converts_and_trains(tmp_path):
    # convmixer_768_32 at 4 blocks of 64 channels: the same blocks, built directly.
    def build():
        return ConvMixer(dim=64, depth=4, kernel_size=7, patch_size=7, num_classes=10)

    torch.manual_seed(0)
    model = build()
    out = tmp_path / "m.safetensors"
    result = ps.convert(model, rules="convmixer", input_size=(70, 70), output=str(out))
    assert [s.path for s in result.plan.swaps] == ["blocks.2.0.fn.0", "blocks.3.0.fn.0"]
    _check_sound(result.model, ps.load(out, model=build()))
