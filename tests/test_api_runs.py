"""Runs: the blocks of a flat Sequential (torchvision's MobileNet `features`) grouped as
timm groups them, so positional rules place the same blocks."""

from __future__ import annotations

from api_testkit import MyBlock
from torch import nn

from parc_surgery.graph import analyze, container_blocks


class FlatNet(nn.Module):
    """A stem, then every block in one Sequential, as torchvision's MobileNetV2 does."""

    def __init__(self, widths):
        super().__init__()
        stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU())
        blocks, chs = [stem], 8
        for width in widths:
            blocks.append(MyBlock(chs, width, 2 if width != chs and width % 16 == 0 else 1))
            chs = width
        self.features = nn.Sequential(*blocks)

    def forward(self, x):
        return self.features(x)


def _containers(model):
    graph = analyze(model.eval(), input_size=(64, 64))
    return graph, [c for s in graph.stages.values() for c in s.containers]


def test_a_flat_stack_of_blocks_is_split_into_runs_of_one_width():
    model = FlatNet([16, 16, 32, 32, 32, 40, 40, 48, 48])
    graph, containers = _containers(model)
    assert containers == [
        ("features[1:3]", 2),
        ("features[3:6]", 3),
        ("features[6:8]", 2),
        ("features[8:10]", 2),
    ]
    info = graph.modules["features.7.dw"]  # inside the second block of the 40-wide run
    assert (info.container, info.index, info.container_len) == ("features[6:8]", 1, 2)
    assert container_blocks(model, "features[6:8]") == [model.features[6], model.features[7]]


def test_blocks_that_each_have_their_own_width_are_not_split():
    # Runs of one block would place nothing positional rules could not place on the whole.
    _, containers = _containers(FlatNet([16, 32, 40, 48, 56, 64]))
    assert not any("[" in c for c, _ in containers)
