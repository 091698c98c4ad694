"""Placements that were wrong before: block internals taken for stages, foreign blocks
reaching timm's builder, converting a converted model."""

from __future__ import annotations

import pytest
import timm
import torch
import torchvision
from torch import nn

import parc_surgery as ps
from parc_surgery.errors import NothingMatchedError
from parc_surgery.pipeline import plan_conversion


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _swaps(planned) -> list[str]:
    return [s.path for s in planned.plan.swaps]


def test_torchvision_mobilenet_v3_inner_block_is_not_a_stage():
    # Each InvertedResidual's own `block` Sequential used to be taken for the stage, so
    # nothing was positioned in the last half of a stage and 0 convs were planned.
    planned = plan_conversion(torchvision.models.mobilenet_v3_small(), rules="generic")
    paths = _swaps(planned)
    assert paths, "generic rules plan nothing on torchvision's mobilenet_v3_small"
    assert all(p.startswith("features.") and ".block.1.0" in p for p in paths), paths
    assert "features.11.block.1.0" in paths  # last block of stage 4


@pytest.mark.parametrize("factory", ["mobilenet_v3_small", "mobilenet_v3_large"])
def test_torchvision_mobilenet_v3_takes_mobilenetv2_rules(factory):
    # timm's builder used to get torchvision's InvertedResidual: AttributeError conv_dw.
    model = getattr(torchvision.models, factory)()
    planned = plan_conversion(model, rules="mobilenetv2")
    assert planned.plan.swaps
    for swap in planned.plan.swaps:
        assert swap.index >= 2 and swap.stage in (3, 4)
    ps.parcify_(model, rules="mobilenetv2")
    n_parc = sum(isinstance(m, ps.ops.ParC) for m in model.modules())
    assert n_parc == 2 * len(planned.plan.swaps)
    model(torch.randn(1, 3, 96, 96)).sum().backward()


def test_xception_last_half_is_per_stage_not_per_stack():
    # "Last half" used to be taken inside each Block's `stack` (all 8 middle-flow blocks).
    planned = plan_conversion("xception41", rules="generic", input_size=(160, 160))
    blocks = sorted({int(p.split(".")[1]) for p in _swaps(planned)})
    # Middle flow: blocks.3 .. blocks.10 (stride 16); last half -> 7 .. 10.
    assert blocks == [7, 8, 9, 10], blocks


def test_converting_a_converted_resnet_says_already_converted():
    model = timm.create_model("resnet18", pretrained=False)
    ps.parcify_(model, rules="resnet")
    with pytest.raises(NothingMatchedError, match="already converted") as err:
        ps.parcify_(model, rules="resnet")
    assert err.value.exit_code == 3


def test_inspect_agrees_with_convert_on_a_class_name_match():
    # torchvision's SwinTransformerBlock matched swin.yaml by class name: inspect listed
    # "would replace" while convert exits 2. inspect builds what convert builds, and
    # torchvision's Swin V1 blocks now convert (parc_swin), so both list the same blocks.
    from parc_surgery.cli.inspect import model_overview

    overview = model_overview("torchvision:swin_t", {}, (224, 224))
    swin = overview["shipped_rules"]["swin"]
    planned = plan_conversion("torchvision:swin_t", rules="swin")
    assert not swin.get("error")
    assert swin["matches"] == _swaps(planned)
    assert len(_swaps(planned)) == 12


class _Block(nn.Module):
    def __init__(self, c, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 1, stride=stride)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, groups=c)
        self.bn = nn.BatchNorm2d(c)
        self.stride = stride

    def forward(self, x):
        y = self.bn(self.conv2(self.conv1(x)))
        return x + y if self.stride == 1 else y


class _Net(nn.Module):
    """Stage 1 holds only blocks; stages 2-4 each start with plain layers, then 4 blocks.

    `opener` "conv": a plain strided 1x1 conv; "conv_bn_stride1": a 1x1 conv and a norm
    at the stage before (the first block downsamples).
    """

    def __init__(self, opener: str = "conv"):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, stride=4, padding=1)
        widths = [16, 32, 64, 128]
        stages = [nn.Sequential(*[_Block(16) for _ in range(4)])]
        for a, b in zip(widths, widths[1:], strict=False):
            if opener == "conv":
                first = [nn.Conv2d(a, b, 1, stride=2), _Block(b)]
            else:
                first = [nn.Conv2d(a, b, 1), nn.BatchNorm2d(b), _Block(b, stride=2)]
            stages.append(nn.Sequential(*first, *[_Block(b) for _ in range(3)]))
        self.stages = nn.Sequential(*stages)

    def forward(self, x):
        return self.stages(self.stem(x))


