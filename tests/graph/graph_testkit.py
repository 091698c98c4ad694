"""Shared models for the graph tests: each timm model is built and analysed once."""

from __future__ import annotations

from functools import cache

import timm
from torch import nn

from parc_surgery.graph import ModelGraph, analyze

__all__ = ["analyzed", "build"]


@cache
def build(name: str, **kwargs) -> nn.Module:
    """A timm model without pretrained weights (no network)."""
    return timm.create_model(name, pretrained=False, **kwargs)


@cache
def analyzed(name: str, size: tuple[int, int] | None = None) -> tuple[nn.Module, ModelGraph]:
    model = build(name)
    return model, analyze(model, size)
