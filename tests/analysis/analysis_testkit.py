"""Small models for the analysis tests: a conv net, its ParC twin, cached conversions."""

from __future__ import annotations

import functools

import torch
from torch import nn

from parc_surgery.ops import ParCPair

__all__ = ["TINY_SIZE", "converted_pair", "tiny_net", "tiny_pair"]

TINY_SIZE = (32, 32)


def tiny_net(parc: bool, *, seed: int = 0) -> nn.Module:
    """Stem (stride 2) + three depthwise 3x3 blocks; with `parc`, the last two use ParC."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16)]
    for index in range(3):
        spatial = (
            ParCPair(16, TINY_SIZE[0] // 2)
            if parc and index >= 1
            else nn.Conv2d(16, 16, 3, padding=1, groups=16)
        )
        layers += [spatial, nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 16, 1)]
    return nn.Sequential(*layers).eval()


def tiny_pair() -> tuple[nn.Module, nn.Module]:
    """(original, converted) tiny nets with the same unswapped weights."""
    original = tiny_net(False)
    converted = tiny_net(True)
    own = converted.state_dict()
    shared = {
        k: v for k, v in original.state_dict().items() if k in own and own[k].shape == v.shape
    }
    converted.load_state_dict({**own, **shared})
    return original, converted


@functools.cache
def converted_pair(model: str, size: int = 64):
    """convert_pair(model) at size x size with the shipped rules, once per test session."""
    from parc_surgery.analysis.pair import convert_pair

    return convert_pair(model, input_size=(size, size))