class _OpenedNet(nn.Module):
    """Each stage Sequential opens with a downsampling layer of kind `first`, then 5 blocks."""

    def __init__(self, first: str):
        super().__init__()
        from timm.layers import ConvNormAct

        def down(a: int, b: int) -> nn.Module:
            if first == "conv_norm_act":
                return ConvNormAct(a, b, 1, stride=2)
            if first == "conv_norm":
                return nn.Sequential(nn.Conv2d(a, b, 1, stride=2), nn.BatchNorm2d(b))
            return nn.Conv2d(a, b, 1, stride=2)

        self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        widths = [8, 16, 24, 32, 48]
        self.stages = nn.Sequential(
            *[
                nn.Sequential(down(a, b), *[_Block(b) for _ in range(5)])
                for a, b in zip(widths, widths[1:], strict=False)
            ]
        )

    def forward(self, x):
        return self.stages(self.stem(x))


@pytest.mark.parametrize("first", ["conv", "conv_norm", "conv_norm_act"])
def test_positional_rule_does_not_count_a_stage_opening_conv(first):
    # A ConvNormAct or Sequential(conv, norm) opening a stage was taken for block 0, so
    # "last half" of the 5 blocks became the last 3 of 6 children (blocks 3, 4, 5).
    planned = plan_conversion(_OpenedNet(first), rules="generic", input_size=(128, 128))
    assert sorted(planned.graph.stages) == [1, 2, 3, 4]
    placed = {(s.path, s.index, s.container_len) for s in planned.plan.swaps}
    assert placed == {
        (f"stages.{stage}.{block}.conv2", block - 1, 5) for stage in (2, 3) for block in (4, 5)
    }, placed


@pytest.mark.parametrize("opener", ["conv", "conv_bn_stride1"])
def test_stage_found_whatever_its_first_child(opener):
    # A Sequential with a plain layer (a leaf with weights) among its children was no
    # block container, so with stage 1 found as one, stages 2-4 were not found at all:
    # "has no stage 2, 3, 4"; only stage 1 was planned.
    planned = plan_conversion(_Net(opener), rules="generic", input_size=(128, 128))
    assert sorted(planned.graph.stages) == [1, 2, 3, 4]
    first = 1 if opener == "conv" else 2  # the child index of the stage's first block
    placed = {(s.path, s.stage, s.index, s.container_len) for s in planned.plan.swaps}
    assert placed == {
        (f"stages.{k}.{first + i}.conv2", k + 1, i, 4) for k in (2, 3) for i in (2, 3)
    }, placed

    model = _Net(opener)
    ps.parcify_(model, stages=[2, 3, 4], input_size=(128, 128))
    parcs = [n for n, m in model.named_modules() if isinstance(m, ps.ops.ParC)]
    assert {n.split(".")[1] for n in parcs} == {"1", "2", "3"} and len(parcs) == 12, parcs
    model(torch.randn(1, 3, 128, 128)).sum().backward()


def test_rexnet_last_half_is_per_stage():
    # Every RexNet block has its own width, so no runs of one width formed and "last
    # half" was taken over all 16 blocks of `features` (2 of 6 in stage 3, 4 of 5 in 4).
    planned = plan_conversion("rexnet_100", rules="generic", input_size=(128, 128))
    placed = {(s.stage, s.index, s.container_len) for s in planned.plan.swaps}
    assert placed == {(3, 3, 6), (3, 4, 6), (3, 5, 6), (4, 3, 5), (4, 4, 5)}, placed


def test_hrnet_parallel_branches_are_stages():
    # The BasicBlocks of each HRNet branch sit inside a multi-resolution module that was
    # taken for a stage-1 block, so its stride-16 / stride-32 branches planned nothing.
    planned = plan_conversion("hrnet_w18_small", input_size=(128, 128))
    placed = {(s.path, s.stage) for s in planned.plan.swaps}
    assert placed == {
        ("stage3.0.branches.2.1", 3),
        ("stage4.0.branches.2.1", 3),
        ("stage4.0.branches.3.1", 4),
    }, placed


@pytest.mark.parametrize(
    ("name", "refused"),
    [
        ("twins_pcpvt_small", "vit"),
        ("pvt_v2_b0", "vit"),
        ("starnet_s1", "vit"),
        ("rdnet_tiny", "vit"),
        ("torchvision:regnet_y_400mf", None),
    ],
)
def test_inspect_lists_what_convert_plans_for_every_shipped_config(name, refused):
    # inspect listed "would replace" on a class-name match (`vit` on these timm models,
    # `regnet` on torchvision's RegNet) where convert then exited 2. Now every config
    # inspect lists matches for plans exactly those swaps, and a refused one shows why.
    from parc_surgery.cli.inspect import model_overview
    from parc_surgery.errors import ParcSurgeryError

    size = (224, 224) if name.startswith("twins") else (160, 160)
    shipped = model_overview(name, {}, size)["shipped_rules"]
    listed = {config: info["matches"] for config, info in shipped.items() if info["matches"]}
    assert listed, name
    for config, matches in listed.items():
        assert not shipped[config].get("error"), (name, config)
        assert _swaps(plan_conversion(name, rules=config, input_size=size)) == matches, config
    if refused is not None:
        assert shipped[refused]["matches"] == [] and shipped[refused]["error"], shipped[refused]
        with pytest.raises(ParcSurgeryError) as err:
            plan_conversion(name, rules=refused, input_size=size)
        assert err.value.exit_code == 2
