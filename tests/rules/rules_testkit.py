"""Shared models and rule texts for the rules tests: each model is built and analysed once."""

from __future__ import annotations

import textwrap
from functools import cache

import timm
from torch import nn

from parc_surgery.graph import ModelGraph, analyze
from parc_surgery.rules import RuleSet, parse_rules

__all__ = ["analyzed", "rules"]


@cache
def analyzed(
    name: str, size: tuple[int, int] | None = (64, 64), dims: tuple[int, ...] | None = None
) -> tuple[nn.Module, ModelGraph]:
    """(model, graph); placements do not depend on the input size, so 64x64 keeps it cheap."""
    kwargs = {"dims": dims} if dims else {}
    model = timm.create_model(name, pretrained=False, **kwargs)
    return model, analyze(model, size)


def rules(text: str, source: str = "test.yaml") -> RuleSet:
    """A RuleSet from an indented YAML snippet."""
    return parse_rules(textwrap.dedent(text).lstrip("\n"), source=source)
