"""Stages, strides and block containers of the timm families ParC-Net converts."""

from __future__ import annotations

import pytest
from graph_testkit import analyzed
from torch import nn

from parc_surgery.graph import analyze, stage_of_stride


class Transpose(nn.Module):
    def forward(self, x):
        return x.transpose(1, 2)


class Mlp(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.fc = nn.Linear(dim, dim)

    def forward(self, x):
        return x + self.fc(x)


def containers(graph, stage):
    return graph.stages[stage].containers


def test_resnet50_stages_at_224_match_the_paper_kernels():
    _, graph = analyzed("resnet50", (224, 224))
    assert sorted(graph.stages) == [1, 2, 3, 4]
    assert [graph.stages[s].stride for s in (1, 2, 3, 4)] == [4, 8, 16, 32]
    assert graph.stages[3].feature_size == (14, 14)  # the global kernel of stage 3
    assert graph.stages[4].feature_size == (7, 7)
    assert graph.stages[3].channels == 1024
    assert containers(graph, 3) == [("layer3", 6)]
    assert containers(graph, 4) == [("layer4", 3)]


def test_resnet50_module_infos():
    _, graph = analyzed("resnet50", (224, 224))
    block = graph.modules["layer3.4"]
    assert (block.type_name, block.container, block.index, block.container_len) == (
        "Bottleneck",
        "layer3",
        4,
        6,
    )
    assert (block.stage, block.stride, block.feature_size) == (3, 16, (14, 14))
    assert block.in_shape == block.out_shape == (1, 1024, 14, 14)
    assert not block.downsamples
    first = graph.modules["layer3.0"]
    assert first.downsamples and first.stage == 3
    # An op inside a nested Sequential belongs to the enclosing block of the stage.
    down = graph.modules["layer3.0.downsample.0"]
    assert (down.container, down.index, down.stage) == ("layer3", 0, 3)
    # A module belongs to the stage of its *output* stride.
    assert graph.modules["layer3.0.conv1"].stage == 2
    assert graph.modules["conv1"].stage == 0 and graph.modules["conv1"].container is None
    assert graph.modules["fc"].stride is None and graph.modules["fc"].feature_size is None
    assert graph.output_shape == (1, 1000) and "" not in graph.modules


def test_convnext_containers_are_the_blocks_sequentials():
    _, graph = analyzed("convnext_tiny", (64, 64))
    assert containers(graph, 3) == [("stages.2.blocks", 9)]
    assert containers(graph, 4) == [("stages.3.blocks", 3)]
    info = graph.modules["stages.2.blocks.7"]
    assert (info.container, info.index, info.container_len) == ("stages.2.blocks", 7, 9)
    conv = graph.modules["stages.2.blocks.7.conv_dw"]
    assert (conv.container, conv.index, conv.stage) == ("stages.2.blocks", 7, 3)
    # A globally pooled 1x1 output is not a stage of its own.
    assert graph.modules["head.global_pool"].stride is None


def test_mobilenetv2_stage_containers():
    _, graph = analyzed("mobilenetv2_100", (64, 64))
    assert containers(graph, 3) == [("blocks.3", 4), ("blocks.4", 3)]
    assert containers(graph, 4) == [("blocks.5", 3), ("blocks.6", 1)]
    assert graph.stages[3].channels == 96 and graph.stages[4].channels == 320
    info = graph.modules["blocks.3.2"]
    assert (info.container, info.index, info.container_len) == ("blocks.3", 2, 4)
    assert graph.modules["blocks.0.0"].stage == 0  # stride 2: the stem, not a stage
    assert 0 not in graph.stages


def test_efficientnet_op_belongs_to_its_block():
    _, graph = analyzed("efficientnet_b0", (64, 64))
    conv = graph.modules["blocks.1.0.conv_dw"]
    assert (conv.container, conv.index, conv.container_len) == ("blocks.1", 0, 2)
    assert conv.downsamples and conv.stage == 1
    # Squeeze-excite convs work on pooled 1x1 maps: not spatial, no stage.
    assert graph.modules["blocks.4.0.se.conv_reduce"].stage is None
    assert graph.modules["blocks.4.0.se"].stage == 3


def test_mobilevit_blocks_are_in_stages_2_to_4():
    _, graph = analyzed("mobilevit_s", (64, 64))
    assert sorted(graph.stages) == [1, 2, 3, 4]
    found = {p: i.stage for p, i in graph.modules.items() if i.type_name == "MobileVitBlock"}
    assert found == {"stages.2.1": 2, "stages.3.1": 3, "stages.4.1": 4}
    info = graph.modules["stages.3.1"]
    assert (info.container, info.index, info.container_len) == ("stages.3", 1, 2)
    # Inside the (FX leaf) MobileVitBlock, hooks still give shapes; tokens have no stage.
    inner = graph.modules["stages.3.1.transformer.0"]
    assert inner.out_shape is not None and inner.stage is None


@pytest.mark.parametrize("name", ["regnetx_002", "regnety_002"])
def test_regnet_stages_use_its_numbered_regstages(name):
    _, graph = analyzed(name, (64, 64))
    assert sorted(graph.stages) == [1, 2, 3, 4]
    assert containers(graph, 3) == [("s3", 4)]
    assert containers(graph, 4) == [("s4", 7)]
    info = graph.modules["s4.b3"]
    assert (info.stage, info.container, info.index, info.container_len) == (4, "s4", 2, 7)
    assert graph.modules["s3.b1"].downsamples


def test_a_token_model_without_a_grid_has_no_spatial_stages_and_says_why():
    # Tokens made by a Linear on unfolded patches: no feature map with their channels
    # anywhere, so nothing says where they sit (a ViT's patch conv would).
    model = nn.Sequential(
        nn.Unfold(16, stride=16),  # (B, 3 * 256, N)
        Transpose(),
        nn.Linear(3 * 256, 32),
        nn.Sequential(Mlp(32), Mlp(32)),
    )
    graph = analyze(model, (64, 64))
    assert not graph.has_spatial_stages and graph.stages == {}
    reason = graph.no_spatial_reason
    assert "no spatial stages" in reason and "tokens" in reason and "(1, 16, 32)" in reason


def test_strides_stay_exact_at_sizes_that_are_not_multiples_of_32():
    _, graph = analyzed("resnet50", (100, 100))
    assert graph.modules["layer3.2"].stride == 16
    assert graph.modules["layer4.2"].stride == 32 and graph.modules["layer4.2"].stage == 4
    assert graph.stages[4].feature_size == (4, 4)


def test_non_square_input():
    _, graph = analyzed("convnext_tiny", (64, 96))
    assert graph.stages[3].feature_size == (4, 6)
    assert graph.modules["stages.3.blocks.1"].feature_size == (2, 3)


@pytest.mark.parametrize(
    ("stride", "stage"), [(None, None), (1, 0), (2, 0), (4, 1), (8, 2), (16, 3), (32, 4), (64, 5)]
)
def test_stage_of_stride(stride, stage):
    assert stage_of_stride(stride) == stage


def test_vgg_stages_follow_its_pools_like_timms_feature_info():
    model, graph = analyzed("vgg11", (64, 64))
    reductions = {f["reduction"] for f in model.feature_info if f["reduction"] >= 4}
    assert {graph.stages[s].stride for s in graph.stages} == reductions == {4, 8, 16, 32}
    assert graph.stages[1].channels == 256 and graph.stages[1].feature_size == (16, 16)
    assert graph.stages[4].feature_size == (2, 2)
    assert all(stage.containers == [] for stage in graph.stages.values())  # no block stacks
